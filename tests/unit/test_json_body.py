"""Strict JSON bodies: the nesting limit is the same whatever the interpreter's recursion limit, and no
non-finite number gets through (the refusal names the field)."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.http.json_body import MAX_DEPTH, JSONBodyError, load_json


@pytest.fixture(params=[200, 20_000], ids=["recursion_limit_lowered", "recursion_limit_raised"])
def recursion_limit(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the test under a low and a high interpreter recursion limit (as torch's inductor sets it)."""
    before = sys.getrecursionlimit()
    frames = len(_frames())
    sys.setrecursionlimit(frames + request.param)
    try:
        yield request.param
    finally:
        sys.setrecursionlimit(before)


def _frames() -> list[object]:
    frame, out = sys._getframe(), []
    while frame is not None:
        out.append(frame)
        frame = frame.f_back
    return out


def _nested(depth: int) -> bytes:
    return b'{"a": ' + b"[" * (depth - 1) + b"1" + b"]" * (depth - 1) + b"}"


def test_a_body_at_the_depth_limit_parses_under_any_recursion_limit(recursion_limit: int) -> None:
    value = load_json(_nested(MAX_DEPTH))
    for _ in range(MAX_DEPTH - 1):
        value = value["a"] if isinstance(value, dict) else value[0]
    assert value == [1] or value == 1


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1_000, 100_000])
def test_a_body_past_the_depth_limit_is_refused_under_any_recursion_limit(recursion_limit: int, depth: int) -> None:
    with pytest.raises(JSONBodyError, match=f"more than {MAX_DEPTH} levels deep"):
        load_json(_nested(depth))


def test_brackets_inside_strings_do_not_count_towards_the_depth() -> None:
    text = "[{" * 500 + '\\"' + "]}" * 10
    body = json.dumps({"messages": [{"role": "user", "content": text}]}).encode()
    assert load_json(body)["messages"][0]["content"] == text


def test_many_sibling_objects_are_not_deep() -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}] * 3000}).encode()
    assert len(load_json(body)["messages"]) == 3000


@pytest.mark.parametrize(("raw", "param", "spelling"), [
    (b'{"temperature": NaN}', "temperature", "NaN"),
    (b'{"top_p": Infinity}', "top_p", "Infinity"),
    (b'{"a": {"b": [0, 1, -Infinity]}}', "a.b[2]", "-Infinity"),
    (b'{"x": 1e999}', "x", "1e999"),
    (b'{"x": -1E+400}', "x", "-1E+400"),
    (b'[NaN]', "[0]", "NaN"),
])
def test_a_non_finite_number_is_refused_naming_its_field(raw: bytes, param: str, spelling: str) -> None:
    with pytest.raises(JSONBodyError) as caught:
        load_json(raw)
    assert caught.value.param == param and f"{param}={spelling} is invalid" in str(caught.value)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_finite_numbers_round_trip_exactly(number: float) -> None:
    parsed = load_json(json.dumps({"x": number}))["x"]
    assert parsed == number and math.copysign(1, parsed) == math.copysign(1, number) and type(parsed) is float


def test_largest_finite_float_and_negative_zero_are_accepted() -> None:
    assert load_json(b'{"a": 1e308, "b": -0.0, "c": 1.7976931348623157e308}') == {"a": 1e308, "b": -0.0,
                                                                                  "c": 1.7976931348623157e308}
