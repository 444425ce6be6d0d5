"""Modal screens: forms, confirmations, information, invite, help, passphrase, welcome.

Screens hold no service: data comes in as attributes, results go out as a
`dismiss` value or a message; the app (or board screen) does the work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import segno
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Checkbox, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from circle.errors import CircleError
from circle.tui.providers import InviteInfo
from circle.tui.safetext import SafeText as Text

FieldKind = Literal["text", "select", "check", "password", "int"]


@dataclass
class FieldSpec:
    name: str
    label: str
    kind: FieldKind = "text"
    value: Any = ""
    options: Sequence[tuple[str, str]] = field(default_factory=list)
    placeholder: str = ""


FormValues = dict[str, Any]


class FormScreen(ModalScreen[bool]):
    """A form whose Save calls `submit(values)`; a CircleError stays on the form."""

    DEFAULT_CSS = """
    FormScreen { align: center middle; }
    FormScreen > Vertical { width: 76; height: auto; max-height: 90%; border: thick $accent;
                            background: $surface; padding: 0 1; }
    FormScreen .form-title { text-style: bold; padding: 0 0 1 0; }
    FormScreen .form-row { height: auto; }
    FormScreen .form-label { width: 16; padding: 1 1 0 0; text-align: right; }
    FormScreen Input, FormScreen Select { width: 1fr; }
    FormScreen Checkbox { margin: 0 0 0 16; }
    FormScreen #form-error { color: $error; height: auto; }
    FormScreen .buttons { height: auto; align: right middle; padding: 1 0 0 0; }
    FormScreen Button { margin: 0 0 0 2; }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "save", "Save")]

    def __init__(self, title: str, fields: Sequence[FieldSpec], submit: Callable[[FormValues], None],
                 save_label: str = "Save") -> None:
        super().__init__()
        self.form_title = title
        self.fields = list(fields)
        self.submit = submit
        self.save_label = save_label

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.form_title, classes="form-title")
            with VerticalScroll():
                for spec in self.fields:
                    wid = f"f-{spec.name}"
                    if spec.kind == "check":
                        yield Checkbox(spec.label, bool(spec.value), id=wid)
                        continue
                    with Horizontal(classes="form-row"):
                        yield Label(spec.label, classes="form-label")
                        if spec.kind == "select":
                            yield Select([(lbl, val) for lbl, val in spec.options], value=spec.value,
                                         allow_blank=False, id=wid)
                        else:
                            yield Input(str(spec.value), placeholder=spec.placeholder, id=wid,
                                        password=spec.kind == "password",
                                        type="integer" if spec.kind == "int" else "text")
            yield Static("", id="form-error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(self.save_label, id="save", variant="primary")

    def on_mount(self) -> None:
        # The first field has the focus the moment the form opens: typing
        # straight after `n` lands in the title, not nowhere.
        first = self.fields[0] if self.fields else None
        if first is not None:
            self.query_one(f"#f-{first.name}").focus()

    def values(self) -> FormValues:
        out: FormValues = {}
        for spec in self.fields:
            widget = self.query_one(f"#f-{spec.name}")
            if isinstance(widget, Checkbox):
                out[spec.name] = widget.value
            elif isinstance(widget, Select):
                out[spec.name] = widget.value
            elif isinstance(widget, Input):
                if spec.kind == "int":
                    text = widget.value.strip()
                    if not text:
                        out[spec.name] = None
                        continue
                    try:
                        out[spec.name] = int(text)
                    except ValueError:
                        raise FormError(f"{spec.label} must be a whole number") from None
                else:
                    out[spec.name] = widget.value
        return out

    def show_error(self, message: str) -> None:
        self.query_one("#form-error", Static).update(Text(message))

    def action_save(self) -> None:
        try:
            self.submit(self.values())
        except (CircleError, FormError) as exc:
            self.show_error(str(exc))
            return
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)

    @on(Button.Pressed, "#save")
    def _save(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.action_cancel()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        """Enter in a text field goes to the next field; in the last text
        field (or with ctrl+s anywhere) it saves."""
        inputs = [w for w in self.query(Input) if not w.disabled]
        if event.input in inputs and event.input is not inputs[-1]:
            inputs[inputs.index(event.input) + 1].focus()
            return
        self.action_save()


class FormError(Exception):
    pass


class ConfirmScreen(ModalScreen[bool]):
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 80; height: auto; border: thick $error; background: $surface;
                               padding: 1 2; }
    ConfirmScreen .confirm-title { text-style: bold; padding: 0 0 1 0; }
    ConfirmScreen .buttons { height: auto; align: right middle; padding: 1 0 0 0; }
    ConfirmScreen Button { margin: 0 0 0 2; }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, body: str, confirm_label: str = "Confirm") -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text(self.title_text), classes="confirm-title")
            yield Static(Text(self.body), id="confirm-body")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(self.confirm_label, id="confirm", variant="error")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    @on(Button.Pressed, "#confirm")
    def _confirm(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(False)


def removal_text(handle: str) -> str:
    return (
        f"What removing {handle} does:\n"
        f"  • Records that you removed {handle}. Every member's device refuses {handle}'s device "
        "once it has this change, so they can no longer sync with the circle.\n"
        f"  • Rotates the circle key: the remaining members get a new key, and {handle} cannot "
        "decrypt anything new (needs, offers, loans, relay messages written after this).\n\n"
        "What it does NOT do:\n"
        f"  • It does not delete or take back anything {handle} already has. Every need, offer, "
        "loan, member handle and zone their device has already seen stays on it.\n"
        "  • It cannot reach into their device or erase copies they made.\n"
    )


def qr_text(data: str) -> Text:
    """A QR code drawn with half blocks, dark modules on a light background."""
    qr = segno.make(data, error="m")
    rows = [list(r) for r in qr.matrix_iter(scale=1, border=2)]
    if len(rows) % 2:
        rows.append([0] * len(rows[0]))
    out = Text()
    style = "black on white"
    for top, bottom in zip(rows[0::2], rows[1::2], strict=True):
        line = "".join(
            "█" if (t and b) else "▀" if t else "▄" if b else " " for t, b in zip(top, bottom, strict=True)
        )
        out.append(line, style=style)
        out.append("\n")
    return out


def code_lines(code: str, width: int) -> list[str]:
    """The code cut at group boundaries only: a copied or read line is
    always whole groups (`InviteCode.parse` ignores spaces and newlines)."""
    prefix, _, body = code.rpartition(":")
    groups = body.split("-")
    lines: list[str] = []
    line = prefix + ":" if prefix else ""
    for g in groups:
        piece = g if not line or line.endswith(":") else "-" + g
        if line and len(line) + len(piece) > width:
            lines.append(line + "-")
            line = g
        else:
            line += piece
    if line:
        lines.append(line)
    return lines


class InviteScreen(ModalScreen[str | None]):
    """The code (whole groups per line), its QR code when it fits, the
    inviter's safety number, the time left, and, once someone joined with
    it, the "do they match?" step. Dismisses with "match", "mismatch" or None."""

    DEFAULT_CSS = """
    InviteScreen { align: center middle; }
    InviteScreen > VerticalScroll { width: 100%; max-width: 90; height: auto; max-height: 100%;
                                    border: thick $accent; background: $surface; padding: 0 1; }
    InviteScreen .invite-title { text-style: bold; padding: 0 0 1 0; }
    InviteScreen #invite-qr { width: auto; }
    InviteScreen #invite-code { text-style: bold; }
    InviteScreen #invite-short { text-style: bold; color: $accent; padding: 0 0 1 2; }
    InviteScreen #invite-error { color: $error; }
    InviteScreen #invite-state { text-style: bold; padding: 1 0 0 0; }
    InviteScreen .buttons { height: auto; align: right middle; }
    InviteScreen Button { margin: 0 0 0 1; }
    """

    BINDINGS = [Binding("escape", "close", "Close"), Binding("c", "copy", "Copy code"),
                Binding("q", "toggle_qr", "QR code")]

    def __init__(self, info: InviteInfo | None, error: str | None, expires_text: str = "", *,
                 now: Callable[[], int] | None = None,
                 used: Callable[[str], tuple[str, str] | None] | None = None) -> None:
        super().__init__()
        self.info = info
        self.error = error
        self.expires_text = expires_text
        self.now = now
        self.used = used
        self.joined: tuple[str, str] | None = None
        self.show_qr: bool | None = None  # None: decide from the screen height

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Label("Invite someone to this circle", classes="invite-title")
            if self.info is None:
                yield Static(Text(self.error or "Invites are not available."), id="invite-error")
                yield Button("Close", id="close")
                return
            if self.info.short_code:
                yield Static(Text("On the same network they run `circle join` with this short code:"))
                yield Static(Text(self.info.short_code), id="invite-short")
                yield Static(Text("Anywhere (also through a relay), the long code or its QR code (q):"))
            else:
                yield Static(Text("They type the code with `circle join CODE` or scan the QR code (q):"))
            yield Static(Text("\n".join(code_lines(self.info.code, 72))), id="invite-code")
            yield Static(qr_text(self.info.code), id="invite-qr")
            yield Static(Text(f"Your safety number: {self.info.fingerprint}"), id="invite-fpr")
            yield Static(Text(
                "When they join, both screens show each other's safety numbers: read them aloud and "
                "check they match. c copies the code."), id="invite-help")
            yield Static(Text(self._state_text()), id="invite-state")
            with Horizontal(classes="buttons"):
                yield Button("They match", id="match", variant="success")
                yield Button("They do not match", id="mismatch", variant="error")
                yield Button("Close", id="close")

    def on_mount(self) -> None:
        if self.info is None:
            return
        self._buttons()
        self._fit_qr()
        self.set_interval(1.0, self._tick)

    def on_resize(self) -> None:
        self._fit_qr()

    def _fit_qr(self) -> None:
        if self.info is None:
            return
        qr = self.query_one("#invite-qr", Static)
        if self.show_qr is None:
            need = len(qr_text(self.info.code).plain.splitlines()) + 14 + (3 if self.info.short_code else 0)
            qr.display = self.app.size.height >= need
        else:
            qr.display = self.show_qr

    def _state_text(self) -> str:
        if self.info is None:
            return ""
        if self.joined is not None:
            handle, fpr = self.joined
            return (f"{handle} joined with this code. Their safety number: {fpr}\n"
                    f"Ask {handle} to read the number their screen shows for you, and read theirs back. "
                    "Do both match?")
        dead = ""
        if self.info.short_code and self.info.short_left is not None and self.info.short_left() <= 0:
            dead = "The short code was tried too often and no longer works; the long code still does. "
        if self.info.expires_at is not None and self.now is not None:
            left = (self.info.expires_at - self.now()) // 1000
            if left <= 0:
                return "This code has expired: close this and make a new one."
            if left >= 3600:
                return dead + f"One use; expires in {left // 3600} h {left % 3600 // 60:02d} min."
            return dead + f"One use; expires in {left // 60} min {left % 60:02d} s."
        return dead + "One use" + (f"; {self.expires_text}." if self.expires_text else ".")

    def _buttons(self) -> None:
        joined = self.joined is not None
        self.query_one("#match", Button).display = joined
        self.query_one("#mismatch", Button).display = joined

    def _tick(self) -> None:
        if self.info is None:
            return
        if self.joined is None and self.used is not None:
            self.joined = self.used(self.info.code)
            if self.joined is not None:
                self._buttons()
                self.query_one("#match", Button).focus()
        self.query_one("#invite-state", Static).update(Text(self._state_text()))

    def action_copy(self) -> None:
        if self.info is not None:
            self.app.copy_to_clipboard(self.info.code)
            self.app.notify("Invite code copied (if your terminal allows it)")

    def action_toggle_qr(self) -> None:
        qr = self.query_one("#invite-qr", Static)
        self.show_qr = not qr.display
        self._fit_qr()

    @on(Button.Pressed, "#match")
    def _match(self) -> None:
        self.dismiss("match")

    @on(Button.Pressed, "#mismatch")
    def _mismatch(self) -> None:
        self.dismiss("mismatch")

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)


