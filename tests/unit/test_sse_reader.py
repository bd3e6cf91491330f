"""The upstream's event stream is read as the SSE standard says (:mod:`adapters.http.sse_decoder`), not line by line."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from adapters.http.errors import UpstreamError
from adapters.http.sse import EventSource


def _response(body: bytes, content_type: str = "text/event-stream", pieces: int = 7) -> httpx.Response:
    """A streamed response whose body arrives in ``pieces`` arbitrary cuts (events split across reads)."""
    step = max(1, len(body) // pieces)
    parts = [body[i : i + step] for i in range(0, len(body), step)]

    async def stream() -> object:
        for part in parts:
            yield part

    return httpx.Response(200, headers={"content-type": content_type}, content=stream())  # type: ignore[arg-type]


def _read(body: bytes, **kw: object) -> tuple[list[str], bool]:
    async def run() -> tuple[list[str], bool]:
        source = EventSource(_response(body, **kw), "the upstream")  # type: ignore[arg-type]
        return [d async for d in source.payloads()], source.done

    return asyncio.run(run())


def test_multi_line_data_fields_are_joined_into_one_event() -> None:
    body = b'data: {"a":\ndata: 1}\n\ndata: [DONE]\n\n'
    data, done = _read(body)
    assert [json.loads(d) for d in data] == [{"a": 1}] and done


def test_comments_ids_retry_and_crlf_line_ends_are_read_as_sse_fields() -> None:
    body = b': keep-alive\r\nid: 7\r\nretry: 100\r\ndata: {"x": 2}\r\n\r\ndata: [DONE]\r\n\r\n'
    assert _read(body) == (['{"x": 2}'], True)


def test_an_error_event_comes_out_as_the_upstreams_error_object() -> None:
    body = (b'data: {"x": 1}\n\nevent: error\ndata: {"message": "engine died", "code": 500}\n\n'
            b'event: error\ndata: plain words\n\nevent: error\ndata: {"error": {"message": "kept"}}\n\n')
    data, done = _read(body)
    assert json.loads(data[0]) == {"x": 1} and not done
    assert json.loads(data[1]) == {"error": {"message": "engine died", "code": 500}}
    assert json.loads(data[2])["error"]["message"] == "plain words"
    assert json.loads(data[3]) == {"error": {"message": "kept"}}


def test_named_events_other_than_message_and_empty_data_carry_no_chunk() -> None:
    body = b'event: ping\ndata: {}\n\ndata:\n\nevent: message\ndata: {"y": 3}\n\ndata: [DONE]\n\ndata: {"late": 1}\n\n'
    assert _read(body) == (['{"y": 3}'], True)  # nothing after [DONE] is read


def test_a_stream_that_ends_without_done_says_so() -> None:
    assert _read(b'data: {"z": 4}\n\n') == (['{"z": 4}'], False)


def test_a_streamed_answer_that_is_not_an_event_stream_is_a_protocol_error_naming_the_upstream() -> None:
    with pytest.raises(UpstreamError) as info:
        _read(b'{"not": "sse"}', content_type="application/json")
    assert info.value.kind == "protocol" and "the upstream" in str(info.value) and "event stream" in str(info.value)


def test_a_gzip_encoded_event_stream_is_decompressed_before_it_is_parsed() -> None:
    import gzip

    body = gzip.compress(b'data: {"g": 5}\n\ndata: [DONE]\n\n')

    async def run() -> tuple[list[str], bool]:
        response = httpx.Response(200, headers={"content-type": "text/event-stream; charset=utf-8",
                                                "content-encoding": "gzip"}, content=body)
        source = EventSource(response, "the upstream")
        return [d async for d in source.payloads()], source.done

    assert asyncio.run(run()) == (['{"g": 5}'], True)


# --- the decoder itself, against the standard's line-by-line interpretation, with the bytes cut anywhere


def _reference(stream: str) -> list[tuple[str, str]]:
    """The WHATWG "interpret an event stream" algorithm, line by line (slow and plain)."""
    import re

    stream = stream.removeprefix("\ufeff")
    lines = re.split(r"\r\n|\r|\n", stream)
    complete = lines[:-1]  # the last piece has no line end yet: an unfinished line is never interpreted
    events, name, data = [], "", []
    for line in complete:
        if line == "":
            if data:
                events.append((name or "message", "\n".join(data)))
            name, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, colon, value = line.partition(":")
        value = value[1:] if colon and value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    return events


def _decode(stream: bytes, cuts: list[int]) -> list[tuple[str, str]]:
    from adapters.http.sse_decoder import SSEDecoder

    decoder, out, last = SSEDecoder(), [], 0
    for cut in sorted(set(cuts)) + [len(stream)]:
        out += decoder.feed(stream[last:cut])
        last = cut
    return out


_LINES = ["data: {\"a\": 1}", "data:x", "data", "data: ", ": comment", "event: ping", "event:", "id: 7", "retry: 9",
          "", "", "data: é ü", "field without colon", "data:  two spaces", "event: error", "data: [DONE]"]


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
def test_the_decoder_reads_every_line_end_and_field_as_the_standard_says(end: str) -> None:
    text = "\ufeff" + end.join(_LINES) + end + end
    assert _decode(text.encode(), []) == _reference(text)


def test_the_decoder_agrees_with_the_standard_however_the_bytes_are_cut() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from(_LINES), st.sampled_from(["\n", "\r\n", "\r"])), max_size=30),
           st.lists(st.integers(0, 400), max_size=12))
    def check(lines: list[tuple[str, str]], cuts: list[int]) -> None:
        text = "".join(line + end for line, end in lines)
        stream = text.encode()
        assert _decode(stream, [c for c in cuts if c <= len(stream)]) == _reference(text)

    check()


def test_an_event_cut_inside_a_multibyte_character_comes_out_whole() -> None:
    stream = 'data: {"t": "café 東京"}\n\n'.encode()
    cut = stream.index("東".encode()) + 1
    assert _decode(stream, [cut]) == [("message", '{"t": "café 東京"}')]
