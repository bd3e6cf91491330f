"""The server's wire format and error shapes, and the score feed's asyncio waiting, without an app."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from adapters.http.errors import APIError, UpstreamError, from_upstream
from adapters.http.protocol import parse_body
from adapters.http.score_feed import ScoreFeed
from adapters.http.serve.protocol import guarded_request, hide_token_ids
from guard.scores import ScoreSegment

OPENAI_ERROR_FIELDS = {"message", "type", "param", "code"}


def test_errors_have_openai_shape():
    body = APIError(404, "The model `x` does not exist", param="model", code="model_not_found").body()
    assert body == {"error": {"message": "The model `x` does not exist", "type": "invalid_request_error",
                              "param": "model", "code": "model_not_found"}}
    upstream = UpstreamError("timeout", "slow", status=504)
    assert (upstream.status, upstream.body()["error"]["type"], upstream.body()["error"]["code"]) == \
        (504, "server_error", "upstream_timeout")


@pytest.mark.parametrize(("status", "content", "expected"), [
    (400, b'{"error": {"message": "too long", "type": "BadRequestError", "param": null, "code": 400}}',
     (400, "too long", "BadRequestError", None)),
    (422, b'{"detail": "field required"}', (422, "field required", "invalid_request_error", None)),
    (404, b"not json", (404, "upstream answered HTTP 404", "invalid_request_error", None)),
    (503, b'{"error": {"message": "overloaded"}}', (502, "overloaded", "server_error", "upstream_http_status")),
])
def test_upstream_errors_are_normalised_to_openai_shape(status, content, expected):
    err = from_upstream(status, content)
    body = err.body()["error"]
    assert set(body) == OPENAI_ERROR_FIELDS
    assert (err.status, expected[1] in body["message"], body["type"], body["code"]) == \
        (expected[0], True, expected[2], expected[3])


def test_a_request_goes_upstream_without_guard_with_a_fresh_key_and_token_ids():
    body = {"model": "m", "prompt": "hi", "guard": {"mode": "abstain", "alpha": 0.2}, "vllm_xargs": {"a": 1}}
    first, second = (guarded_request(body, "completions", "m", "flag") for _ in range(2))
    assert first.key != second.key and "guard" in body  # the client's body is left alone
    assert first.body == {"model": "m", "prompt": "hi", "vllm_xargs": {"a": 1, "guard_key": first.key},
                          "return_token_ids": True}
    assert (first.options.mode, first.options.alpha, first.stream, first.wants_token_ids) == (
        "abstain", 0.2, False, False)


@pytest.mark.parametrize(("extra", "param"), [
    ({"n": 3}, "n"),
    ({"best_of": 2}, "best_of"),
    ({"echo": True}, "echo"),
    ({"prompt": ["one", "two"]}, "prompt"),
    ({"prompt": [[1, 2], [3]]}, "prompt"),
    ({"vllm_xargs": "x"}, "vllm_xargs"),
    ({"vllm_xargs": {"guard_hidden": 1}}, "vllm_xargs.guard_hidden"),
])
def test_requests_the_guard_cannot_score_per_request_are_refused_naming_the_field(extra, param):
    with pytest.raises(APIError) as info:
        guarded_request({"model": "m", "prompt": "hi", **extra}, "completions", "m", "flag")
    assert (info.value.status, info.value.param) == (400, param)


def test_a_tokenised_prompt_is_one_prompt():
    assert guarded_request({"prompt": [1, 2, 3]}, "completions", "m", "flag").body["prompt"] == [1, 2, 3]


def test_hidden_token_ids_look_as_if_never_asked_for():
    answer = {"prompt_token_ids": [1], "choices": [{"token_ids": [2], "text": "x"}]}
    hide_token_ids(answer, stream=False)
    assert answer == {"prompt_token_ids": None, "choices": [{"token_ids": None, "text": "x"}]}
    chunk = {"choices": [{"token_ids": [2], "prompt_token_ids": [1], "text": "x"}]}
    hide_token_ids(chunk, stream=True)
    assert chunk == {"choices": [{"text": "x"}]}


@pytest.mark.parametrize("raw", [b"", b"nul", b"\xff\xfe", json.dumps("text").encode()])
def test_a_body_that_is_not_a_json_object_is_a_400(raw):
    with pytest.raises(APIError) as info:
        parse_body(raw)
    assert info.value.status == 400 and "JSON" in info.value.message


def _segment(key: str, start: int, n: int) -> list[ScoreSegment]:
    return [ScoreSegment(key, start, np.zeros((n, 1, 3), np.float32))]


def test_the_feed_wakes_a_waiter_when_another_thread_publishes():
    feed = ScoreFeed()

    async def main() -> tuple[bool, bool]:
        waiter = asyncio.create_task(feed.wait_for("k", 5, timeout=30))
        await asyncio.sleep(0)  # let the waiter register before the publish
        await asyncio.to_thread(feed.publish, _segment("k", 0, 3))
        assert not waiter.done()
        await asyncio.to_thread(feed.publish, _segment("k", 3, 2))
        return await waiter, await feed.wait_for("other", 1, timeout=0.01)

    assert asyncio.run(main()) == (True, False)


def test_scores_arriving_after_a_request_closed_are_dropped():
    feed = ScoreFeed()
    feed.publish(_segment("k", 0, 2))
    feed.close("k")
    feed.publish(_segment("k", 2, 1) + _segment("live", 0, 1))
    assert (feed.open_keys, feed.late_segments, feed.take("live").positions.tolist()) == (1, 1, [0])
