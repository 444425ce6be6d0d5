"""Read a circle export without building all its records at once (issue 16 case 8).

`json.loads` of a 60 MB export builds every record as Python objects (about
400 MB for 100k needs) before import even starts, and the import's plan then
held a converted copy of each. Here the file's text is scanned once: the
small top-level fields are decoded, and each collection's records are kept
only as (start, end) offsets into the text. `Rows` decodes one record when
asked, so validation and writing each hold one record at a time, and the
text is held once.

Same answers as `json.loads` for a valid file (the last of duplicate keys
wins); invalid JSON raises `json.JSONDecodeError` with the line and column
in the whole file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any, overload

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class Rows(Sequence[Any]):
    """A collection's records, decoded one at a time from the export's text."""

    __slots__ = ("_text", "_spans")

    def __init__(self, text: str, spans: list[tuple[int, int]]) -> None:
        self._text = text
        self._spans = spans

    def __len__(self) -> int:
        return len(self._spans)

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return _DECODER.raw_decode(self._text, self._spans[index][0])[0]

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self._spans)):
            yield self[i]


def _fail(text: str, pos: int, what: str) -> json.JSONDecodeError:
    return json.JSONDecodeError(what, text, pos)


def _skip(text: str, pos: int) -> int:
    m = _WS.match(text, pos)
    return m.end() if m is not None else pos


def scan(text: str, lazy: frozenset[str]) -> Any:
    """The export's top-level value; if it is an object, each key in `lazy`
    whose value is an array becomes `Rows` instead of a list."""
    pos = _skip(text, 0)
    if text[pos : pos + 1] != "{":
        value, end = _DECODER.raw_decode(text, pos) if pos < len(text) else (None, pos)
        if pos >= len(text):
            raise _fail(text, pos, "Expecting value")
        if _skip(text, end) != len(text):
            raise _fail(text, _skip(text, end), "Extra data")
        return value
    out: dict[str, Any] = {}
    pos = _skip(text, pos + 1)
    if text[pos : pos + 1] == "}":
        pos += 1
    else:
        while True:
            if text[pos : pos + 1] != '"':
                raise _fail(text, pos, "Expecting property name enclosed in double quotes")
            key, pos = _DECODER.raw_decode(text, pos)
            pos = _skip(text, pos)
            if text[pos : pos + 1] != ":":
                raise _fail(text, pos, "Expecting ':' delimiter")
            pos = _skip(text, pos + 1)
            if key in lazy and text[pos : pos + 1] == "[":
                spans: list[tuple[int, int]] = []
                pos = _skip(text, pos + 1)
                if text[pos : pos + 1] == "]":
                    pos += 1
                else:
                    while True:
                        _item, end = _DECODER.raw_decode(text, pos)  # checked and dropped: only offsets kept
                        spans.append((pos, end))
                        pos = _skip(text, end)
                        if text[pos : pos + 1] == ",":
                            pos = _skip(text, pos + 1)
                            continue
                        if text[pos : pos + 1] == "]":
                            pos += 1
                            break
                        raise _fail(text, pos, "Expecting ',' delimiter")
                out[key] = Rows(text, spans)
            else:
                if pos >= len(text):
                    raise _fail(text, pos, "Expecting value")
                out[key], pos = _DECODER.raw_decode(text, pos)
            pos = _skip(text, pos)
            if text[pos : pos + 1] == ",":
                pos = _skip(text, pos + 1)
                continue
            if text[pos : pos + 1] == "}":
                pos += 1
                break
            raise _fail(text, pos, "Expecting ',' delimiter")
    if _skip(text, pos) != len(text):
        raise _fail(text, _skip(text, pos), "Extra data")
    return out
