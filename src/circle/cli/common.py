"""What every command module shares: the context object, `--json`, output helpers."""

from __future__ import annotations

import getpass
import io
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

import click

from circle.crdt.model import Need, Offer, Tool
from circle.crdt.text import is_clean, printable
from circle.crdt.transfer import record_dict
from circle.errors import PassphraseRequired, UsageError
from circle.node.home import PASSPHRASE_ENV, Home
from circle.node.panic import check_not_wiped
from circle.node.service import CircleService

F = TypeVar("F", bound=Callable[..., Any])


# --- context -------------------------------------------------------------------


class Ctx:
    def __init__(self, home: Path, circle: str | None, json_out: bool, passphrase_file: Path | None) -> None:
        self.home_path = home
        self.circle = circle
        self.json = json_out
        self.passphrase_file = passphrase_file
        self._home: Home | None = None
        self._service: CircleService | None = None

    def passphrase(self, confirm_new: bool = False, prompt: bool = True) -> str | None:
        if self.passphrase_file is not None:
            try:
                return self.passphrase_file.read_text("utf-8").rstrip("\r\n")
            except OSError as exc:
                raise UsageError(f"cannot read passphrase file {self.passphrase_file}: {exc.strerror}") from None
        env = os.environ.get(PASSPHRASE_ENV)
        if env is not None:
            return env
        if prompt and sys.stdin.isatty():
            if confirm_new:
                first = getpass.getpass("Passphrase to encrypt this device's data (empty for none): ")
                if not first:
                    return None
                if getpass.getpass("Repeat passphrase: ") != first:
                    raise UsageError("the passphrases do not match")
                return first
            return getpass.getpass("Passphrase: ")
        return None

    def home(self) -> Home:
        if self._home is None:
            check_not_wiped(self.home_path)
            # Ask only a home that needs it: open without prompting first, and
            # prompt (on a terminal) only when the home says it is encrypted.
            try:
                self._home = Home.open(self.home_path, self.passphrase(prompt=False))
            except PassphraseRequired:
                if not sys.stdin.isatty():
                    raise
                self._home = Home.open(self.home_path, self.passphrase())
        return self._home

    def service(self) -> CircleService:
        if self._service is None:
            from circle.node.circles import pick

            home = self.home()
            self._service = CircleService.open(home, pick(home, self.circle), clock=clock_from_env())
            warn_about_store(self._service)
            svc = self._service
            click.get_current_context().call_on_close(lambda: show_warnings(svc))
            click.get_current_context().call_on_close(lambda: keep_view(svc))
            self._service.refresh()
        return self._service


#: Tests only: this device's clock for one process (docs/defence.md "Testing
#: with another clock"). "1764633600000" fixes it at that unix time in ms;
#: "+1860000" / "-5000" runs it that many ms ahead of / behind the real clock.
CLOCK_ENV = "CIRCLE_NOW"


def clock_from_env() -> Callable[[], int]:
    """The clock commands judge and write times with (the real one unless CIRCLE_NOW is set)."""
    text = os.environ.get(CLOCK_ENV, "").strip()
    if not text:
        return lambda: int(time.time() * 1000)
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{CLOCK_ENV} must be unix milliseconds or +/-milliseconds, not '{text}'") from None
    if text[0] in "+-":
        return lambda: int(time.time() * 1000) + value
    return lambda: value


def keep_view(svc: CircleService) -> None:
    """Leave this process's board view for the next one (node/viewstore.py);
    best effort, after the command's result was given."""
    from circle.node.status import keep

    keep(svc)


def listed(ctx: Ctx, which: str, status: str, category: str | None, search: str | None
           ) -> tuple[list[Any], Callable[[str], str]]:
    """Needs or offers (`which`) in one status, and how to name a member: from
    the kept board view when it fits the store as it is (node/viewstore.py;
    the document is then not loaded at all), else from the loaded board."""
    from circle.crdt.board import select_needs, select_offers
    from circle.node import viewstore
    from circle.node.circles import pick

    home = ctx.home()
    kept = viewstore.kept_records(home, pick(home, ctx.circle), clock_from_env()(), which)
    if kept is not None:
        handles = kept.handles
        items: list[Any] = (select_needs(kept.needs, status, category, search) if which == "needs"
                            else select_offers(kept.offers, status, category, search))
        return items, lambda member: printable(handles.get(member, member))
    svc = ctx.service()
    items = (svc.board.needs(status, category, search) if which == "needs"
             else svc.board.offers(status, category, search))
    return items, lambda member: handle_of(svc, member)


def show_warnings(svc: CircleService) -> None:
    """What happened after an edit was saved (e.g. compaction failed): said, not an error."""
    for message in dict.fromkeys(svc.warnings):
        click.echo(f"circle: note: {message}", err=True)
    svc.warnings.clear()


def check_profile_text(handle: str, zone: str) -> None:
    """Your handle and zone go into signed membership statements, which refuse control
    characters: refuse them here, in one sentence, before anything is created."""
    for what, text in (("handle", handle), ("zone", zone)):
        if not is_clean(text):
            raise UsageError(f"the {what} may not contain control characters or direction overrides "
                             f"(it reads {printable(text)})")


def warn_about_store(svc: CircleService) -> None:
    """Damage is reported in words on every command until `circle doctor` repairs it."""
    damage = svc.store.damage
    if damage is not None:
        damage_warning(damage.message)


