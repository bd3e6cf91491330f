"""guard serve end to end: one real server (real vLLM engine, real model) driven by the official openai client.

The shipped probe's manifest stores conformal thresholds but no calibration scores, so it serves
only its calibrated alpha. To force both outcomes with per-request alpha, this module serves the
shipped probe's weights with a synthetic calibration: every "true" calibration score is 0, so the
p-value of "true" is 1/20 for any sentence the probe is not certain about; alpha 0.01 then never
flags and alpha 0.5 always does. The verdicts are checked for consistency, not for truth.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.launch import free_port, logged_within, running_guard

openai = pytest.importorskip("openai")

MODEL = "smollm2"
N_CAL = 19
CHAT = [{"role": "user", "content": "What is the capital of France? Answer in two sentences."}]
PROMPT = "The largest planet in the solar system is"
STRENGTH = 490.0  # times a unit direction at two layers (residual norms there are ~125, bound 4x): changes greedy text


def _synthetic_probe(out: Path) -> Path:
    from adapters.model_store import resolve_model
    from guard.conformal import MondrianConformal
    from guard.model_spec import ModelSpec
    from guard.probe import ConformalCalibration, Probe
    from guard.shipped import shipped_probe

    shipped = Probe.load(shipped_probe(ModelSpec.from_folder(resolve_model("default")).fingerprint))
    spread = [i / (N_CAL + 1) for i in range(1, N_CAL + 1)]
    scores = {label: ([0.0] * N_CAL if label == "true" else spread) for label in shipped.labels}
    fitted = MondrianConformal.from_scores(0.1, [scores[label] for label in shipped.labels])
    calibration = ConformalCalibration(alpha=0.1, thresholds=dict(zip(shipped.labels, fitted.thresholds.tolist())),
                                       n_cal={label: N_CAL for label in shipped.labels}, scores=scores)
    # the shift head rides along and reports every sentence's shift; beta 0 keeps the forced decisions forced
    assert shipped.manifest.shift is not None, "the shipped probe has no shift head"
    manifest = shipped.manifest.model_copy(update={"conformal": calibration, "kind": "shipped-synthetic-calibration",
                                                   "shift": shipped.manifest.shift.model_copy(update={"beta": 0.0})})
    probe = Probe(manifest, shipped.weight, shipped.bias, shipped.mean, shipped.scale, shipped.w1, shipped.b1,
                  shipped.shift_weight, shipped.shift_bias)
    return probe.save(out / "probe")


def _steering_vector(out: Path) -> Path:
    """Seeded random unit directions at two mid layers: a strong steer visibly changes greedy text (mechanism only)."""
    import numpy as np

    from adapters.model_store import resolve_model
    from guard.model_spec import ModelSpec
    from guard.shipped import shipped_steering
    from guard.steering import SteeringVector

    spec = ModelSpec.from_folder(resolve_model("default"))
    vectors = np.random.default_rng(0).standard_normal((2, spec.hidden_size)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    shipped = shipped_steering(spec.fingerprint)
    assert shipped is not None
    # the model's median residual norm (the shipped vector's): unit directions may then move a row by ~500
    residual = SteeringVector.load(shipped).manifest.residual_norm
    vector = SteeringVector.from_vectors(vectors, (12, 14), spec, kind="random-e2e", residual_norm=residual)
    assert vector.allows(STRENGTH)
    return vector.save(out / "steer")


def _shipped_gate() -> Path:
    from adapters.model_store import resolve_model
    from guard.model_spec import ModelSpec
    from guard.shipped import shipped_probe

    gate = shipped_probe(ModelSpec.from_folder(resolve_model("default")).fingerprint, gate=True)
    assert gate is not None, "no pre-generation gate ships for the embedded default model"
    return gate


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One `guard serve` for the module; yields its URL, the URL of vLLM's own app over the same engine
    (``--engine-port``, unguarded) and its log."""
    tmp = tmp_path_factory.mktemp("serve")
    probe = _synthetic_probe(tmp)
    config = tmp / "serve.yaml"
    # engine settings as vLLM flags: the config file's vllm_args, then those after `--` (they pass straight through)
    config.write_text(f"served_model_name: {MODEL}\nmax_request_bytes: 65536\nscore_timeout: 10\n"
                      "vllm_args: ['--max-model-len', '512']\n")
    port = free_port()
    args = ["serve", "--eager", "--port", str(port), "--probe", str(probe), "--config", str(config),
            "--gate", str(_shipped_gate()), "--steering", str(_steering_vector(tmp)), "--steer-alpha", str(STRENGTH),
            "--engine-port", str(free_port()), "--", "--max-num-seqs", "8", "--dtype", "float32"]
    with running_guard(args, tmp / "serve.log", "serving"):
        base = f"http://127.0.0.1:{port}"
        health = httpx.get(f"{base}/healthz", timeout=10).json()
        yield {"url": base, "upstream": health["upstream"]["url"], "log": tmp / "serve.log"}