class SafetyCheckScreen(ModalScreen[bool]):
    """After joining: the inviter's and your safety numbers, and the question."""

    DEFAULT_CSS = """
    SafetyCheckScreen { align: center middle; }
    SafetyCheckScreen > Vertical { width: 100%; max-width: 80; height: auto; border: thick $accent;
                                   background: $surface; padding: 0 1; }
    SafetyCheckScreen .buttons { height: auto; align: right middle; padding: 1 0 0 0; }
    SafetyCheckScreen Button { margin: 0 0 0 1; }
    """

    def __init__(self, circle: str, inviter: str, inviter_fpr: str, mine: str) -> None:
        super().__init__()
        self.circle, self.inviter, self.inviter_fpr, self.mine = circle, inviter, inviter_fpr, mine

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text(f"You joined {self.circle}. Check who let you in."), classes="form-title")
            yield Static(Text(
                f"{self.inviter}'s safety number:  {self.inviter_fpr}\n"
                f"Your safety number:  {self.mine}\n\n"
                f"Read yours to {self.inviter} and listen to theirs (in person or on a call you trust). "
                "Do both match what their screen shows?"), id="safety-body")
            with Horizontal(classes="buttons"):
                yield Button("They match", id="match", variant="success")
                yield Button("They do not match", id="mismatch", variant="error")

    def on_mount(self) -> None:
        self.query_one("#match", Button).focus()

    @on(Button.Pressed, "#match")
    def _match(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#mismatch")
    def _mismatch(self) -> None:
        self.dismiss(False)


class CircleSwitchScreen(Screen[None]):
    """Pick one of this device's circles; posts `Chosen`."""

    DEFAULT_CSS = """
    CircleSwitchScreen { align: center middle; }
    CircleSwitchScreen > Vertical { width: 100%; max-width: 70; height: auto; max-height: 90%;
                                    border: thick $accent; background: $surface; padding: 0 1; }
    CircleSwitchScreen OptionList { height: auto; max-height: 16; }
    CircleSwitchScreen .hint { color: $text-muted; }
    """
    BINDINGS = [Binding("escape", "close", "Close")]

    class Chosen(Message):
        def __init__(self, circle_id: str) -> None:
            super().__init__()
            self.circle_id = circle_id

    def __init__(self, entries: Sequence[Any], current: str | None, modal: bool = True) -> None:
        super().__init__()
        self.entries = list(entries)
        self.current = current
        self.modal = modal

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text("Circles on this device"), classes="form-title")
            items = []
            for e in self.entries:
                marks = [m for m, on_ in (("open", e.id == self.current), ("default", e.default)) if on_]
                items.append(Option(f"{e.name}  ({e.id[:8]})" + (f"  [{', '.join(marks)}]" if marks else ""),
                                    id=e.id))
            yield OptionList(*items, id="circle-list")
            yield Static(Text("Enter opens a circle (and makes it the default). `circle forget NAME` deletes "
                              "one from this device."), classes="hint")

    def on_mount(self) -> None:
        self.query_one("#circle-list", OptionList).focus()

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.post_message(self.Chosen(event.option.id))

    def action_close(self) -> None:
        if self.modal:
            self.app.pop_screen()
        else:
            self.app.exit()


