"""Capture and steering on every supported decoder architecture: the real vLLM engine against HF transformers,
on tiny random-weight checkpoints built locally (tests/engine/tiny_models.py), and a refusal at install for a
layer shape guard cannot read."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests.engine.conftest import prompts_of_different_lengths, rel_err
from tests.engine.tiny_models import ARCHITECTURES, tiny_checkpoint

CAPTURE = (1, 3)
#: one steered layer the capture reads after the addition (3) and one it does not (2)
STEER = (2, 3)
ALPHA = 0.5
MAX_REL_ERR = 1e-4
_STATEMENTS = ["Paris is in France.", "Water is wet.", "The Sun is hot.", "Paris is in Peru.", "Water is dry.",
               "The Sun is cold."]


def _params(max_tokens: int = 6, logprobs: int | None = None):
    from vllm import SamplingParams

    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, logprobs=logprobs)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


class Arch:
    """One architecture's checkpoint, HF reference and guarded engine."""

    def __init__(self, name: str, folder: str, hf, llm) -> None:
        self.name, self.folder, self.hf, self.llm = name, folder, hf, llm


def _start(name: str, tmp_path_factory: pytest.TempPathFactory, eager: bool) -> Iterator[Arch]:
    from adapters.defaults import build_stand_in_probe
    from adapters.hf import HFReference
    from adapters.vllm.engine import GuardedLLM
    from calibration.steering import build_steering_vector
    from guard.config import GuardConfig
    from guard.model_spec import ModelSpec

    folder = tiny_checkpoint(name)
    hf = HFReference(folder)
    out = tmp_path_factory.mktemp(f"tiny-{name}")
    probe = build_stand_in_probe(folder, out / "probe", layers=CAPTURE, seed=3)
    rows = hf.hidden_states_batch([hf.tokenizer(t)["input_ids"] for t in _STATEMENTS], STEER)
    steering = build_steering_vector(np.stack([r[-1] for r in rows]), [0, 0, 0, 1, 1, 1], STEER,
                                     ModelSpec.from_folder(folder), out / "steer")
    cfg = GuardConfig.build(model=folder, probe=str(probe), steering=str(steering), capture_hidden=True,
                            enforce_eager=eager, max_model_len=512)
    llm = GuardedLLM(cfg, max_num_batched_tokens=64)  # small chunks: long prompts prefill over several steps
    try:
        yield Arch(name, folder, hf, llm)
    finally:
        llm.close()


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def arch(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arch]:
    yield from _start(request.param, tmp_path_factory, eager=True)


@pytest.fixture(scope="module")
def compiled_qwen3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arch]:
    yield from _start("qwen3", tmp_path_factory, eager=False)


def _assert_capture_matches_hf(model: Arch) -> None:
    # one prompt longer than Gemma's sliding window (64) and the step budget (64): chunked prefill over a window
    prompts = [*prompts_of_different_lengths(5), "Count with me: " + " ".join(str(i) for i in range(60))]
    results = model.llm.generate(prompts, _params(), hidden=True)
    for res in results:
        fed = res.sequence[:-1]
        assert res.scores.positions.tolist() == list(range(len(fed)))
        err = rel_err(res.scores.hidden, model.hf.hidden_states(fed, CAPTURE))
        assert err < MAX_REL_ERR, f"{model.name}: relative error {err:.2e} on a {len(fed)}-token sequence"
        np.testing.assert_allclose(res.scores.scores, model.llm.probe.score(res.scores.hidden), rtol=1e-3, atol=1e-4)


def _assert_steering_matches_hf(model: Arch) -> None:
    from guard.steering import SteeringVector

    vector = SteeringVector.load(model.llm.spec.steering)
    prompt = prompts_of_different_lengths(2)[1]
    # the steered request shares its batch with one that does not steer
    res, other = model.llm.generate([prompt, prompt + " Thanks."], _params(6, logprobs=1), hidden=True,
                                    steer=[ALPHA, None])
    n_prompt, fed = len(res.prompt_token_ids), res.sequence[:-1]
    logits, hidden = model.hf.steered_forward(fed, vector.vectors, vector.layers, ALPHA, n_prompt, CAPTURE)
    steps = _log_softmax(logits[n_prompt - 1:])
    chosen = steps[np.arange(len(res.token_ids)), res.token_ids]
    np.testing.assert_allclose(res.token_logprobs, chosen, atol=2e-3)
    err = np.linalg.norm(res.scores.hidden - hidden, axis=-1) / np.linalg.norm(hidden, axis=-1)
    assert err.max() < MAX_REL_ERR, f"{model.name}: steered rows differ from HF by {err.max():.2e}"
    plain = model.hf.hidden_states(other.sequence[:-1], CAPTURE)
    assert rel_err(other.scores.hidden, plain) < MAX_REL_ERR  # the batch neighbour is not steered
    unsteered = model.hf.hidden_states(fed, CAPTURE)[n_prompt:, 1]
    moved = np.linalg.norm(res.scores.hidden[n_prompt:, 1] - unsteered, axis=-1)
    assert moved.min() > 0.1 * np.linalg.norm(hidden[n_prompt:, 1], axis=-1).min()  # steering really moved layer 3


