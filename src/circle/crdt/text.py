"""Text written by another member is data, never terminal control.

Every string in the document came from some member's device, and any member
may be hostile (DESIGN §8). Shown raw, a title like
`"\\x1b]0;OWNED\\x07\\x1b[2J\\u202etxt.exe"` retitles the window, clears the
screen and reverses the line. Rules, applied wherever such text is shown
(CLI tables, `show`, `members`, `serve` logs, CSV exports, the app):

- C0 controls (except a newline where the caller allows several lines),
  DEL, C1 controls, bidi embeddings/overrides/isolates and marks, line and
  paragraph separators, and lone surrogates are replaced by a visible escape
  (`\\x1b`, `\\u202e`, `\\ud800`), so the reader sees that something odd is
  there and nothing is interpreted. A literal backslash stays as it is.
- Everything else, including emoji joiners and any script, is shown as is.

Field lengths: `LIMITS` is the one table of how long each text field may be.
Every path that writes a field (CLI, app, import) checks it; readers treat a
longer value from a peer as malformed (`too_long`).
"""

from __future__ import annotations

import re

# Characters that change how a terminal or a bidi-aware renderer lays out
# text, besides the C0/C1 ranges.
_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_SEPARATORS = "\u2028\u2029"
_SURROGATE = re.compile("[\ud800-\udfff]")
_UNSAFE_ONE_LINE = re.compile("[\x00-\x1f\x7f-\x9f" + _BIDI + _SEPARATORS + "\ud800-\udfff]")

# The longest text each field may hold (characters). Shared by the writers
# (board, import) and the readers (views: a longer value is malformed).
LIMITS: dict[str, int] = {
    "title": 200, "name": 200, "details": 4000, "description": 4000, "condition_note": 4000,
    "note": 4000, "category": 60, "zone": 60, "handle": 40, "tag": 40, "tags": 20 * 41,
    "circle_name": 200,
}


def _escape(match: re.Match[str]) -> str:
    ch = match.group(0)
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, multiline: bool = False, keep: str = "") -> str:
    """`text` safe to write to a terminal or a log: controls made visible.

    `multiline` keeps newlines; `keep` names further harmless controls to
    pass (the terminal guard keeps tab and carriage return for our own
    progress line). Non-text values are shown with `str()` first (a
    malformed field may hold anything)."""
    value = text if isinstance(text, str) else str(text)
    allowed = keep + ("\n" if multiline else "")
    return _unsafe_except(allowed).sub(_escape, value)


_UNSAFE_EXCEPT: dict[str, re.Pattern[str]] = {"": _UNSAFE_ONE_LINE}


def _unsafe_except(allowed: str) -> re.Pattern[str]:
    """The unsafe characters but `allowed`, as one pattern: the terminal guard
    passes 100k lines of output, and a callback per newline was most of it."""
    pattern = _UNSAFE_EXCEPT.get(allowed)
    if pattern is None:
        pattern = re.compile(f"(?![{re.escape(allowed)}])" + _UNSAFE_ONE_LINE.pattern)
        _UNSAFE_EXCEPT[allowed] = pattern
    return pattern


def is_clean(text: str) -> bool:
    """True when `printable` would show `text` unchanged on one line."""
    return _UNSAFE_ONE_LINE.search(text) is None


def check_field(field: str, text: str, multiline: bool = False) -> str | None:
    """Why `text` may not be stored in `field` (None when it may).

    Used by import and by readers; the board's own writers use the same
    limits. Lone surrogates cannot be encoded at all, so they are refused."""
    limit = LIMITS.get(field)
    if limit is not None and len(text) > limit:
        return f"is longer than {limit} characters"
    if _SURROGATE.search(text) is not None:  # a regex: a per-character loop was most of a 100k import
        return "holds an unpaired surrogate (not valid text)"
    return None


def fit(text: str, width: int) -> str:
    """Cut printable text to `width` characters, marking the cut."""
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)] + "…"
