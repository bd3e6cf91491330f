"""A request's guard session: token positions, the one-step score lag, and waiting for the last scores."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from adapters.http.errors import UpstreamError
from adapters.http.score_feed import ScoreFeed
from adapters.http.serve.session import GuardSession
from guard.metrics import GuardMetrics
from guard.policy import GuardOptions
from guard.scores import ScoreSegment
from guard.verdicts import VerdictRule
from tests.unit.fake_upstream import BAD, GOOD, make_probe


def _session(feed: ScoreFeed, mode: str = "flag", timeout: float = 5.0) -> GuardSession:
    return GuardSession(VerdictRule.from_probe(make_probe()), GuardOptions(mode=mode), "k", feed, GuardMetrics(),
                        timeout)


def _publish(feed: ScoreFeed, start: int, probs: list[tuple[float, ...]]) -> None:
    feed.publish([ScoreSegment("k", start, np.log(np.array(probs, np.float32))[:, None, :])])


def test_a_chunk_of_several_tokens_gives_its_text_to_the_last_one_and_positions_follow_the_prompt():
    feed = ScoreFeed()
    session = _session(feed)
    session.start(10)
    _publish(feed, 0, [BAD] * 10)  # prompt positions: never fed to the guard
    session.add_chunk([5, 6], "Paris is")
    session.add_chunk([7], " fine.")
    _publish(feed, 10, [GOOD, GOOD])
    session.pull()
    assert [s.position for s in session.drain().token_scores] == [10, 11]
    assert session.n_gen == 3

    async def finish() -> None:
        _publish(feed, 12, [GOOD])  # position 12 is the last token here only because the chunk said so
        await session.finish()

    asyncio.run(finish())
    [verdict] = session.summary().sentences
    assert (verdict.first, verdict.last, verdict.verdict) == (11, 12, "supported")


def test_finish_waits_for_the_scores_still_in_flight_and_not_for_the_last_token():
    feed = ScoreFeed()
    session = _session(feed)
    session.start(3)
    session.add_pieces(["Bad", " claim", ".", ""])  # "" is the end-of-sequence token: never scored

    async def main() -> None:
        _publish(feed, 3, [BAD, BAD])
        waiter = asyncio.create_task(session.finish())
        await asyncio.sleep(0)
        assert not waiter.done()  # position 5 (".") is still in flight
        await asyncio.to_thread(_publish, feed, 5, [BAD])
        await waiter

    asyncio.run(main())
    assert session.scores_complete and session.summary().decision == "flag"


def test_finish_gives_up_after_the_score_timeout_and_says_so():
    feed = ScoreFeed()
    session = _session(feed, timeout=0.01)
    session.start(3)
    session.add_pieces(["Lost", " score", "."])
    asyncio.run(session.finish())
    assert not session.scores_complete and session.summary().sentences[0].verdict == "unscored"


def test_tokens_before_the_prompt_length_are_an_upstream_protocol_error():
    with pytest.raises(UpstreamError, match="return_token_ids"):
        _session(ScoreFeed()).add_chunk([1], "x")