def _client(url: str) -> Any:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


def _greedy(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "temperature": 0, "max_tokens": 24, **extra}


def _stream_text(chunks: list[Any], chat: bool) -> str:
    return "".join((c.choices[0].delta.content or "") if chat else c.choices[0].text for c in chunks if c.choices)


def _stream_guard(chunks: list[Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The token scores of every chunk, and the final chunk's summary."""
    extras = [(c.choices[0].model_extra or {}).get("guard") for c in chunks if c.choices]
    tokens = [t for g in extras[:-1] if g for t in g.get("tokens", [])]
    return tokens, extras[-1]


def _consistent(guard: dict[str, Any], alpha: float) -> None:
    """decision is "abstain"/"flag" exactly when some decided sentence has p_true <= alpha."""
    flagged = any(s["p_true"] is not None and s["p_true"] <= alpha for s in guard["sentences"])
    assert flagged == any(s["verdict"] == "flagged" for s in guard["sentences"])
    # the shift head's score reaches every scored verdict (guard.shift); beta 0: never shifted
    assert all(0.0 <= s["shift"] < 1.0 and not s["shifted"] for s in guard["sentences"] if s["verdict"] != "unscored")
    assert guard["decision"] == (guard["mode"] if flagged and guard["mode"] != "pass" else "pass")
    assert guard["source"] == "engine" and guard["alpha"] == alpha


def test_text_is_identical_to_the_upstream_for_chat_and_completions_streamed_or_not(served):
    guard, direct = _client(served["url"]), _client(served["upstream"])
    chat = guard.chat.completions.create(messages=CHAT, **_greedy())
    plain = direct.chat.completions.create(messages=CHAT, **_greedy())
    assert chat.choices[0].model_extra["guard"]["decision"] in ("pass", "flag")
    ours, theirs = chat.model_dump(), plain.model_dump()
    for answer in (ours, theirs):  # the guard field apart, the answer is vLLM's own, token ids hidden again
        del answer["id"], answer["created"]
        answer["choices"][0].pop("guard", None)
    assert ours == theirs
    streamed = list(guard.chat.completions.create(messages=CHAT, stream=True, stream_options={"include_usage": True},
                                                  **_greedy()))
    assert _stream_text(streamed, chat=True) == plain.choices[0].message.content
    assert [c.usage.completion_tokens for c in streamed if not c.choices] == [plain.usage.completion_tokens]
    assert not streamed[-1].choices and streamed[-2].choices[0].model_extra["guard"]["decision"]  # usage last
    completion = guard.completions.create(prompt=PROMPT, **_greedy())
    plain = direct.completions.create(prompt=PROMPT, **_greedy())
    assert completion.choices[0].text == plain.choices[0].text
    streamed = list(guard.completions.create(prompt=PROMPT, stream=True, **_greedy()))
    assert _stream_text(streamed, chat=False) == plain.choices[0].text


def test_streamed_token_scores_and_verdicts_equal_the_unstreamed_ones_for_the_same_greedy_request(served):
    from guard.client import fold, verdict

    client = _client(served["url"])
    answer = client.chat.completions.create(messages=CHAT, **_greedy())
    whole = answer.choices[0].model_extra["guard"]
    chunks = list(client.chat.completions.create(messages=CHAT, stream=True, **_greedy()))
    tokens, summary = _stream_guard(chunks)
    # guard.client on the openai SDK's own objects: the folded stream is the answer's verdict
    folded, expected = fold(chunks), verdict(answer)
    assert expected is not None and folded.decision == expected.decision and folded.counts == expected.counts
    assert [s.verdict for s in folded.sentences] == [s.verdict for s in expected.sentences]
    assert [t.position for t in folded.tokens] == [t.position for t in expected.tokens]
    assert [t["position"] for t in tokens] == [t["position"] for t in whole["tokens"]]
    for got, expected in zip(tokens, whole["tokens"]):
        assert got["p"] == pytest.approx(expected["p"], abs=1e-5)
    assert [(s["start"], s["end"], s["verdict"]) for s in summary["sentences"]] == \
        [(s["start"], s["end"], s["verdict"]) for s in whole["sentences"]]
    assert summary["decision"] == whole["decision"] and summary["counts"] == whole["counts"]
    first, last = whole["tokens"][0]["position"], whole["tokens"][-1]["position"]
    assert last - first + 1 == whole["counts"]["tokens"] - 1  # every generated token but the last has a score


@pytest.mark.parametrize("alpha", [0.01, 0.5])
def test_abstains_exactly_when_a_decided_sentence_has_p_true_at_most_alpha(served, alpha):
    client = _client(served["url"])
    options = {"guard": {"mode": "abstain", "alpha": alpha, "abstain_message": "[withheld]"}}
    answer = client.chat.completions.create(messages=CHAT, extra_body=options, **_greedy())
    guard = answer.choices[0].model_extra["guard"]
    _consistent(guard, alpha)
    assert guard["decision"] == ("pass" if alpha == 0.01 else "abstain")  # forced by the synthetic calibration
    if guard["decision"] == "abstain":
        assert answer.choices[0].message.content == "[withheld]"
        assert guard["abstained"]["sentence"] == 0 and guard["abstained"]["p_true"] <= alpha
    chunks = list(client.chat.completions.create(messages=CHAT, stream=True, extra_body=options, **_greedy()))
    _, summary = _stream_guard(chunks)
    _consistent(summary, alpha)
    text = _stream_text(chunks, chat=True)
    if summary["decision"] == "abstain":
        assert text == "[withheld]" and [c.choices[0].finish_reason for c in chunks].count("stop") == 1
    else:
        assert text == client.chat.completions.create(messages=CHAT, **_greedy()).choices[0].message.content
    flagged = client.chat.completions.create(messages=CHAT, extra_body={"guard": {"mode": "flag", "alpha": alpha}},
                                             **_greedy())
    _consistent(flagged.choices[0].model_extra["guard"], alpha)


def _counts(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_a_known_sequence_of_requests(served):
    url, client = served["url"], _client(served["url"])
    before = _counts(url)
    client.completions.create(prompt=PROMPT, extra_body={"guard": {"mode": "pass"}}, **_greedy())
    list(client.completions.create(prompt=PROMPT, stream=True, extra_body={"guard": {"mode": "pass"}}, **_greedy()))
    client.chat.completions.create(messages=CHAT, extra_body={"guard": {"mode": "abstain", "alpha": 0.5}}, **_greedy())
    httpx.post(f"{url}/v1/chat/completions", content=b"{oops", timeout=10)
    after = _counts(url)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("guard_requests_total", endpoint="completions", mode="pass", decision="pass") == 2
    assert delta("guard_requests_total", endpoint="chat_completions", mode="abstain", decision="abstain") == 1
    assert delta("guard_requests_total", endpoint="chat_completions", mode="flag", decision="error") == 1
    assert delta("guard_abstentions_total", reason="sentence") == 1
    assert delta("guard_latency_seconds_count") == 3
    assert delta("guard_tokens_scored_total") > 0 and delta("guard_sentences_scored_total") >= 3
    assert after[("guard_requests_in_flight", ())] == 0


@pytest.mark.parametrize(("body", "status", "param"), [
    (b'{"model": "smollm2", "messages": [', 400, None),
    (json.dumps({"model": MODEL, "prompt": PROMPT, "max_tokens": "ten"}).encode(), 400, None),
    (json.dumps({"model": "gpt-4o", "prompt": PROMPT}).encode(), 404, "model"),
    (json.dumps({"model": MODEL, "prompt": PROMPT, "guard": {"alpha": 1.5}}).encode(), 400, "guard.alpha"),
    (json.dumps({"model": MODEL, "prompt": PROMPT, "guard": {"mode": "redact"}}).encode(), 400, "guard.mode"),
    (json.dumps({"model": MODEL, "prompt": PROMPT, "guard": {"mode": "steer", "steer_how": "rewind"}}).encode(),
     400, "guard.steer_how"),
    (json.dumps({"model": MODEL, "prompt": "word " * 600, "max_tokens": 4}).encode(), 400, None),
    (json.dumps({"model": MODEL, "prompt": "x" * 70_000}).encode(), 413, None),
])
def test_bad_requests_get_openai_shaped_4xx_errors(served, body, status, param):
    answer = httpx.post(f"{served['url']}/v1/completions", content=body, headers={"content-type": "application/json"},
                        timeout=30)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param
    if status == 404:
        assert error["code"] == "model_not_found"


def test_the_openai_client_raises_its_own_errors_for_guard_refusals(served):
    client = _client(served["url"])
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(prompt=PROMPT, n=2, **_greedy())
    assert info.value.body["param"] == "n"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(**{**_greedy(), "model": "nope"}, prompt=PROMPT)


def test_healthz_names_the_upstream_and_the_score_channel(served):
    health = httpx.get(f"{served['url']}/healthz", timeout=10)
    body = health.json()
    assert health.status_code == 200 and body["upstream"]["healthy"] and body["model"] == MODEL
    assert body["scores"]["channel"] == "ipc" and "/" not in json.dumps(body["scores"])
    assert body["scores"]["malformed_batches"] == 0
    assert httpx.get(f"{served['upstream']}/health", timeout=10).status_code == 200


def test_vllm_runs_inside_guard_serve_its_operational_routes_answer_and_its_generation_routes_are_refused(served):
    url = served["url"]
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    assert httpx.get(f"{url}/version", timeout=10).json()["version"].startswith("0.32")
    tokens = httpx.post(f"{url}/tokenize", json={"model": MODEL, "prompt": PROMPT}, timeout=10).json()
    assert tokens["count"] == len(tokens["tokens"]) > 3
    for path in ("/v1/responses", "/inference/v1/generate", "/v1/chat/completions/batch"):
        refused = httpx.post(f"{url}{path}", json={"model": MODEL, "input": "hi"}, timeout=10)
        assert refused.status_code == 404, (path, refused.text)
        assert refused.json()["error"]["code"] == "not_found" and "not be guarded" in refused.json()["error"]["message"]
    # one /metrics page: the guard's and vLLM's own (the engine's counters move with a guarded request)
    def generated() -> float:
        text = httpx.get(f"{url}/metrics", timeout=10).text
        return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                   if sample.name == "vllm:generation_tokens_total")
    before = generated()
    _client(url).completions.create(prompt=PROMPT, **_greedy(max_tokens=5))
    # the request id round-trips and names the request in the access line
    answer = httpx.post(f"{url}/v1/completions", json={"prompt": PROMPT, **_greedy(max_tokens=2)},
                        headers={"x-request-id": "e2e-request-77"}, timeout=60)
    assert answer.headers["x-request-id"] == "e2e-request-77"
    assert logged_within(served["log"], "POST /v1/completions 200 ", "request_id=e2e-request-77"), \
        served["log"].read_text()[-3000:]
    assert generated() == before + 5 + 2
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert "guard_requests_total" in metrics
    (build,) = [line for line in metrics.splitlines() if line.startswith("guard_build_info{")]
    assert f'model="{MODEL}"' in build and 'probe="probe.safetensors"' in build and 'calibrated="true"' in build


def test_vllm_flags_after_the_double_dash_and_in_the_config_reach_the_engine(served):
    # read back from vLLM's own app: its models endpoint and the arguments it logged as differing from its defaults
    (model,) = httpx.get(f"{served['upstream']}/v1/models", timeout=10).json()["data"]
    assert model["max_model_len"] == 512
    logged = [x for x in served["log"].read_text().splitlines() if "non-default args:" in x]
    assert logged, "vLLM logged no 'non-default args' line"
    line = logged[0]
    assert "'max_num_seqs': 8" in line and "'dtype': 'float32'" in line and "'max_model_len': 512" in line


def test_the_shipped_gate_decides_on_the_question_alone_and_abstains_exactly_below_its_threshold(served):
    client = openai.OpenAI(base_url=served["url"] + "/v1", api_key="unused")
    # outside the wordings it was calibrated on, the gate does not decide (it ranks new kinds of question at chance)
    for question in ("What is 37 plus 48?", "Which river flows through Vienna?"):
        answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}],
                                                max_tokens=8, temperature=0,
                                                extra_body={"guard": {"mode": "flag", "gate_alpha": 0.5}})
        gate = answer.choices[0].model_extra["guard"]["gate"]
        assert gate["in_scope"] is False and (gate["certified"], gate["answer"]) == (False, True)
    for question in ("What is the capital of France?", "How many legs does a spider have?",
                     "What is the capital of Fiji?"):
        messages = [{"role": "user", "content": question}]
        # alpha 0.5: the gate's stored calibration certifies a threshold there (0.4 and below certify none)
        answer = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=24, temperature=0,
                                                extra_body={"guard": {"mode": "flag", "gate_alpha": 0.5}})
        guard = answer.choices[0].model_extra["guard"]
        gate = guard["gate"]
        assert gate["in_scope"] is True  # worded as the gate's calibration questions
        assert gate["certified"] is True and gate["alpha"] == 0.5 and 0.0 < gate["p_correct"] < 1.0
        assert gate["answer"] is (gate["p_correct"] >= gate["threshold"])
        assert (guard["decision"] == "abstain") is (not gate["answer"])
        if not gate["answer"]:
            from guard.policy import DEFAULT_ABSTAIN_MESSAGE

            assert answer.choices[0].message.content == DEFAULT_ABSTAIN_MESSAGE
            assert guard["abstained"]["kind"] == "gate"
        # the default gate alpha (0.3) certifies nothing on its calibration answers: the gate reports, never abstains
        default = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, temperature=0)
        assert default.choices[0].model_extra["guard"]["gate"]["certified"] is False