class InfoScreen(ModalScreen[None]):
    """A title, some plain text and a Close button (e.g. an import report)."""

    DEFAULT_CSS = """
    InfoScreen { align: center middle; }
    InfoScreen > Vertical { width: 76; height: auto; max-height: 90%; border: thick $accent;
                            background: $surface; padding: 0 2; }
    InfoScreen .info-title { text-style: bold; padding: 1 0; }
    InfoScreen .buttons { height: auto; align: right middle; padding: 1 0 0 0; }
    """

    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, title: str, body: str) -> None:
        super().__init__()
        self.title_text = title
        self.body = body

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text(self.title_text), classes="info-title")
            yield Static(Text(self.body), id="info-body")
            with Horizontal(classes="buttons"):
                yield Button("Close", id="close", variant="primary")

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 80; height: 90%; border: thick $accent; background: $surface;
                                  padding: 0 2; }
    """

    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, lines: list[tuple[str, str]]) -> None:
        super().__init__()
        self.lines = lines

    def compose(self) -> ComposeResult:
        text = Text()
        text.append("circle: keys\n\n", style="bold")
        for key, what in self.lines:
            if not key:
                text.append(f"\n{what}\n", style="bold")
                continue
            text.append(f"  {key:<12}", style="bold cyan")
            text.append(f"{what}\n")
        text.append(
            "\nEvery action is also in the command palette (ctrl+p) and in the `circle` command "
            "line (with --json). Data lives only on members' devices.\n"
        )
        with VerticalScroll():
            yield Static(text, id="help-text")

    def action_close(self) -> None:
        self.dismiss(None)


class PassphraseScreen(Screen[None]):
    """Asks for the passphrase; the app checks it and calls `show_error` on failure."""

    DEFAULT_CSS = """
    PassphraseScreen { align: center middle; }
    PassphraseScreen > Vertical { width: 70; height: auto; border: thick $accent; padding: 1 2; }
    PassphraseScreen #pass-error { color: $error; height: auto; }
    """

    class Submitted(Message):
        def __init__(self, passphrase: str) -> None:
            super().__init__()
            self.passphrase = passphrase

    def __init__(self, home_path: str) -> None:
        super().__init__()
        self.home_path = home_path

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text("This device's circle data is encrypted."), classes="form-title")
            yield Static(Text(f"Passphrase for {self.home_path}:"))
            yield Input(password=True, id="passphrase")
            yield Static("", id="pass-error")
            yield Button("Unlock", id="unlock", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#passphrase", Input).focus()

    def show_error(self, message: str) -> None:
        self.query_one("#pass-error", Static).update(Text(message))
        box = self.query_one("#passphrase", Input)
        box.value = ""
        box.disabled = False
        box.focus()

    def _submit(self) -> None:
        box = self.query_one("#passphrase", Input)
        self.query_one("#pass-error", Static).update(Text("Checking…"))
        box.disabled = True
        self.post_message(self.Submitted(box.value))

    @on(Input.Submitted)
    def _entered(self) -> None:
        self._submit()

    @on(Button.Pressed, "#unlock")
    def _pressed(self) -> None:
        self._submit()


@dataclass(frozen=True)
class NewCircle:
    name: str
    handle: str
    zone: str
    passphrase: str | None


@dataclass(frozen=True)
class JoinRequest:
    code: str
    handle: str
    zone: str
    passphrase: str | None


class WelcomeScreen(Screen[None]):
    """First run: create a circle or join one with an invite code."""

    DEFAULT_CSS = """
    WelcomeScreen { align: center middle; }
    WelcomeScreen > VerticalScroll { width: 118; height: auto; max-height: 100%; padding: 0 1; }
    WelcomeScreen .welcome-title { text-style: bold; padding: 0 0 1 0; }
    WelcomeScreen .boxes { height: auto; }
    WelcomeScreen .box { border: round $accent; height: auto; padding: 0 1; width: 1fr; }
    WelcomeScreen .form-row { height: auto; }
    WelcomeScreen .form-label { width: 13; padding: 1 1 0 0; text-align: right; }
    WelcomeScreen Input { width: 1fr; }
    WelcomeScreen #welcome-error { color: $error; height: auto; }
    WelcomeScreen .hint { color: $text-muted; }
    """

    class Create(Message):
        def __init__(self, request: NewCircle) -> None:
            super().__init__()
            self.request = request

    class Join(Message):
        def __init__(self, request: JoinRequest) -> None:
            super().__init__()
            self.request = request

    def __init__(self, home_exists: bool, join_available: bool) -> None:
        super().__init__()
        self.home_exists = home_exists
        self.join_available = join_available

    def _row(self, label: str, wid: str, placeholder: str = "", password: bool = False) -> ComposeResult:
        with Horizontal(classes="form-row"):
            yield Label(label, classes="form-label")
            yield Input(placeholder=placeholder, id=wid, password=password)

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Label("Welcome to circle", classes="welcome-title")
            yield Static(Text(
                "A mutual-aid board that lives on members' own devices. Start a new circle, "
                "or join one with an invite code from a member."
            ))
            with Horizontal(classes="boxes"):
                with Vertical(classes="box", id="create-box"):
                    yield Label("Start a new circle", classes="welcome-title")
                    yield from self._row("Circle name", "w-name", "e.g. Riverside Mutual Aid")
                    yield from self._row("Your handle", "w-handle", "a pseudonym members see")
                    yield from self._row("Your zone", "w-zone", "optional, coarse; never an address")
                    yield Button("Create circle", id="create", variant="primary")
                with Vertical(classes="box", id="join-box"):
                    yield Label("Join with an invite", classes="welcome-title")
                    yield from self._row("Invite code", "j-code", "from a member's `circle invite`")
                    yield from self._row("Your handle", "j-handle", "a pseudonym members see")
                    if not self.join_available:
                        yield Static(Text(
                            "Joining needs the invite feature, which this build does not have yet. "
                            "Ask a member to use `circle invite` once it exists, or start a new circle."
                        ), classes="hint", id="join-unavailable")
                    yield Button("Join circle", id="join", disabled=not self.join_available)
            if not self.home_exists:
                with Vertical(classes="box", id="device-box"):
                    yield Label("Protect this device's data (optional)", classes="welcome-title")
                    yield from self._row("Passphrase", "w-pass", "8+ characters, or leave empty", password=True)
                    yield from self._row("Repeat it", "w-pass2", "", password=True)
                    yield Static(Text(
                        "With a passphrase, keys and the board are encrypted on disk and circle asks for "
                        "it at start. Without one, the data is protected only by file permissions.",
                    ), classes="hint")
            yield Static("", id="welcome-error")

    def on_mount(self) -> None:
        self.query_one("#w-name", Input).focus()

    def _value(self, wid: str) -> str:
        found = self.query(f"#{wid}")
        if not found:
            return ""
        widget = found.first()
        return widget.value if isinstance(widget, Input) else ""

    def show_error(self, message: str) -> None:
        self.query_one("#welcome-error", Static).update(Text(message))

    def _passphrase(self) -> str | None:
        first, second = self._value("w-pass"), self._value("w-pass2")
        if not first and not second:
            return None
        if first != second:
            raise FormError("the two passphrases do not match")
        return first

    @on(Button.Pressed, "#create")
    def _create(self) -> None:
        try:
            passphrase = self._passphrase()
        except FormError as exc:
            self.show_error(str(exc))
            return
        self.show_error("")
        self.post_message(self.Create(NewCircle(
            self._value("w-name"), self._value("w-handle"), self._value("w-zone"), passphrase)))

    @on(Button.Pressed, "#join")
    def _join(self) -> None:
        try:
            passphrase = self._passphrase()
        except FormError as exc:
            self.show_error(str(exc))
            return
        self.show_error("")
        self.post_message(self.Join(JoinRequest(
            self._value("j-code"), self._value("j-handle"), "", passphrase)))

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        if event.input.id and event.input.id.startswith("j-"):
            if self.join_available:
                self._join()
        else:
            self._create()
