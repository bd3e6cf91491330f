"""No request can hurt another, on the real engine (compiled, the shipped gate and steering vector): a
reference request's text and scores are bit-identical before and after each hostile request — steering at
and beyond its bound, non-finite numbers, huge max_tokens, malformed options, deep nesting — and the server
stays healthy. (Before the bound, one request with steer_alpha 1e308 left NaN in KV-cache blocks that later
requests reused, and every later request failed.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.launch import free_port, running_guard

pytestmark = pytest.mark.e2e

MODEL = "smollm2"
REFERENCE = {"model": MODEL, "messages": [{"role": "user", "content": "What is the capital of France?"}],
             "temperature": 0, "max_tokens": 12, "guard": {"mode": "flag"}}


def _chat(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Tell me about the Moon."}], "temperature": 0,
            "max_tokens": 12, **extra}


#: (name, raw body, expected status, expected error code or None)
HOSTILE = [
    ("steer_at_the_upper_bound", json.dumps(_chat(guard={"mode": "steer", "steer_how": "always", "steer_alpha": 4.0})),
     200, None),
    ("steer_at_the_lower_bound", json.dumps(_chat(guard={"mode": "steer", "steer_how": "always", "steer_alpha": -4.0})),
     200, None),
    ("steer_regenerate_at_the_bound", json.dumps(_chat(guard={"mode": "steer", "steer_how": "regenerate",
                                                              "steer_alpha": 4.0})), 200, None),
    ("steer_just_past_the_bound", json.dumps(_chat(guard={"mode": "steer", "steer_how": "always",
                                                          "steer_alpha": 4.001})), 400, "steer_alpha_out_of_range"),
    ("steer_1e30", json.dumps(_chat(guard={"mode": "steer", "steer_how": "always", "steer_alpha": 1e30})), 400,
     "steer_alpha_out_of_range"),
    ("steer_1e308", json.dumps(_chat(guard={"mode": "steer", "steer_how": "always", "steer_alpha": 1e308})), 400,
     "steer_alpha_out_of_range"),
    ("steer_overflowing_literal", json.dumps(_chat(guard={"mode": "steer", "steer_how": "always"}))[:-1]
     .replace('"always"}', '"always", "steer_alpha": 1e999}') + "}", 400, None),
    ("nan_temperature", json.dumps(_chat()).replace('"temperature": 0', '"temperature": NaN'), 400, None),
    ("infinite_top_p", json.dumps(_chat(top_p=1.0)).replace('"top_p": 1.0', '"top_p": Infinity'), 400, None),
    ("streamed_negative_infinity", json.dumps(_chat(stream=True, presence_penalty=0.5))
     .replace('"presence_penalty": 0.5', '"presence_penalty": -Infinity'), 400, None),
    ("huge_max_tokens", json.dumps(_chat(max_tokens=10**12)), 400, None),
    ("reserved_steering_xargs", json.dumps(_chat(vllm_xargs={"guard_steer": 1e30})), 400, None),
    ("unknown_mode", json.dumps(_chat(guard={"mode": "loud"})), 400, None),
    ("guard_not_an_object", json.dumps(_chat(guard="abstain")), 400, None),
    ("deep_nesting", '{"model": "smollm2", "x": ' + "[" * 5000 + "]" * 5000 + "}", 400, None),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("isolation")
    config = tmp / "serve.yaml"
    config.write_text(f"served_model_name: {MODEL}\nmax_model_len: 512\nmax_num_seqs: 4\n")
    port = free_port()
    with running_guard(["serve", "--port", str(port), "--config", str(config)], tmp / "serve.log", "serving",
                       start_s=900):
        yield f"http://127.0.0.1:{port}"


def _reference(url: str) -> dict[str, Any]:
    answer = httpx.post(f"{url}/v1/chat/completions", json=REFERENCE, timeout=120)
    assert answer.status_code == 200, answer.text
    choice = answer.json()["choices"][0]
    guard = choice["guard"]
    return {"text": choice["message"]["content"], "tokens": guard["tokens"], "gate": guard["gate"],
            "sentences": guard["sentences"]}


@pytest.fixture(scope="module")
def before(served: str) -> dict[str, Any]:
    reference = _reference(served)
    assert reference["tokens"] and "Paris" in reference["text"]
    return reference


@pytest.mark.parametrize(("name", "raw", "status", "code"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_reference_request_is_bit_identical_before_and_after_a_hostile_request(served, before, name, raw, status,
                                                                                 code):
    answer = httpx.post(f"{served}/v1/chat/completions", content=raw.encode(),
                        headers={"content-type": "application/json"}, timeout=300)
    assert answer.status_code == status, answer.text[:500]
    if status == 200:
        body = answer.json()["choices"][0]["guard"]
        assert body["decision"] == "steer" or name == "steer_regenerate_at_the_bound"  # regenerate: if flagged
        assert body["steered"] is None or body["steered"]["strength"] in (4.0, -4.0)
        assert all(all(p == p for p in t["p"].values()) for t in body["tokens"])  # finite scores, no NaN
    else:
        error = answer.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        assert code is None or error["code"] == code
    assert _reference(served) == before
    assert httpx.get(f"{served}/healthz", timeout=30).status_code == 200


def test_no_non_finite_scores_were_counted(served, before):
    metrics = httpx.get(f"{served}/metrics", timeout=30).text
    assert "# HELP guard_nonfinite_scores_total" in metrics
    counted = [line for line in metrics.splitlines() if line.startswith("guard_nonfinite_scores_total{")]
    assert all(line.endswith(" 0.0") for line in counted), counted


@pytest.fixture(scope="module")
def proxied(served: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real guard proxy (its own reader engine) in front of the real guard serve, without --upstream-guarded."""
    tmp = tmp_path_factory.mktemp("proxy-over-serve")
    config = tmp / "proxy.yaml"
    config.write_text("max_model_len: 512\nmax_num_seqs: 4\n")
    port = free_port()
    with running_guard(["proxy", "--eager", "--upstream", f"{served}/v1", "--port", str(port), "--config",
                        str(config)], tmp / "proxy.log", "proxying", start_s=900):
        yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_proxy_refuses_a_mode_its_guarded_upstream_would_downgrade_naming_the_fix(proxied, stream):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{proxied}/v1", api_key="unused", max_retries=0, timeout=120)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=REFERENCE["messages"], max_tokens=8, stream=stream,
                                       extra_body={"guard": {"mode": "abstain"}})
    error = refused.value.body if isinstance(refused.value.body, dict) else {}
    assert refused.value.status_code == 400 and "--upstream-guarded" in str(refused.value)
    assert error.get("code") == "mode_unavailable" and error.get("param") == "guard.mode"
    answer = client.chat.completions.create(model=MODEL, messages=REFERENCE["messages"], max_tokens=8,
                                            extra_body={"guard": {"mode": "flag"}})  # the upstream's own mode
    assert answer.choices[0].model_extra["guard"]["source"] == "engine"
