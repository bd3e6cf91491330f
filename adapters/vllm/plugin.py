"""The ``vllm.general_plugins`` entry point.

vLLM calls :func:`register` in every process it starts (front end, engine core, workers), possibly
more than once. In an engine core started by ``guard serve`` it first ties the process's life to the front end
(:func:`adapters.vllm.tether.tether`). Otherwise it only wraps the runner's ``load_model``; the wrapper
reads the engine's ``additional_config["guard"]`` once, right after the model is loaded, and installs the capture only
when that entry exists. An engine started without it runs untouched.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from guard.capture_spec import CaptureSpec
from guard.errors import AdapterError

__all__ = ["register", "hooks_digest"]

#: the modules whose code torch.compile traces into a guarded model's graph
_TRACED = ("capture.py", "steering.py")

_registered = False


def register() -> None:
    """Entry point: arrange for guarded engines to install the capture at model load (idempotent)."""
    global _registered
    if _registered:
        return
    from adapters.vllm import internals
    from adapters.vllm.tether import tether

    tether()
    internals.patch_runner_load_model(_on_model_loaded)
    _registered = True


def hooks_digest() -> str:
    """Digest of the hook code torch.compile traces into the model's graph (``capture.py``, ``steering.py``).

    Carried in the capture spec, hence in vLLM's compile-cache key: a graph compiled from other hook code is
    never reused, whether or not ``HOOKS_VERSION`` was bumped.
    """
    here = Path(__file__).parent
    return hashlib.sha256(b"".join((here / name).read_bytes() for name in _TRACED)).hexdigest()[:16]


def _on_model_loaded(runner: Any) -> None:
    from adapters.vllm import internals

    spec = CaptureSpec.from_additional_config(internals.additional_config(runner))
    if spec is None:
        return
    if spec.hooks_source != hooks_digest():
        raise AdapterError(f"the engine arguments were built for guard hook code {spec.hooks_source or '(none)'!r}, "
                           f"this worker has {hooks_digest()!r}; build them with engine_arguments() of the guard "
                           "installed in the engine's environment")
    from adapters.vllm.capture import install

    install(runner, spec)