def test_answer_check_sends_whole_answers_above_its_certified_threshold_and_abstains_on_the_rest(served):
    from guard.policy import DEFAULT_ABSTAIN_MESSAGE

    client = _client(served["url"])
    # guard alpha 0.01: no sentence is flagged here, so only the answer check decides; the gate is left out
    options = {"mode": "abstain", "alpha": 0.01, "gate": False, "answer_check": True, "answer_alpha": 0.3}
    decided = []
    for question in ("What is the capital of France?", "What is the chemical symbol for gold?", "What is 37 plus 48?",
                     "What is the capital of Fiji?"):
        messages = [{"role": "user", "content": question}]
        plain = client.chat.completions.create(**_greedy(messages=messages, extra_body={"guard": {"mode": "pass"}}))
        answer = client.chat.completions.create(**_greedy(messages=messages, extra_body={"guard": options}))
        choice = answer.choices[0]
        check = choice.model_extra["guard"]["answer_check"]
        assert check["certified"] is True and check["alpha"] == 0.3 and check["threshold"] is not None
        assert check["answer"] is (check["p_correct"] >= check["threshold"]) and check["logprob"] < 0
        assert check["answer_rows"] >= 1 and choice.logprobs is None  # the guard asked for them, not the client
        if check["answer"]:
            assert choice.message.content == plain.choices[0].message.content  # the whole answer, unchanged
        else:
            assert choice.message.content == DEFAULT_ABSTAIN_MESSAGE
            assert choice.model_extra["guard"]["abstained"]["kind"] == "answer"
        streamed = list(client.chat.completions.create(**_greedy(messages=messages, stream=True,
                                                                 extra_body={"guard": options})))
        _, summary = _stream_guard(streamed)
        assert summary["answer_check"]["answer"] is check["answer"]
        assert summary["answer_check"]["p_correct"] == pytest.approx(check["p_correct"], abs=2e-3)
        assert _stream_text(streamed, chat=True) == choice.message.content  # nothing streamed before the check
        decided.append(check["answer"])
    assert True in decided  # the model's answer to France is certified
    strict = client.chat.completions.create(**_greedy(messages=CHAT, extra_body={"guard": options | {
        "answer_alpha": 0.05}}))  # nothing certifies at 0.05: every answer is abstained on
    assert strict.choices[0].message.content == DEFAULT_ABSTAIN_MESSAGE
    assert strict.choices[0].model_extra["guard"]["answer_check"]["certified"] is False


