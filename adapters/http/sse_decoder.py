"""Server-sent events decoded from raw bytes, as the standard (WHATWG HTML, "event stream interpretation") says.

:class:`SSEDecoder` turns the bytes of a response, cut anywhere, into ``(event, data)`` pairs: lines end with
LF, CRLF or CR; an empty line dispatches the event; ``data`` fields are joined by newlines; a line starting with
``:`` is a comment; ``event`` names the event (``message`` by default); other fields (``id``, ``retry``, unknown
ones) carry no data; an event without data is not dispatched; an unfinished event at the end is dropped.

It is the relays' hot path (one call per streamed chunk): an event that is one ``data: ...`` line, what vLLM and
OpenAI send, is cut out of the buffer with one search and one slice; anything else takes the general path.
"""

from __future__ import annotations

__all__ = ["SSEDecoder"]

_DATA = b"data: "
_END = b"\n\n"


class SSEDecoder:
    """Incremental event-stream decoder.

    Example:
        >>> decoder = SSEDecoder()
        >>> decoder.feed(b'data: {"a": 1}\\n\\nevent: ping\\ndata: x\\r\\n\\r\\ndata: [DO')
        [('message', '{"a": 1}'), ('ping', 'x')]
        >>> decoder.feed(b'NE]\\n\\n')
        [('message', '[DONE]')]
    """

    __slots__ = ("_buffer", "_cr", "_lf_after_cr", "_started")

    def __init__(self) -> None:
        self._buffer = b""
        self._cr = False  #: the stream has used CR line ends: every later read is normalised to LF
        self._lf_after_cr = False  #: the last read ended with CR: an LF opening the next one is its CRLF's
        self._started = False

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        """The events that ``data`` completes, in order."""
        if not self._started:
            self._started = True
            if data.startswith(b"\xef\xbb\xbf"):  # a byte-order mark opening the stream is not content
                data = data[3:]
        if self._cr or b"\r" in data:
            self._cr = True
            if self._lf_after_cr and data.startswith(b"\n"):
                data = data[1:]
            self._lf_after_cr = data.endswith(b"\r")
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer + data if self._buffer else data
        events: list[tuple[str, str]] = []
        start = 0
        while (end := buffer.find(_END, start)) >= 0:
            if buffer.startswith(_DATA, start) and buffer.find(b"\n", start, end) < 0:
                events.append(("message", buffer[start + 6 : end].decode("utf-8", "replace")))
            elif (event := _event(buffer[start:end])) is not None:
                events.append(event)
            start = end + 2
            while start < len(buffer) and buffer[start] == 10:  # more blank lines dispatch nothing
                start += 1
        self._buffer = buffer[start:] if start else buffer
        return events


def _event(block: bytes) -> tuple[str, str] | None:
    """One event's lines (LF-separated, no blank line inside) -> ``(event, data)``, or ``None`` without data."""
    name, data, has_data = "message", [], False
    for raw in block.split(b"\n"):
        line = raw.decode("utf-8", "replace")
        if not line or line.startswith(":"):
            continue
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
            has_data = True
        elif field == "event":
            name = value or "message"
    return (name, "\n".join(data)) if has_data else None
