"""Reading a JSON body strictly: an explicit nesting limit and finite numbers only.

Python's parser accepts what JSON does not (``NaN``, ``Infinity``, ``-Infinity``; ``1e999``
becomes ``inf``), and how deep it nests depends on the interpreter's recursion limit, which other
libraries raise or lower at run time. A body is therefore checked before it is parsed, the same
way on every machine: at most :data:`MAX_DEPTH` nested arrays and objects, and every number
finite. A refusal names the field (``temperature``, ``guard.steer_alpha``), the value and the fix;
the check costs two ``bytes.count`` calls for a body with few brackets and nothing per number
unless a non-finite one was seen.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["MAX_DEPTH", "JSONBodyError", "load_json"]

#: the deepest nesting of arrays and objects a body may have (OpenAI requests, tool schemas included, need ~20)
MAX_DEPTH = 64
#: a JSON string (escapes included) or one bracket: the tokens that decide the nesting depth
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_OPEN = frozenset(b"[{")


class JSONBodyError(ValueError):
    """A body that is not strict JSON; ``param`` names the offending field when there is one."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class _NonFinite(float):
    """A non-finite number as the parser met it, with its spelling (``NaN``, ``1e999``)."""

    spelling: str


def load_json(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``raw`` as strict JSON.

    Raises:
        JSONBodyError: nested deeper than ``max_depth``, or a number is NaN or infinite (the message
            names the field); :class:`ValueError` (``json.JSONDecodeError``, ``UnicodeDecodeError``):
            not JSON at all.

    Example:
        >>> load_json(b'{"temperature": NaN}')  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        adapters.http.json_body.JSONBodyError: temperature=NaN is invalid: JSON numbers must be finite (NaN, ...
    """
    data = raw.encode() if isinstance(raw, str) else raw
    _check_depth(data, max_depth)
    seen: list[_NonFinite] = []
    try:
        value = json.loads(data, parse_constant=lambda s: _marked(s, seen), parse_float=lambda s: _float(s, seen))
    except RecursionError as exc:  # only when the interpreter's limit is below max_depth plus the caller's frames
        raise JSONBodyError(_too_deep(max_depth)) from exc
    if seen:
        path, bad = _find(value)
        raise JSONBodyError(f"{path or 'the body'}={bad.spelling} is invalid: JSON numbers must be finite (NaN, "
                            "Infinity and numbers beyond 1.8e308 are not JSON); send a finite number",
                            param=path or None)
    return value


def _check_depth(data: bytes, max_depth: int) -> None:
    if data.count(b"[") + data.count(b"{") <= max_depth:  # cannot nest deeper: no scan
        return
    depth = 0
    for token in _TOKENS.finditer(data):
        first = token.group()[0]
        if first in _OPEN:
            depth += 1
            if depth > max_depth:
                raise JSONBodyError(_too_deep(max_depth))
        elif first != 0x22:  # a closing bracket; strings do not count
            depth -= 1


def _too_deep(max_depth: int) -> str:
    return (f"the request body nests arrays or objects more than {max_depth} levels deep; send a flatter JSON object "
            'such as {"model": "...", "messages": [...]}')


def _float(spelling: str, seen: list[_NonFinite]) -> float:
    number = float(spelling)
    return number if math.isfinite(number) else _marked(spelling, seen)


def _marked(spelling: str, seen: list[_NonFinite]) -> _NonFinite:
    """A non-finite number (``NaN``, ``-Infinity``, ``1e999``) remembered with its spelling, shortened."""
    number = _NonFinite(spelling.replace("Infinity", "inf"))
    number.spelling = spelling if len(spelling) <= 24 else spelling[:21] + "..."
    seen.append(number)
    return number


def _find(value: Any) -> tuple[str, _NonFinite]:
    """The path (``messages[0].logit_bias.42``) and the first non-finite number in ``value``; iterative."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, _NonFinite):
            return path, item
        if isinstance(item, dict):
            stack.extend((f"{path}.{k}" if path else str(k), v) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(item))))
    raise AssertionError("a non-finite number was parsed but is not in the value")  # pragma: no cover
