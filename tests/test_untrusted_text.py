"""Issue 10: a member's text can never drive another member's terminal.

Real `circle` processes; the hostile text is what any member can write
(a need title, a handle, a zone). Output is checked byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from circle.crdt.text import LIMITS, check_field, printable
from clihelp import CLI

EVIL = "\x1b]0;OWNED\x07\x1b[2J\x1b[31mFree food\x1b[0m \u202etxt.exe\x9b\u2066"
FORBIDDEN = ["\x1b", "\x07", "\u202e", "\x9b", "\u2066"]


def _clean(text: str) -> bool:
    return not any(ch in text for ch in FORBIDDEN)


def test_printable_makes_every_control_visible() -> None:
    shown = printable(EVIL)
    assert _clean(shown) and "\\x1b]0;OWNED\\x07" in shown and "\\u202e" in shown
    assert printable("two\nlines") == "two\\x0alines"
    assert printable("two\nlines", multiline=True) == "two\nlines"
    assert printable("café 👩‍👩‍👧 مرحبا") == "café 👩‍👩‍👧 مرحبا"  # ordinary text of any script is untouched
    assert printable("lone \ud800") == "lone \\ud800"


def test_check_field_limits_and_surrogates() -> None:
    assert check_field("title", "x" * LIMITS["title"]) is None
    assert "longer than" in (check_field("title", "x" * (LIMITS["title"] + 1)) or "")
    assert "surrogate" in (check_field("details", "a\udc80b") or "")


# What a member's own device may put in its signed profile (statements refuse C0/C1 controls,
# not direction overrides): the second member's handle and zone carry bidi controls.
PEER_HANDLE = "bo\u202ePWN\u2066"


@pytest.fixture
def evil(tmp_path: Path) -> CLI:
    from factories import member_homes

    homes = member_homes(tmp_path, ["ro", PEER_HANDLE])
    cli = CLI(homes[0])
    cli.run("need", "add", EVIL, "--details", "line one\n\x1b[2Jline two", "--zone", "\x1b]8;;http://x\x07z")
    return cli


def test_init_refuses_a_handle_with_controls_in_one_sentence(tmp_path: Path) -> None:
    cli = CLI(tmp_path / "h")
    proc = cli.run("init", "--name", "T", "--handle", "ro\x1b[8mhidden", "--no-passphrase", check=False)
    assert proc.returncode == 2 and "control characters" in proc.stderr and _clean(proc.stderr)
    assert not (tmp_path / "h" / "circles").exists() or not any((tmp_path / "h" / "circles").iterdir())


@pytest.mark.parametrize("args", [("need", "list"), ("members",), ("status",), ("match",),
                                  ("export", "--format", "csv", "--collection", "needs")])
def test_listing_commands_never_write_controls(evil: CLI, args: tuple[str, ...]) -> None:
    proc = evil.run(*args)
    assert _clean(proc.stdout) and _clean(proc.stderr), proc.stdout


def test_show_and_add_render_visibly(evil: CLI) -> None:
    rid = evil.json("need", "list")[0]["id"]
    shown = evil.run("need", "show", rid).stdout
    assert _clean(shown) and "\\x1b]0;OWNED\\x07" in shown and "\\u202etxt.exe" in shown
    assert "line one\n" in shown  # details keep their lines, each control shown escaped
    added = evil.run("need", "add", "\x1b[31mred\x1b[0m").stdout
    assert _clean(added) and "\\x1b[31mred" in added


def test_json_output_escapes_everything(evil: CLI) -> None:
    out = evil.run("need", "list", "--json").stdout
    assert _clean(out)
    assert json.loads(out)[0]["title"] == EVIL  # the data itself is kept exactly


def test_csv_export_cannot_run_formulas_or_controls(evil: CLI, tmp_path: Path) -> None:
    evil.run("need", "add", "=HYPERLINK(\"http://evil\",\"click\")")
    out = tmp_path / "csv"
    evil.run("export", "--format", "csv", "--out", str(out))  # one spreadsheet-safe file per collection
    text = (out / "needs.csv").read_text("utf-8")
    assert _clean(text) and "\n=HYPERLINK" not in text and ",=HYPERLINK" not in text


@pytest.mark.parametrize("title,why", [("x" * 2_000_000, "longer than"), ("\ud800", "surrogate")],
                         ids=["2MB", "surrogate"])
def test_import_enforces_field_rules(evil: CLI, tmp_path: Path, title: str, why: str) -> None:
    data = json.loads(evil.run("export").stdout)
    data["needs"][0] = {**data["needs"][0], "id": "zzzzzzzz", "title": title}
    path = tmp_path / "in.json"
    path.write_text(json.dumps(data))
    proc = evil.run("import", str(path), check=False)
    assert proc.returncode == 2 and why in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("field,value,why", [
    ("created_at", 10**30, "whole number"), ("created_at", 2**63, "whole number"),
    ("expires_at", -(2**63), "whole number"), ("claims", {"": 1}, "member id"),
])
def test_import_hostile_numbers_and_ids_are_one_sentence(evil: CLI, tmp_path: Path, field: str, value: object,
                                                         why: str) -> None:
    data = json.loads(evil.run("export").stdout)
    data["needs"][0] = {**data["needs"][0], "id": "zzzzzzzz", field: value}
    path = tmp_path / "in.json"
    path.write_text(json.dumps(data))
    proc = evil.run("import", str(path), check=False)
    assert proc.returncode == 2 and why in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_serve_log_shows_a_hostile_handle_escaped(tmp_path: Path) -> None:
    """A member who joined with escapes in their handle connects to `circle serve`."""
    import subprocess
    import sys

    from factories import member_homes

    homes = member_homes(tmp_path, ["sam", "bo\u202ePWNED\u2066"])
    a, b = CLI(homes[0]), CLI(homes[1])
    server = subprocess.Popen([sys.executable, "-m", "circle", "serve", "--no-discovery", "--listen",
                               "127.0.0.1:0"], env=a.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        port = first.split("Listening on ")[1].split(";")[0].rsplit(":", 1)[1]
        b.run("sync", "--no-discovery", "--listen", "127.0.0.1:0", "--peer", f"127.0.0.1:{port}",
              "--timeout", "20")
    finally:
        server.terminate()
        out, err = server.communicate(timeout=20)
    log = first + out + err
    assert "PWNED" in log and _clean(log), log


def test_over_long_fields_from_a_peer_are_malformed(tmp_path: Path) -> None:
    """The sync path: a peer's client wrote what the board would refuse (no CLI check ran)."""
    from circle.node.home import Home
    from circle.node.service import CircleService

    svc = CircleService.create(Home.create(tmp_path / "h", None), "Tenants", "ro")
    rid = svc.board.add_need("honest")
    with svc.doc.edit() as ed:  # as a hostile peer's device would write it
        ed.put_record("needs", "zzzzzzzz", {**svc.doc.records("needs")[rid], "title": "x" * 2_000_000})
    svc.board.invalidate()
    view = svc.board.view()
    # Isolated per field (issue 9): the record stays listed, the title is not shown.
    assert sorted(n.title for n in svc.board.needs()) == ["(unreadable)", "honest"]
    assert any(m.id == "zzzzzzzz" and "unreadable field title" in m.reason for m in view.malformed)


def test_an_undecodable_argument_is_one_sentence(evil: CLI) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable.encode(), b"-m", b"circle", b"need", b"add", b"bad \xff byte"],
                          env=evil.env, capture_output=True, timeout=60)
    assert proc.returncode == 2 and b"not valid Unicode" in proc.stderr and b"Traceback" not in proc.stderr