def test_vllm_capture_matches_hf_on_each_supported_architecture(arch: Arch):
    _assert_capture_matches_hf(arch)


def test_vllm_steering_matches_hf_on_each_supported_architecture(arch: Arch):
    _assert_steering_matches_hf(arch)


def test_compiled_engine_capture_and_steering_match_hf_on_qwen3(compiled_qwen3: Arch):
    assert compiled_qwen3.llm.worker_status()[0]["compilation_mode"] != "NONE"
    _assert_capture_matches_hf(compiled_qwen3)
    _assert_steering_matches_hf(compiled_qwen3)


def test_an_architecture_whose_layers_return_one_tensor_is_refused_at_install(monkeypatch, tmp_path):
    from adapters.defaults import build_stand_in_probe
    from adapters.vllm.engine import GuardedLLM
    from guard.config import GuardConfig

    folder = tiny_checkpoint("granite")
    probe = build_stand_in_probe(folder, tmp_path / "probe", layers=CAPTURE)
    # the engine core in this process, so the worker's refusal reaches the caller as it was raised
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    cfg = GuardConfig.build(model=folder, probe=str(probe), enforce_eager=True, max_model_len=512,
                            score_endpoint="inproc://granite-refusal")
    with pytest.raises(Exception, match=r"GraniteForCausalLM.*GraniteDecoderLayer.*returns one tensor.*Qwen3") as info:
        GuardedLLM(cfg)
    assert "Llama" in str(info.value)


def test_a_hub_id_in_the_local_hugging_face_cache_serves_offline_like_its_folder(monkeypatch, tmp_path):
    import shutil

    import huggingface_hub.constants as hub

    from adapters.defaults import build_stand_in_probe
    from adapters.hf import HFReference
    from adapters.vllm.engine import GuardedLLM
    from guard.config import GuardConfig

    folder = tiny_checkpoint("llama")
    repo = tmp_path / "hub" / "models--acme--tiny-llama"
    shutil.copytree(folder, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    probe = build_stand_in_probe(folder, tmp_path / "probe", layers=CAPTURE)
    cfg = GuardConfig.build(model="acme/tiny-llama", probe=str(probe), capture_hidden=True, enforce_eager=True,
                            max_model_len=512)
    with GuardedLLM(cfg) as llm:
        assert llm.model_path == str(repo / "snapshots" / "0123abcd")
        (res,) = llm.generate(["The capital of France is"], _params(), hidden=True)
    assert rel_err(res.scores.hidden, HFReference(folder).hidden_states(res.sequence[:-1], CAPTURE)) < MAX_REL_ERR


def test_a_probe_calibrated_in_another_dtype_warns_when_the_engine_starts(capfd, tmp_path):
    from adapters.vllm.engine import GuardedLLM
    from guard.config import GuardConfig
    from guard.model_spec import ModelSpec
    from guard.probe import Probe

    folder = tiny_checkpoint("llama")
    probe = Probe.random(ModelSpec.from_folder(folder), CAPTURE, labels=("true", "false"), undecided=True)
    probe.manifest = probe.manifest.model_copy(update={"dtype": "bfloat16"})
    path = probe.save(tmp_path / "bf16-probe")
    with GuardedLLM(GuardConfig.build(model=folder, probe=str(path), dtype="float32", enforce_eager=True,
                                      max_model_len=256)) as llm:
        assert llm.dtype == "float32" and llm.engine_kwargs["dtype"] == "float32"
    said = capfd.readouterr().err
    assert "was calibrated with the engine in bfloat16, this engine runs float32" in said
