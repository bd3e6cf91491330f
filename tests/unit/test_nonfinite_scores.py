"""Non-finite scores are told apart: a request that did not steer means a broken engine (500
``engine_nonfinite``, ``/healthz`` turns 503 and stays so), one that steered diverged on its own (400
``steering_diverged``, the server stays healthy); both are counted by source."""

from __future__ import annotations

import math
from typing import Any

import pytest

from adapters.http.score_feed import ScoreFeed
from adapters.http.serve.steer import Steering
from tests.unit.fake_upstream import GOOD, MODEL, FakeUpstream, Script, events, run_app

NAN = (math.nan, math.nan, math.nan)
BROKEN = Script([("Paris", GOOD), (" is", NAN), (" in France.", GOOD)])
CLEAN = Script([("Paris", GOOD), (" is", GOOD), (" in France.", GOOD)])


def _serve(run: Any) -> FakeUpstream:
    fake = FakeUpstream(ScoreFeed(), {"broken": BROKEN, "clean": CLEAN})
    return run_app(fake, run, steering=Steering(0.5, "test-vector", max_strength=4.0))


def _chat(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": 8, **extra}


def _count(app: Any, source: str) -> float:
    value = app.state.guard.metrics.registry.get_sample_value("guard_nonfinite_scores_total", {"source": source})
    return value or 0.0


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_nonfinite_scores_of_an_unsteered_request_fail_it_and_turn_health_unhealthy_for_good(stream):
    async def run(client, fake, app):
        assert (await client.get("/healthz")).status_code == 200
        answer = await client.post("/v1/chat/completions", json=_chat("broken", stream=stream))
        error = events(answer.text)[-2]["error"] if stream else answer.json()["error"]
        assert (answer.status_code == 200 if stream else answer.status_code == 500)
        assert error["code"] == "engine_nonfinite" and "restart" in error["message"]
        assert _count(app, "unsteered") == 1 and _count(app, "steered") == 0
        health = await client.get("/healthz")
        assert health.status_code == 503 and "non-finite" in health.json()["upstream"]["detail"]
        assert (await client.post("/v1/chat/completions", json=_chat("clean"))).status_code == 200
        assert (await client.get("/healthz")).status_code == 503  # the KV cache may hold the poison: stays down

    _serve(run)


def test_nonfinite_scores_of_a_steered_request_refuse_it_and_leave_the_server_healthy():
    async def run(client, fake, app):
        body = _chat("broken", guard={"mode": "steer", "steer_how": "always", "steer_alpha": 0.5})
        answer = await client.post("/v1/chat/completions", json=body)
        error = answer.json()["error"]
        assert answer.status_code == 400 and error["code"] == "steering_diverged"
        assert error["param"] == "guard.steer_alpha"
        assert _count(app, "steered") == 1 and _count(app, "unsteered") == 0
        assert (await client.get("/healthz")).status_code == 200

    _serve(run)


@pytest.mark.parametrize("alpha", [4.5, -4.5, 1e30, 1e308])
def test_a_steering_strength_beyond_the_vectors_bound_is_refused_naming_the_range(alpha):
    async def run(client, fake, app):
        body = _chat("clean", guard={"mode": "steer", "steer_how": "always", "steer_alpha": alpha})
        answer = await client.post("/v1/chat/completions", json=body)
        error = answer.json()["error"]
        assert answer.status_code == 400 and error["code"] == "steer_alpha_out_of_range"
        assert error["param"] == "guard.steer_alpha" and "[-4, 4]" in error["message"]
        assert fake.requests == []  # nothing reached the engine

    _serve(run)


def test_a_strength_at_the_bound_is_served():
    async def run(client, fake, app):
        body = _chat("clean", guard={"mode": "steer", "steer_how": "always", "steer_alpha": -4.0})
        answer = await client.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200 and fake.requests[-1]["vllm_xargs"]["guard_steer"] == -4.0

    _serve(run)
