"""Pluggable splitters: a request picks an installed splitter by name (guard.split); packages add more."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import guard.splitters as splitters
from adapters.http.score_feed import ScoreFeed
from guard.conformal import MondrianConformal
from guard.errors import ConfigError, RequestOptionError
from guard.options import GuardOptions, parse_guard_options
from guard.policy import StreamGuard
from guard.sentences import LineSplitter, Sentence, SentenceSplitter
from guard.verdicts import VerdictRule
from tests.unit.fake_upstream import BAD, GOOD, MODEL, FakeUpstream, Script, run_app


class ClauseSplitter:
    """A plugin's splitter (loaded through an entry point in the tests): a unit ends after every ", "."""

    def __init__(self) -> None:
        self.index, self.start, self.text = 0, 0, ""
        self.first: int | None = None
        self.last = 0

    def feed(self, position: int, text: str) -> list[Sentence]:
        closed = []
        for ch in text:
            self.first = position if self.first is None else self.first
            self.text, self.last = self.text + ch, position
            if self.text.endswith(", "):
                closed.append(self._close())
        return closed

    def finish(self) -> list[Sentence]:
        return [self._close()] if self.text else []

    def _close(self) -> Sentence:
        assert self.first is not None
        out = Sentence(self.index, self.text, self.start, self.start + len(self.text), self.first, self.last)
        self.index, self.start, self.text, self.first = self.index + 1, out.end, "", None
        return out


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> list[EntryPoint]:
    """Entry points the splitter registry will find (a fresh registry: built-ins only)."""
    found: list[EntryPoint] = []
    monkeypatch.setattr(splitters, "_REGISTERED", dict(splitters._REGISTERED))
    monkeypatch.setattr(splitters, "_PLUGINS_LOADED", False)
    monkeypatch.setattr(splitters, "entry_points", lambda group: [p for p in found if p.group == group])
    return found


def _texts(splitter: Any, tokens: list[str]) -> list[str]:
    out = [s.text for i, t in enumerate(tokens) for s in splitter.feed(i, t)]
    return out + [s.text for s in splitter.finish()]


def test_the_line_splitter_cuts_at_line_breaks_only() -> None:
    tokens = ["1. Paris", " is big. It", " is old.\n", "2", ". Rome! Yes?\n\n", "Done."]
    assert _texts(LineSplitter(), tokens) == ["1. Paris is big. It is old.\n", "2. Rome! Yes?\n\n", "Done."]
    assert len(_texts(SentenceSplitter(), tokens)) > 3


@given(st.lists(st.text(alphabet="ab .!?\n。", max_size=6), max_size=12))
def test_the_line_splitter_partitions_the_text_exactly(tokens: list[str]) -> None:
    texts = _texts(LineSplitter(), tokens)
    assert "".join(texts) == "".join(tokens)
    assert all("\n" not in t.strip() for t in texts)  # a line break between words always ends a unit


def _rule() -> VerdictRule:
    scores = [[i / 20 for i in range(1, 20)]] * 2
    return VerdictRule(("true", "false"), "last", MondrianConformal.from_scores(0.1, scores))


def test_a_request_picks_the_line_splitter_and_gets_one_verdict_per_line() -> None:
    for split, n in (("sentences", 4), ("lines", 2)):
        guard = StreamGuard(_rule(), GuardOptions(split=split))
        for i, text in enumerate(["A is b. C is d.\n", "E is f. G is h."]):
            guard.add_text(i, text)
            guard.add_probs(i, np.array([0.9, 0.1]))
        guard.finish()
        assert len(guard.summary().sentences) == n, split


def test_an_unknown_splitter_is_refused_naming_the_field_and_the_installed_ones() -> None:
    with pytest.raises(RequestOptionError) as info:
        parse_guard_options({"split": "clauses"})
    assert info.value.param == "guard.split"
    assert '"clauses"' in str(info.value) and "'sentences', 'lines'" in str(info.value)
    with pytest.raises(RequestOptionError):
        parse_guard_options({"split": ""})


def test_a_packages_entry_point_adds_a_splitter_that_requests_can_name(plugins: list[EntryPoint]) -> None:
    plugins.append(EntryPoint("clauses", f"{__name__}:ClauseSplitter", splitters.ENTRY_POINT_GROUP))
    plugins.append(EntryPoint("other-group", f"{__name__}:ClauseSplitter", "something.else"))
    assert splitters.splitter_names() == ("sentences", "lines", "clauses")
    guard = StreamGuard(_rule(), parse_guard_options({"split": "clauses"}))
    text = "Paris, Rome and Oslo."
    guard.add_text(0, text)
    guard.add_probs(0, np.array([0.9, 0.1]))
    guard.finish()
    assert [(s.start, s.end) for s in guard.summary().sentences] == [(0, 7), (7, len(text))]


def test_a_broken_plugin_fails_loudly_naming_its_entry_point(plugins: list[EntryPoint]) -> None:
    plugins.append(EntryPoint("broken", "no_such_module_here:Splitter", splitters.ENTRY_POINT_GROUP))
    with pytest.raises(ConfigError, match="'broken' of entry point 'no_such_module_here:Splitter'"):
        splitters.splitter_names()


def test_a_name_cannot_be_registered_twice_for_different_factories(plugins: list[EntryPoint]) -> None:
    splitters.register_splitter("clauses", ClauseSplitter)
    splitters.register_splitter("clauses", ClauseSplitter)  # the same factory again: fine
    with pytest.raises(ConfigError, match="already taken"):
        splitters.register_splitter("lines", ClauseSplitter)


def test_guard_serve_judges_the_lines_a_request_asks_for() -> None:
    script = Script([("A", GOOD), (" is", GOOD), (" b.", GOOD), (" C", BAD), (" d.\n", BAD), ("E", GOOD), (".", GOOD)])

    async def run(client: Any, fake: Any, app: Any) -> None:
        verdicts = {}
        for split in ("sentences", "lines"):
            body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "guard": {"split": split}}
            choice = (await client.post("/v1/chat/completions", json=body)).json()["choices"][0]
            content = choice["message"]["content"]
            verdicts[split] = [(content[s["start"]:s["end"]], s["verdict"]) for s in choice["guard"]["sentences"]]
        assert verdicts["sentences"] == [("A is b. ", "supported"), ("C d.\n", "flagged"), ("E.", "supported")]
        assert verdicts["lines"] == [("A is b. C d.\n", "flagged"), ("E.", "supported")]
        bad = await client.post("/v1/chat/completions", json={**body, "guard": {"split": "words"}})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "guard.split"

    run_app(FakeUpstream(ScoreFeed(), {"x": script}), run)


def test_a_broken_plugin_stops_the_server_before_it_listens(plugins: list[EntryPoint]) -> None:
    plugins.append(EntryPoint("broken", "no_such_module_here:Splitter", splitters.ENTRY_POINT_GROUP))

    async def run(client: Any, fake: Any, app: Any) -> None:
        raise AssertionError("the app was built")

    with pytest.raises(ConfigError, match="'broken'"):
        run_app(FakeUpstream(ScoreFeed(), {}), run)