def test_answer_samples_ask_the_engine_again_and_their_agreement_joins_the_answer_check(served):
    from guard.probe import Probe

    sampling = Probe.load(_shipped_gate()).manifest.answer_sampling
    assert sampling is not None  # the shipped gate was calibrated with samples
    client = _client(served["url"])
    options = {"mode": "abstain", "alpha": 0.01, "gate": False, "answer_check": True, "answer_alpha": 0.3,
               "answer_samples": True}
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    answer = client.chat.completions.create(**_greedy(messages=messages, extra_body={"guard": options}))
    check = answer.choices[0].model_extra["guard"]["answer_check"]
    assert check["samples"] == sampling.samples and check["certified"] is True
    assert check["agreement"] > 0  # asked again at temperature 0.7, the model says Paris again at least once
    assert check["answer"] is (check["p_correct"] >= check["threshold"])
    streamed = list(client.chat.completions.create(**_greedy(messages=messages, stream=True,
                                                             extra_body={"guard": options})))
    _, summary = _stream_guard(streamed)
    assert summary["answer_check"]["samples"] == sampling.samples
    assert summary["answer_check"]["agreement"] == check["agreement"]  # seeded by the question: the same samples
    without = client.chat.completions.create(**_greedy(messages=messages, extra_body={"guard": options | {
        "answer_samples": False}}))
    assert without.choices[0].model_extra["guard"]["answer_check"]["agreement"] is None


