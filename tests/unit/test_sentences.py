"""Incremental sentence segmentation: exact partition of the text, tokenisation invariance, the usual traps."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guard.errors import AdapterError
from guard.sentences import Sentence, SentenceSplitter

ALPHABET = "abcXYZ019 .!?…\n\"')(,:e.gDrMU.S"


def _split(tokens: list[str], start: int = 0) -> list[Sentence]:
    splitter = SentenceSplitter()
    out = []
    for i, token in enumerate(tokens):
        out += splitter.feed(start + i, token)
    return out + splitter.finish()


def _texts(text: str) -> list[str]:
    return [s.text for s in _split(list(text))]


@st.composite
def _tokenised(draw: st.DrawFn) -> tuple[str, list[str]]:
    text = draw(st.text(alphabet=ALPHABET, max_size=80))
    cuts = sorted(draw(st.sets(st.integers(0, len(text)), max_size=30)))
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in zip(bounds, bounds[1:])]  # may include empty tokens


@settings(max_examples=300, deadline=None)
@given(case=_tokenised())
def test_sentences_partition_the_text_exactly_for_any_tokenisation(case):
    text, tokens = case
    sentences = _split(tokens, start=100)
    assert "".join(s.text for s in sentences) == text
    assert [s.text for s in sentences] == _texts(text)  # the same sentences as one character per token
    assert [s.index for s in sentences] == list(range(len(sentences)))
    offset, previous_last = 0, 100
    for s in sentences:
        assert (s.start, s.end) == (offset, offset + len(s.text)) and s.text
        assert previous_last <= s.first <= s.last < 100 + len(tokens)
        offset, previous_last = s.end, s.last


@pytest.mark.parametrize(("text", "expected"), [
    ("Pi is 3.14. Yes!", ["Pi is 3.14. ", "Yes!"]),
    ("See e.g. the list. Or i.e. this. Done", ["See e.g. the list. ", "Or i.e. this. ", "Done"]),
    ("Dr. Smith met Mr. Jones. They spoke.", ["Dr. Smith met Mr. Jones. ", "They spoke."]),
    ("The U.S. Army is big. J. Smith agrees.", ["The U.S. Army is big. ", "J. Smith agrees."]),
    ("Well... maybe not. Fine… ok then. Done.", ["Well... maybe not. ", "Fine… ok then. ", "Done."]),
    ("Wait... Really? Yes!", ["Wait... ", "Really? ", "Yes!"]),
    ('He said "stop." Then left.', ['He said "stop." ', "Then left."]),
    ("Title\n\n1. First item.\n2. Second", ["Title\n\n", "1. First item.\n", "2. Second"]),
    ("  Leading space. Trailing space.  ", ["  Leading space. ", "Trailing space.  "]),
    ("no terminator at all", ["no terminator at all"]),
])
def test_sentences_close_at_terminators_and_not_at_decimals_abbreviations_or_inner_ellipses(text, expected):
    assert _texts(text) == expected


def test_a_sentence_closes_only_when_the_next_sentence_begins():
    splitter = SentenceSplitter()
    assert splitter.feed(0, "It is.") == []
    assert splitter.feed(1, " ") == []  # "it is. and..." would continue the sentence
    [closed] = splitter.feed(2, "Next")
    assert (closed.text, closed.first, closed.last) == ("It is. ", 0, 0)
    [rest] = splitter.finish()
    assert (rest.text, rest.first, rest.last, rest.start) == ("Next", 2, 2, 7)


def test_token_positions_skip_whitespace_so_a_sentence_ends_at_its_terminator_token():
    s0, s1 = _split(["A", " cat", ".", " The", " end", "."], start=10)
    assert (s0.text, s0.first, s0.last) == ("A cat. ", 10, 12)  # " The" holds its space, not its content
    assert (s1.text, s1.first, s1.last) == ("The end.", 13, 15)


def test_out_of_order_positions_and_feeding_after_finish_are_refused():
    splitter = SentenceSplitter()
    splitter.feed(5, "a")
    with pytest.raises(AdapterError, match="position 5 is not after the previous one"):
        splitter.feed(5, "b")
    splitter.finish()
    with pytest.raises(AdapterError, match="after finish"):
        splitter.feed(6, "c")


def test_empty_text_gives_no_sentence_and_whitespace_only_text_one():
    assert _texts("") == []
    assert _texts(" \n ") == [" \n "]


@pytest.mark.parametrize(("text", "expected"), [
    ("北京是中国的首都。上海是最大的城市！你知道吗？", ["北京是中国的首都。", "上海是最大的城市！", "你知道吗？"]),
    ("東京は日本の首都です。「本当？」と彼は聞いた。", ["東京は日本の首都です。", "「本当？」", "と彼は聞いた。"]),
    ("他说：“对。”然后走了。", ["他说：“对。”", "然后走了。"]),
    ("真的吗？！是的。 好", ["真的吗？！", "是的。 ", "好"]),
    ("दिल्ली भारत की राजधानी है। मुंबई बड़ा शहर है।", ["दिल्ली भारत की राजधानी है। ", "मुंबई बड़ा शहर है।"]),
    ("The capital is 北京。Paris is in France.", ["The capital is 北京。", "Paris is in France."]),
])
def test_scripts_without_spaces_between_sentences_split_at_their_own_terminators(text, expected):
    assert _texts(text) == expected
    assert [s.text for s in _split([text])] == expected  # one token or one character per token: the same


CJK_ALPHABET = "北京是首都。！？」「“”।؟ ab.\n"


@st.composite
def _tokenised_cjk(draw: st.DrawFn) -> tuple[str, list[str]]:
    text = draw(st.text(alphabet=CJK_ALPHABET, max_size=60))
    cuts = sorted(draw(st.sets(st.integers(0, len(text)), max_size=20)))
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in zip(bounds, bounds[1:])]


@settings(max_examples=300, deadline=None)
@given(case=_tokenised_cjk())
def test_cjk_sentences_partition_the_text_exactly_for_any_tokenisation(case):
    text, tokens = case
    sentences = _split(tokens)
    assert "".join(s.text for s in sentences) == text
    assert [s.text for s in sentences] == _texts(text)