def damage_warning(message: str) -> None:
    click.echo(f"circle: WARNING: {message}. Reading works; nothing new can be saved until you run "
               "`circle doctor` (it keeps every good record and sets the damaged bytes aside).", err=True)


pass_ctx = click.make_pass_decorator(Ctx)


def json_option(func: F) -> F:
    """`--json` on any command (also accepted before the command name)."""

    def callback(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.find_object(Ctx).json = True  # type: ignore[union-attr]

    return click.option("--json", "json_flag", is_flag=True, expose_value=False, callback=callback,
                        help="Print machine-readable JSON.")(func)


def emit(ctx: Ctx, data: Any, human: Callable[[], None]) -> None:
    if ctx.json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        human()


# --- formatting ------------------------------------------------------------------


def ago(ms: int, now: int | None = None) -> str:
    delta = ((now if now is not None else int(time.time() * 1000)) - ms) // 1000
    future = delta < 0
    delta = abs(delta)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            text = f"{delta // size}{unit}"
            break
    else:
        text = f"{delta}s"
    return f"in {text}" if future else f"{text} ago"


def table(rows: list[list[str]], header: list[str]) -> None:
    """Columns of text; every cell is shown with controls made visible (cells hold peers' text)."""
    if not rows:
        click.echo("(nothing)")
        return
    # One check per row, and per cell only in rows that need escaping (100k rows were 800k calls).
    rows = [row if all(type(c) is str for c in row) and is_clean("".join(row)) else [printable(c) for c in row]
            for row in rows]
    widths = [max(map(len, column)) for column in zip(header, *rows, strict=True)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [line.format(*(h.upper() for h in header)).rstrip()]
    lines += [line.format(*row).rstrip() for row in rows]
    click.echo("\n".join(lines))  # one write: 100k rows were 100k guarded writes


def handle_of(svc: CircleService, member_id: str) -> str:
    m = svc.board.view().members.get(member_id)  # type: ignore[call-overload]
    return printable(m.handle if m else member_id)


def show_record(svc: CircleService, rec: Need | Offer | Tool) -> None:
    data = record_dict(rec)
    for key, value in data.items():
        if key in ("author", "steward", "borrower") and isinstance(value, str):
            value = f"{handle_of(svc, value)} ({value})"
        elif key == "claims" and isinstance(value, dict):
            value = ", ".join(f"{handle_of(svc, k)} {ago(v)}" for k, v in value.items()) or "-"
        elif key.endswith("_at") and isinstance(value, int):
            value = f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(value / 1000))} ({ago(value)})"
        elif isinstance(value, list):
            value = ", ".join(map(str, value)) or "-"
        elif value is None or value == "":
            value = "-"
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        # Details may span lines; each further line is indented under the value.
        text = printable(value, multiline=True).replace("\n", "\n" + " " * 20)
        click.echo(f"{key:>18}: {text}")


def status_action(group: click.Group, kind: str, name: str, method: str, verb: str) -> None:
    """`circle need claim ID`, `circle offer pause ID`, ...: one board method each."""

    article = "an" if kind[0] in "aeiou" else "a"

    @group.command(name, help=f"Mark {article} {kind} as {verb}.")
    @click.argument("record_id")
    @json_option
    @pass_ctx
    def command(ctx: Ctx, record_id: str) -> None:
        svc = ctx.service()
        rid = getattr(svc.board, method)(record_id)
        rec = getattr(svc.board, kind)(rid)
        emit(ctx, record_dict(rec),
             lambda: click.echo(f"{kind.capitalize()} “{getattr(rec, 'title', rec.id)}” ({rec.id}) is now "
                                f"{rec.status.value}."))


# --- the terminal guard -------------------------------------------------------------


class GuardedStream(io.TextIOBase):
    """stdout/stderr for every command but the app: nothing written can drive the terminal.

    Commands format peers' text with `printable` themselves (so columns line
    up); this is the second line of defence for any message that quotes a
    peer's text without it. Newlines, tabs and carriage returns (our own
    progress line) pass; every other control or bidi character is shown
    escaped. Click accepts it as a text stream (it has an encoding and refuses
    bytes), so `click.echo` writes through it."""

    def __init__(self, inner: TextIO) -> None:
        super().__init__()
        self._inner = inner

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._inner, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return getattr(self._inner, "errors", None) or "strict"

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError("write() argument must be str")
        safe = printable(s, multiline=True, keep="\t\r")
        # Text that cannot be encoded for this terminal is escaped, never a crash.
        self._inner.write(safe.encode(self.encoding, "backslashreplace").decode(self.encoding))
        return len(s)

    def flush(self) -> None:
        self._inner.flush()

    @property
    def buffer(self) -> Any:
        """Binary output (a zip or CSV export to stdout) is file content, not
        terminal text: it goes to the underlying binary stream unchanged."""
        return self._inner.buffer

    def isatty(self) -> bool:
        return self._inner.isatty()

    def fileno(self) -> int:
        return self._inner.fileno()

    def writable(self) -> bool:
        return True


def guard_terminal() -> None:
    if not isinstance(sys.stdout, GuardedStream):
        sys.stdout = GuardedStream(sys.stdout)
    if not isinstance(sys.stderr, GuardedStream):
        sys.stderr = GuardedStream(sys.stderr)
