"""Hardening end to end: a bad probe stops `guard serve` before the engine starts, and a real server behind an API
key answers hostile input with OpenAI-shaped 4xx, refuses requests without the key (401, the key never logged),
notices a client that leaves mid-stream, and keeps serving."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.e2e.launch import free_port, running_guard

MODEL = "smollm2"
SECRET = "quokka-91c2-unique"
API_KEY = "sk-e2e-wombat-5521"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _probe_for_another_model(out: Path) -> Path:
    from guard.conformal import MondrianConformal
    from guard.probe import ConformalCalibration, Probe, ProbeManifest

    labels, cal = ("true", "false", "neither"), [i / 20 for i in range(1, 20)]
    fitted = MondrianConformal.from_scores(0.1, [cal] * 3)
    calibration = ConformalCalibration(alpha=0.1, thresholds=dict(zip(labels, fitted.thresholds.tolist())),
                                       n_cal={label: len(cal) for label in labels},
                                       scores={label: cal for label in labels})
    manifest = ProbeManifest(kind="probe-for-another-model", labels=labels, layers=(3,), hidden_size=896, num_layers=24,
                             model_fingerprint="0123456789abcdef", conformal=calibration)
    zeros = np.zeros((1, 896), np.float32)
    return Probe(manifest, np.zeros((1, 3, 896), np.float32), np.zeros((1, 3), np.float32), zeros, zeros + 1).save(
        out / "probe")


def test_guard_serve_with_a_probe_for_another_model_exits_before_starting_the_engine(tmp_path):
    port = free_port()
    done = subprocess.run([sys.executable, "-m", "guard", "serve", "--port", str(port), "--probe",
                           str(_probe_for_another_model(tmp_path))], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "probe expects hidden_size=896 but model 'default' has 576" in done.stderr
    assert "guard calibrate" in done.stderr and "vLLM" not in done.stderr  # refused before vLLM started
    with socket.socket() as s:  # nothing is listening
        assert s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("hardening")
    config = tmp / "serve.yaml"
    config.write_text(f"served_model_name: {MODEL}\nmax_model_len: 256\nmax_num_seqs: 4\nmax_request_bytes: 65536\n"
                      f"on_guard_failure: fail_closed\napi_key: {API_KEY}\n")
    port = free_port()
    with running_guard(["serve", "--eager", "--no-gate", "--port", str(port), "--config", str(config)],
                       tmp / "serve.log", "serving", start_s=600) as process:
        yield f"http://127.0.0.1:{port}"
        log = (tmp / "serve.log").read_text(errors="replace")
    del process
    assert SECRET not in log  # no prompt text reached the log
    assert API_KEY not in log


def _chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "temperature": 0, **extra}


@pytest.mark.parametrize(("raw", "status", "param", "words"), [
    (b'{"model": "smollm2", "messages": "\xff"}', 400, None, "not valid UTF-8"),
    (json.dumps(_chat("a\ud800b")).encode(), 400, "messages[0].content", "lone UTF-16 surrogate"),
    (json.dumps(_chat("hi", max_tokens="ten")).encode(), 400, "max_tokens", "positive integer"),
    (json.dumps(_chat("hi", max_tokens=100_000)).encode(), 400, "max_tokens", "max"),  # vLLM's refusal, passed on
    (json.dumps(_chat("hi", guard={"mode": "loud"})).encode(), 400, "guard.mode", "guard.mode"),
])
def test_the_real_server_refuses_bad_input_in_openai_shape_and_keeps_serving(served, raw, status, param, words):
    answer = httpx.post(f"{served}/v1/chat/completions", content=raw,
                        headers={"content-type": "application/json", **AUTH}, timeout=60)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and words in error["message"]
    assert error["param"] == param
    ok = httpx.post(f"{served}/v1/chat/completions", json=_chat("Hi", max_tokens=4), headers=AUTH, timeout=120)
    assert ok.status_code == 200 and ok.json()["choices"][0]["guard"]["verified"] is True


def test_a_client_leaving_a_real_stream_is_counted_and_nothing_it_sent_reaches_metrics(served):
    body = _chat(f"Tell me a long story about {SECRET}.", max_tokens=200, stream=True)
    with httpx.stream("POST", f"{served}/v1/chat/completions", json=body, headers=AUTH, timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                break  # leave after the first event
    metrics = ""
    for _ in range(50):  # the server notices the close within a few chunks
        metrics = httpx.get(f"{served}/metrics", timeout=10).text
        if 'guard_client_disconnects_total{endpoint="chat_completions"} 1.0' in metrics \
                and "guard_requests_in_flight 0.0" in metrics:
            break
        httpx.get(f"{served}/healthz", timeout=10)  # a round trip: lets the server run its clean-up
    assert 'guard_client_disconnects_total{endpoint="chat_completions"} 1.0' in metrics
    assert "guard_requests_in_flight 0.0" in metrics and SECRET not in metrics


def test_the_api_key_is_required_on_model_routes_and_not_on_health_or_metrics(served):
    openai = pytest.importorskip("openai")
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/models", "/tokenize"):
        for headers in ({}, {"Authorization": "Bearer wrong-key"}):
            refused = httpx.post(f"{served}{path}", json=_chat("Hi", max_tokens=2), headers=headers, timeout=30)
            assert refused.status_code == 401, (path, refused.text)
            assert refused.json()["error"]["code"] == "invalid_api_key"
    for path in ("/healthz", "/health", "/metrics"):
        assert httpx.get(f"{served}{path}", timeout=30).status_code == 200, path
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{served}/v1", api_key="wrong-key", max_retries=0).models.list()
    client = openai.OpenAI(base_url=f"{served}/v1", api_key=API_KEY, max_retries=0, timeout=120)
    answer = client.chat.completions.create(**_chat("Hi", max_tokens=3))
    assert answer.choices[0].model_extra["guard"]["verified"] is True
