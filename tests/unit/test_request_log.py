"""Request ids and the access log: an id for every request (the client's when plausible), returned and forwarded
upstream with the trace context; one content-free access line per request; text or JSON logs."""

from __future__ import annotations

import json
import logging
import re

import pytest

from adapters.http.logs import configure_logging
from adapters.http.proxy.router import upstream_headers
from adapters.http.request_log import ACCESS_LOGGER
from adapters.http.score_feed import ScoreFeed
from adapters.http.settings import ProxySettings
from tests.unit.fake_upstream import GOOD, MODEL, FakeUpstream, Script, run_app

SECRET = "platypus-7731-unique"
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _fake() -> FakeUpstream:
    return FakeUpstream(ScoreFeed(), {"q": Script([("Paris", GOOD), (".", GOOD)], n_prompt=2)})


def _chat(**extra):
    return {"model": MODEL, "messages": [{"role": "user", "content": "q"}], **extra}


def test_a_request_gets_an_id_returned_to_the_client_and_forwarded_upstream_with_its_trace_context():
    seen = {}

    async def run(client, fake, app):
        mine = await client.post("/v1/chat/completions", json=_chat(),
                                 headers={"x-request-id": "client-id-42", "traceparent": TRACE})
        fresh = await client.post("/v1/chat/completions", json=_chat(stream=True))
        odd = await client.post("/v1/chat/completions", json=_chat(), headers={"x-request-id": "bad id\twith space"})
        seen.update(mine=mine.headers["x-request-id"], fresh=fresh.headers["x-request-id"],
                    odd=odd.headers["x-request-id"], upstream=fake.headers)

    run_app(_fake(), run)
    assert seen["mine"] == "client-id-42"
    assert re.fullmatch(r"[0-9a-f]{32}", seen["fresh"]) and re.fullmatch(r"[0-9a-f]{32}", seen["odd"])
    assert seen["fresh"] != seen["odd"]
    upstream = seen["upstream"]
    assert upstream[0]["x-request-id"] == "client-id-42" and upstream[0]["traceparent"] == TRACE
    assert upstream[1]["x-request-id"] == seen["fresh"] and "traceparent" not in upstream[1]
    assert upstream[2]["x-request-id"] == seen["odd"]


def test_the_access_line_names_route_status_latency_and_id_and_nothing_the_client_sent(caplog):
    async def run(client, fake, app):
        await client.post("/v1/chat/completions", json=_chat(user=SECRET), headers={"x-request-id": "id-1",
                                                                                     "authorization": SECRET})
        await client.post(f"/v1/{SECRET}", json={})
        await client.get("/healthz")

    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        run_app(_fake(), run)
    lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER]
    assert len(lines) == 2  # /healthz: debug only
    assert re.fullmatch(r"POST /v1/chat/completions 200 \d+\.\dms request_id=id-1", lines[0])
    assert re.fullmatch(r"POST other 404 \d+\.\dms request_id=[0-9a-f]{32}", lines[1])
    assert SECRET not in caplog.text


def test_the_access_log_can_be_switched_off(caplog):
    async def run(client, fake, app):
        await client.post("/v1/chat/completions", json=_chat())

    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        run_app(_fake(), run, access_log=False)
    assert not [r for r in caplog.records if r.name == ACCESS_LOGGER]


def test_guard_proxy_forwards_the_request_id_and_trace_context_to_the_foreign_api():
    settings = ProxySettings.build(upstream="http://127.0.0.1:9000")
    forwarded = upstream_headers({"x-request-id": "abc", "traceparent": TRACE, "cookie": "no"}, settings)
    assert forwarded == {"x-request-id": "abc", "traceparent": TRACE}


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_guards_log_has_timestamps_or_is_one_json_object_per_line(fmt, capsys):
    logger = logging.getLogger("guard")
    level, propagate = logger.level, logger.propagate
    handler = configure_logging("info", fmt)
    try:
        logging.getLogger("guard.server").info("the engine started")
        logging.getLogger("guard.server").debug("not shown at info")
        err = capsys.readouterr().err.strip().splitlines()
    finally:  # as it was: other tests read the guard loggers through the root logger
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    assert len(err) == 1
    if fmt == "json":
        record = json.loads(err[0])
        assert record["message"] == "the engine started" and record["level"] == "INFO"
        assert record["logger"] == "guard.server" and record["asctime"]
    else:
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO guard.server: the engine started$", err[0])
