"""Resident memory of a process and of all its descendants, read from ``/proc`` (Linux).

``guard serve`` runs vLLM's OpenAI server as a child, which runs the engine core and its workers
as further processes; a leak may sit in any of them, so the load test reads the whole tree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["rss_mb", "tree_rss"]

_PROC = Path("/proc")


def rss_mb(pid: int) -> float | None:
    """``VmRSS`` of process ``pid`` in MiB (``None``: it has exited or has no RSS line).

    Example:
        >>> import os
        >>> rss_mb(os.getpid()) > 0
        True
    """
    try:
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _parents() -> dict[int, int]:
    """Every live process's parent: ``{pid: ppid}`` (``stat``'s 4th field, after the parenthesised name)."""
    out: dict[int, int] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            out[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):  # it exited while being read
            continue
    return out


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found, todo = [], list(children.get(pid, []))
    while todo:
        found.append(todo.pop())
        todo.extend(children.get(found[-1], []))
    return sorted(found)


def _name(pid: int) -> str:
    try:
        return (_PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return "?"


def tree_rss(pid: int) -> dict[str, Any]:
    """RSS of ``pid`` and of its descendants (MiB), their count, and each process's RSS.

    Returns:
        ``{"root_mb", "descendants_mb", "total_mb", "descendants", "processes"}``, ``processes``
        mapping ``"<pid> <name>"`` to MiB; shared pages count in every process that maps them, so
        ``total_mb`` overstates the memory in use but moves with it.

    Example:
        >>> import os
        >>> tree_rss(os.getpid())["root_mb"] > 0
        True
    """
    root = rss_mb(pid) or 0.0
    each = {f"{p} {_name(p)}": m for p in _descendants(pid) if (m := rss_mb(p)) is not None}
    rest = sum(each.values())
    return {"root_mb": root, "descendants_mb": rest, "total_mb": root + rest, "descendants": len(each),
            "processes": {f"{pid} {_name(pid)}": root, **each}}