def test_steer_mode_replaces_the_flagged_answer_by_steered_text_the_same_streamed_or_not(served):
    client = _client(served["url"])
    plain = client.chat.completions.create(messages=CHAT, **_greedy()).choices[0].message.content
    options = {"guard": {"mode": "steer", "alpha": 0.5, "gate": False}, "return_token_ids": True}
    answer = client.chat.completions.create(messages=CHAT, extra_body=options, **_greedy())
    guard = answer.choices[0].model_extra["guard"]
    steered = guard["steered"]  # alpha 0.5 flags the first sentence (synthetic calibration): all of it is steered
    assert guard["decision"] == "steer" and (steered["kind"], steered["how"]) == ("sentence", "continue")
    assert steered["flagged"]["index"] == 0 and steered["kept_chars"] == 0 and steered["strength"] == STRENGTH
    text = answer.choices[0].message.content
    assert text and text != plain
    assert len(answer.choices[0].model_extra["token_ids"]) == answer.usage.completion_tokens
    positions = [t["position"] for t in guard["tokens"]]
    assert positions == list(range(steered["position"], steered["position"] + len(positions)))  # steered tokens' own
    chunks = list(client.chat.completions.create(messages=CHAT, stream=True, extra_body=options, **_greedy()))
    _, summary = _stream_guard(chunks)
    assert _stream_text(chunks, chat=True) == text and summary["steered"] == steered
    assert summary["sentences"] == guard["sentences"]


def test_steer_mode_leaves_a_verified_answer_alone_and_always_steers_unconditionally(served):
    client = _client(served["url"])
    plain = client.chat.completions.create(messages=CHAT, **_greedy()).choices[0].message.content
    calm = client.chat.completions.create(messages=CHAT, extra_body={"guard": {"mode": "steer", "alpha": 0.01}},
                                          **_greedy())
    assert calm.choices[0].message.content == plain and calm.choices[0].model_extra["guard"]["steered"] is None
    always = client.chat.completions.create(
        messages=CHAT, extra_body={"guard": {"mode": "steer", "steer_how": "always", "steer_alpha": STRENGTH}},
        **_greedy())
    guard = always.choices[0].model_extra["guard"]
    assert always.choices[0].message.content != plain and guard["decision"] == "steer"
    assert guard["steered"]["kind"] == "request"
    zero = client.chat.completions.create(
        messages=CHAT, extra_body={"guard": {"mode": "steer", "steer_how": "always", "steer_alpha": 0.0}}, **_greedy())
    assert zero.choices[0].message.content == plain  # strength 0 is a no-op
