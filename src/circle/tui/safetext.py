"""Rich `Text` that shows members' text harmlessly (issue 10).

Rich passes escape sequences, BEL and bidi overrides straight to the
terminal. Every `Text` the app builds goes through this subclass (app.py and
screens.py import it *as* `Text`), so any string appended — a title, a
handle, a note — has its controls made visible by `circle.crdt.text.printable`.
Newlines and tabs pass: the app's own layout uses them.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text as _RichText

from circle.crdt.text import printable


def _safe(text: str) -> str:
    return printable(text, multiline=True, keep="\t")


class SafeText(_RichText):
    def __init__(self, text: str = "", *args: Any, **kwargs: Any) -> None:
        super().__init__(_safe(text), *args, **kwargs)

    def append(self, text: str | _RichText, style: Any = None) -> SafeText:
        if isinstance(text, str):
            text = _safe(text)
        super().append(text, style)
        return self
