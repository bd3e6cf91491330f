"""What a benchmark ran on: CPU model and vector extensions, CPU counts, platform and package versions.

Every result file records this next to its numbers, because the machines these benchmarks run on
differ and are shared.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["cpu", "machine"]

_ISA = {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile"}


def cpu() -> dict[str, Any]:
    """The CPU's model name and the vector extensions the kernels can use (Linux; else what platform knows).

    Example:
        >>> sorted(cpu())
        ['cpu_model', 'isa']
    """
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)
    except OSError:
        return {"cpu_model": platform.processor() or platform.machine(), "isa": []}
    info = {k.strip(): v.strip() for k, v in info.items()}
    flags = set(info.get("flags", "").split())
    return {"cpu_model": info.get("model name", platform.machine()), "isa": sorted(flags & _ISA)}


def machine(*packages: str) -> dict[str, Any]:
    """:func:`cpu`, CPU counts, platform, Python and the installed versions of ``packages`` (``None``: absent).

    Versions come from the installed distributions' metadata, so nothing heavy is imported.

    Example:
        >>> machine("numpy")["numpy"] is not None
        True
    """
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {**cpu(), "logical_cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "platform": platform.platform(), "python": platform.python_version(), **versions}
