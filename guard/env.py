"""The one registry of environment variables guard reads.

``os.environ`` is read here and nowhere else. Each variable is declared once with its meaning;
:func:`read` returns the raw string (or ``None``) so the config layer can validate it.
"""

from __future__ import annotations

import os

__all__ = ["ENV_VARS", "read", "cache_home"]

#: name -> meaning. Add a variable here before reading it anywhere.
ENV_VARS: dict[str, str] = {
    # Directory for prepared models and other caches (default: ~/.cache/guard).
    "GUARD_HOME": "cache directory for prepared models (default ~/.cache/guard)",
    # Model to serve/score: 'default' (embedded SmolLM2), an HF folder, or a hub id.
    "GUARD_MODEL": "model: 'default', a local HF folder, or a hub id",
    # Path of the probe artefact (.safetensors with its .json manifest).
    "GUARD_PROBE": "probe artefact path",
    # Comma-separated decoder layers to capture when no probe is given.
    "GUARD_LAYERS": "comma-separated decoder layer indices to capture",
    # '1' forces eager mode (no torch.compile) in the engine.
    "GUARD_ENFORCE_EAGER": "1 to run the engine in eager mode",
    # '1' keeps vLLM prefix caching on (cached prompt tokens are then not scored).
    "GUARD_PREFIX_CACHING": "1 to keep prefix caching on",
    # Score channel endpoint (zmq address) the engine workers push scores to.
    "GUARD_SCORE_ENDPOINT": "zmq endpoint for worker -> consumer scores",
    # KV cache size for the CPU engine, in GiB.
    "GUARD_KV_CACHE_GIB": "CPU KV cache size in GiB (sets VLLM_CPU_KVCACHE_SPACE)",
}


def read(name: str) -> str | None:
    """Return the value of a declared guard environment variable, or ``None`` if unset.

    Raises:
        KeyError: ``name`` is not declared in :data:`ENV_VARS` (a programming error).
    """
    if name not in ENV_VARS:
        raise KeyError(f"undeclared guard environment variable {name!r}; declare it in guard/env.py")
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def cache_home() -> str:
    """Directory under which guard keeps prepared models (``$GUARD_HOME`` or ``~/.cache/guard``)."""
    return read("GUARD_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "guard")
