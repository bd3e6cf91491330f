"""The in-process stack benchmark runs guard serve's real app over the in-process transport with the shipped
artefacts, against a stand-in engine app. A tiny run; no timing asserted."""

from __future__ import annotations

import asyncio

from benchmarks.stack_cost import ARMS, LENGTHS, _body, _call, _Stack, run, summary_text


def test_a_tiny_stack_cost_run_measures_both_arms_at_both_lengths():
    record = run(requests=2, rounds=2)
    assert set(record["results"]) == set(ARMS)
    for res in record["results"].values():
        assert set(res["per_request_ms"]) == {str(n) for n in LENGTHS}
        assert all(len(v) == 2 for v in res["per_round_per_request_ms"].values())
    assert "evicted" in summary_text(record)


def test_the_guarded_path_of_the_stack_answers_with_the_guards_verdicts():
    stack, seen = _Stack(), []
    route, body = _body(1, 16, direct=False)

    async def go() -> None:
        original = stack.app

        async def app(scope, receive, send):  # keep what the guard sends this time
            async def keep(message):
                seen.append(message)
                await send(message)

            await original(scope, receive, keep)

        await _call(app, route, body)

    asyncio.run(go())
    text = b"".join(m.get("body", b"") for m in seen if m["type"] == "http.response.body").decode()
    assert seen[0]["status"] == 200 and '"guard"' in text and '"sentences"' in text and text.endswith("[DONE]\n\n")
