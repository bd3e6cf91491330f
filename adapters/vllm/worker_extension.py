"""Methods vLLM mixes into its workers (``worker_extension_cls``), callable by name via ``collective_rpc``.

Calling by name keeps vLLM's safe (non-pickle) serialization on.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GuardWorkerExtension", "WORKER_EXTENSION"]

WORKER_EXTENSION = "adapters.vllm.worker_extension.GuardWorkerExtension"


class GuardWorkerExtension:
    """Mixed into vLLM's worker class."""

    def guard_status(self) -> dict[str, Any]:
        """What guard's capture in this worker has done so far (see ``capture.worker_status``)."""
        from adapters.vllm.capture import worker_status

        return worker_status(self)
