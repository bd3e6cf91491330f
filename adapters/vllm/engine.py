"""Guarded vLLM engines for Python users: engine arguments, the offline ``GuardedLLM``, the self-test.

The capture itself is installed inside vLLM's workers by the plugin; this module only builds the
engine arguments that switch it on (``additional_config["guard"]``), runs the collector that
receives scores, and proves at start-up that the capture works.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from adapters.model_store import resolve_model
from adapters.score_channel import ScoreCollector, new_ipc_endpoint
from adapters.vllm import internals
from adapters.vllm.plugin import hooks_digest, register
from adapters.vllm.server_args import check_engine_overrides
from adapters.vllm.worker_extension import WORKER_EXTENSION
from guard.capture_spec import CaptureSpec, check_endpoint
from guard.config import GuardConfig
from guard.errors import AdapterError, ConfigError, SelfTestError
from guard.heads import check_gate, split_columns
from guard.probe import Probe
from guard.probe_manifest import dtype_warning
from guard.request_options import RequestOptions
from guard.scores import TokenScores
from guard.steering import SteeringVector

if TYPE_CHECKING:
    from vllm import LLM

__all__ = ["GuardedCompletion", "GuardedLLM", "engine_arguments"]

_SELFTEST_TEXT = "guard self-test: the quick brown fox jumps over the lazy dog"


def engine_arguments(config: GuardConfig, endpoint: str) -> tuple[dict[str, Any], CaptureSpec, str]:
    """vLLM engine keyword arguments for a guarded engine.

    Also sets ``GUARD_SCORE_ENDPOINT`` (and vLLM's CPU defaults) in this process's environment,
    which the engine's processes inherit; start the engine after calling this.

    Returns:
        ``(kwargs, spec, model_path)``; ``kwargs`` suit ``vllm.LLM`` and ``AsyncEngineArgs``.
    """
    internals.check_version()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(config.kv_cache_gib))))
    os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
    os.environ["GUARD_SCORE_ENDPOINT"] = check_endpoint(endpoint)
    model = resolve_model(config.model)
    probe = Probe.load(config.probe) if config.probe else None
    layers = probe.layers if probe is not None else config.layers
    if config.gate and not config.probe:
        raise ConfigError("a pre-generation gate needs the answer probe it was calibrated with; set probe as well")
    steering_layers = SteeringVector.load(config.steering).layers if config.steering else ()
    spec = CaptureSpec(layers=layers, probe=config.probe, gate=config.gate, hidden=config.capture_hidden,
                       steering=config.steering, steering_layers=steering_layers, hooks_source=hooks_digest())
    kwargs = {
        "model": model,
        "dtype": config.dtype or (probe.manifest.dtype if probe is not None else internals.default_dtype()),
        "max_model_len": config.max_model_len,
        "max_num_seqs": config.max_num_seqs,
        "enforce_eager": config.enforce_eager,
        "enable_prefix_caching": config.prefix_caching,
        "additional_config": spec.to_additional_config(),
        "seed": 0,
        "worker_extension_cls": WORKER_EXTENSION,
    }
    return kwargs, spec, model


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


@dataclass(frozen=True)
class GuardedCompletion:
    """One finished request: tokens, text, and the per-token scores received for it."""

    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    scores: TokenScores | None
    #: the pre-generation gate's scores ``(n, L, 2)`` at the same positions (engines started with a gate)
    gate_scores: np.ndarray | None = None
    #: the probe's shift columns ``(n, L, d)`` at the same positions (probes with a shift head; guard.shift)
    shift_scores: np.ndarray | None = None
    #: log-probability of each generated token (when the request asked for ``logprobs``)
    token_logprobs: list[float] | None = None

    @property
    def sequence(self) -> list[int]:
        """Prompt followed by generated tokens."""
        return self.prompt_token_ids + self.token_ids


class GuardedLLM:
    """An offline vLLM engine with in-engine capture and probe scoring.

    Args:
        config: engine settings; ``GuardConfig.build()`` reads ``GUARD_*`` variables.
        **engine_overrides: any further ``vllm.LLM`` engine arguments (``tensor_parallel_size``, ``dtype``,
            ``quantization``, ``gpu_memory_utilization``, ...); they override the guard's defaults. The few the
            guard owns (``model``, ``additional_config``, ``worker_extension_cls``, ``speculative_config``,
            parallel sizes other than tensor) are refused.

    Raises:
        SelfTestError: the capture did not fire or mapped rows wrongly (with ``config.selftest``).

    Example:
        >>> llm = GuardedLLM(GuardConfig.build(probe="probe.safetensors"))   # doctest: +SKIP
        >>> out = llm.generate(["The capital of France is"])[0]               # doctest: +SKIP
        >>> out.scores.scores.shape                                           # doctest: +SKIP
        (6, 1, 1)
    """

    def __init__(self, config: GuardConfig, **engine_overrides: Any) -> None:
        register()
        from vllm import LLM

        self.config = config
        endpoint = config.score_endpoint or new_ipc_endpoint()
        previous_endpoint = os.environ.get("GUARD_SCORE_ENDPOINT")
        check_engine_overrides(engine_overrides)
        kwargs, self.spec, self.model_path = engine_arguments(config, endpoint)
        self.engine_kwargs = {**kwargs, **engine_overrides}
        binding = internals.cpu_thread_binding(int(self.engine_kwargs.get("tensor_parallel_size") or 1))
        self.probe = Probe.load(config.probe) if config.probe else None
        self.gate = Probe.load(config.gate) if config.gate else None
        if self.gate is not None:
            assert self.probe is not None  # engine_arguments refuses a gate without its probe
            check_gate(self.probe, self.gate)
        #: the steering vector requests steer along (its manifest holds the default strength)
        self.steering = SteeringVector.load(config.steering) if config.steering else None
        self.collector = ScoreCollector(endpoint)
        previous_binding = os.environ.get("VLLM_CPU_OMP_THREADS_BIND")
        if binding is not None:
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = binding
        try:
            #: the wrapped engine; ``None`` once closed
            self.llm: LLM | None = LLM(**self.engine_kwargs)
        except Exception:
            self.collector.close()
            raise
        finally:
            # The engine's processes have read GUARD_SCORE_ENDPOINT by now; put back what the caller had, so a
            # second engine built in this process picks a fresh endpoint instead of this one's (still bound).
            _restore_env("GUARD_SCORE_ENDPOINT", previous_endpoint)
            _restore_env("VLLM_CPU_OMP_THREADS_BIND", previous_binding)
        self.tokenizer = self._engine().get_tokenizer()
        #: the dtype the engine's model runs in (``auto`` resolved); a probe calibrated in another one warns
        self.dtype = next((s["dtype"] for s in self.worker_status() if "dtype" in s), None)
        if self.probe is not None and self.dtype is not None and self.dtype != self.probe.manifest.dtype:
            print(dtype_warning(config.probe, self.probe.manifest.dtype, self.dtype), file=sys.stderr)
        if config.selftest:
            self.selftest()

    def generate(self, prompts: Sequence[str | list[int]], params: Any = None, *, guard: bool | Sequence[bool] = True,
                 hidden: bool = False, timeout: float = 30.0, steer: float | Sequence[float | None] | None = None,
                 steer_from: int | Sequence[int | None] | None = None) -> list[GuardedCompletion]:
        """Generate for each prompt (text or token ids) in one batch.

        Args:
            prompts: texts or token-id lists.
            params: ``vllm.SamplingParams`` shared by all prompts (cloned per request), or one per prompt.
            guard: opt every request in (``True``), out (``False``), or per prompt (a sequence).
            hidden: also deliver raw residual-stream rows (needs ``capture_hidden``).
            timeout: seconds to wait for the last scores after a request finished.
            steer: steering strength ``alpha`` for every guarded request, or one per prompt (``None``: no
                steering); needs an engine started with ``steering``.
            steer_from: first steered token position (default: each prompt's length), or one per prompt.

        Returns:
            One :class:`GuardedCompletion` per prompt, in order; ``scores`` is ``None`` when not guarded.
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        default = SamplingParams(max_tokens=32, temperature=0.0)
        bases = list(params) if isinstance(params, Sequence) else [params or default] * len(prompts)
        inputs, per_request, keys = [], [], []
        flags = [guard] * len(prompts) if isinstance(guard, bool) else list(guard)
        alphas = list(steer) if isinstance(steer, Sequence) else [steer] * len(prompts)
        starts = list(steer_from) if isinstance(steer_from, Sequence) else [steer_from] * len(prompts)
        if {len(flags), len(alphas), len(starts), len(bases)} != {len(prompts)}:
            raise ConfigError(f"guard has {len(flags)} flags, steer {len(alphas)}, steer_from {len(starts)} and params "
                              f"{len(bases)} values for {len(prompts)} prompts; pass one per prompt or a single value")
        for prompt, guarded, alpha, start, base in zip(prompts, flags, alphas, starts, bases):
            sp = base.clone()
            key = uuid.uuid4().hex if guarded else None
            if alpha is not None and not guarded:
                raise ConfigError(f"steer={alpha} was given for a prompt with guard=False; steering is part of the "
                                  "guard opt-in, so guard that prompt or pass steer=None for it")
            if alpha is not None and self.steering is not None and not self.steering.allows(alpha):
                raise ConfigError(f"steer={alpha!r} is out of range: {self.steering.limit_text()}; "
                                  "pass a smaller steer")
            if key is not None:
                opts = RequestOptions(key=key, hidden=hidden, steer=alpha,
                                      steer_from=None if alpha is None else start)
                sp.extra_args = {**(sp.extra_args or {}), **opts.to_extra_args()}
            inputs.append(TokensPrompt(prompt_token_ids=list(prompt)) if not isinstance(prompt, str) else prompt)
            per_request.append(sp)
            keys.append(key)
        outputs = self._engine().generate(inputs, per_request, use_tqdm=False)
        done = []
        for key, out in zip(keys, outputs):
            # vLLM types prompt_token_ids Optional, but fills them for every generate() request
            prompt_ids, gen = list(out.prompt_token_ids), out.outputs[0]  # type: ignore[arg-type]
            scores = None
            if key is not None:
                # The last sampled token is never fed back, so positions end at len - 2.
                self.collector.store.wait(key, len(prompt_ids) + len(gen.token_ids) - 1, timeout)
                scores = self.collector.store.pop(key)
            logprobs = None
            if gen.logprobs:
                # vLLM types each step Optional, but fills every sampled step when logprobs were asked for
                logprobs = [float(step[tok].logprob)  # type: ignore[index]
                            for tok, step in zip(gen.token_ids, gen.logprobs)]
            gate_scores = shift_scores = None
            if scores is not None and self.probe is not None:  # the shift head and a gate ride on the probe
                probe_part, shift_scores, gate_scores = split_columns(scores.scores, self.probe)
                scores = dataclasses.replace(scores, scores=probe_part)
            done.append(GuardedCompletion(prompt_ids, list(gen.token_ids), gen.text, scores, token_logprobs=logprobs,
                                          gate_scores=gate_scores, shift_scores=shift_scores))
        return done

    def worker_status(self) -> list[dict[str, Any]]:
        """What the capture in each worker has done (installed, hook calls per layer, ...)."""
        status: list[dict[str, Any]] = self._engine().collective_rpc("guard_status")
        return status

    def _engine(self) -> LLM:
        if self.llm is None:
            raise AdapterError("this GuardedLLM is closed; start a new one")
        return self.llm

    def selftest(self) -> None:
        """Prove the hooks fire in this engine and that rows land on the right request.

        Raises:
            SelfTestError: with what went wrong and how to fix it.
        """
        from vllm import SamplingParams

        ids = self.tokenizer(_SELFTEST_TEXT)["input_ids"]
        prompts = [ids, ids[: len(ids) // 2]]
        # start-up profiling and warm-up forwards run the hooks too: only calls during the self-test count
        before = [s for s in self.worker_status() if s.get("publishes", True)]
        results = self.generate(prompts, SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True),
                                hidden=self.spec.hidden, timeout=30.0)
        status = [s for s in self.worker_status() if s.get("publishes", True)]
        if not status or not all(s["installed"] for s in status):
            raise SelfTestError(
                "guard's capture is not installed in the vLLM worker: the plugin did not run. Install guard into "
                "the engine's environment (pip install -e .) and make sure VLLM_PLUGINS, if set, includes 'guard'"
            )
        moved = [[a - b for a, b in zip(s["fired"] + s["steer_fired"], p["fired"] + p["steer_fired"])]
                 for s, p in zip(status, before)]
        if not all(all(m > 0 for m in calls) for calls in moved):
            raise SelfTestError(
                f"guard's layer hooks did not run during the self-test (calls per hooked and steered layer: "
                f"{moved[0]}, compilation mode "
                f"{status[0]['compilation_mode']}); a stale compiled graph without hooks may have been loaded: "
                "clear ~/.cache/vllm/torch_compile_cache or run with enforce_eager"
            )
        for res in results:
            expected = np.arange(len(res.sequence) - 1)
            scores = res.scores
            got = scores.positions if scores is not None else np.zeros(0)
            if scores is None or not np.array_equal(got, expected):
                raise SelfTestError(
                    f"self-test request of {len(res.prompt_token_ids)} prompt tokens received scores for positions "
                    f"{got.tolist()}, expected 0..{len(expected) - 1}; "
                    "the runner's batch layout is not what guard reads"
                )
            if self.probe is not None and scores.hidden is not None:
                ref = self.probe.score(scores.hidden)
                if not np.allclose(ref, scores.scores, rtol=1e-3, atol=1e-3):
                    raise SelfTestError("in-engine probe scores disagree with the numpy reference on captured rows")
                if self.gate is not None and (res.gate_scores is None or not np.allclose(
                        self.gate.score(scores.hidden), res.gate_scores, rtol=1e-3, atol=1e-3)):
                    raise SelfTestError("in-engine gate scores disagree with the numpy reference on captured rows")
                if self.probe.shift_dims and (res.shift_scores is None or not np.allclose(
                        self.probe.shift_columns(scores.hidden), res.shift_scores, rtol=1e-3, atol=1e-3)):
                    raise SelfTestError("in-engine shift scores disagree with the numpy reference on captured rows")

    def close(self) -> None:
        """Shut the engine and the collector down."""
        if self.llm is not None:
            internals.shutdown_llm(self.llm)
            self.llm = None
        self.collector.close()

    def __enter__(self) -> GuardedLLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
