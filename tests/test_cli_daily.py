"""Issue 11 through the real CLI (subprocesses, real homes): spreadsheets,
item import, report, search, several circles, global options anywhere,
stewards lending, and no passphrase prompt on a home without one (a pty)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from circle.crdt.csvio import COLUMNS
from clihelp import CLI
from factories import member_homes

pd = pytest.importorskip("pandas", reason="pandas is in the test extras; install with .[test]")


@pytest.fixture
def two(tmp_path: Path) -> tuple[CLI, CLI]:
    sam_path, ana_path = member_homes(tmp_path, ["sam", "ana"])
    return CLI(sam_path), CLI(ana_path)


# --- CSV in pandas, cell by cell ------------------------------------------------------


def test_csv_files_open_in_pandas_cell_by_cell(two: tuple[CLI, CLI], tmp_path: Path) -> None:
    sam, _ = two
    need = sam.json("need", "add", "=HYPERLINK(\"http://x\")", "--details", "Ride, with \"quotes\"\nand a newline",
                    "--tag", "medical", "--tag", "transport", "--zone", "Северный", "--urgency", "48h")
    ana_id = next(m["id"] for m in sam.json("members") if m["handle"] == "ana")
    tool = sam.json("tool", "add", "Drill", "--loan-days", "7")
    loan = sam.json("tool", "borrow", tool["id"], "--for", "ana")
    out = tmp_path / "sheets"
    sam.run("export", "--format", "csv", "--out", str(out), "--bom")
    needs = pd.read_csv(out / "needs.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    assert list(needs.columns) == [c for c, _ in COLUMNS["needs"]]
    row = needs.iloc[0]
    assert row["id"] == need["id"]
    assert row["title"] == "'=HYPERLINK(\"http://x\")"  # neutralised, text kept
    assert row["details"] == "Ride, with \"quotes\"\nand a newline"
    assert row["tags"] == "medical; transport" and row["zone"] == "Северный" and row["urgency"] == "48h"
    assert row["author"] == "sam" and row["author_id"] == need["author"]
    assert row["status"] == "open" and row["met"] == "" and row["claimed_by"] == ""
    created = pd.to_datetime(row["created"], utc=True, format="ISO8601")
    assert abs(created.timestamp() * 1000 - need["created_at"]) < 1000
    assert row["created"].endswith("Z") and "T" in row["created"]

    tools = pd.read_csv(out / "tools.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    t = tools.iloc[0]
    assert (t["name"], t["availability"], t["on_loan_to"], t["on_loan_to_id"]) == ("Drill", "on-loan", "ana", ana_id)
    assert t["overdue"] == "false" and t["loan_days"] == "7" and t["steward"] == "sam"
    loans = pd.read_csv(out / "loans.csv", encoding="utf-8-sig", keep_default_na=False)
    assert loans.loc[0, "id"] == loan["id"] and loans.loc[0, "borrower"] == "ana"
    assert loans["overdue"].tolist() == [False] and loans["overdue"].dtype == bool  # true/false read as booleans
    members = pd.read_csv(out / "members.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    assert sorted(members["handle"]) == ["ana", "sam"] and set(members["active"]) == {"true"}
    assert (out / "needs.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    assert "formula" in sam.run("export", "--columns").stdout or "tags" in sam.run("export", "--columns").stdout


# --- item import, report, search ----------------------------------------------------------

MYTURN = Path(__file__).parent / "data" / "myturn_items.csv"


def test_a_myturn_file_is_imported_once(two: tuple[CLI, CLI]) -> None:
    sam, _ = two
    first = sam.json("import", str(MYTURN))
    assert first["kind"] == "items" and first["added"] == 3 and first["skipped"] == ["row 5: no name"]
    assert "maximum number of renewals" in first["ignored_columns"]
    assert sam.json("import", str(MYTURN))["added"] == 0
    names = sorted(t["name"] for t in sam.json("tool", "list"))
    assert names == ["Cordless Drill", "Extension Ladder", "Tile Saw"]
    human = sam.run("import", str(MYTURN)).stdout
    assert "0 tools added, 3 already here" in human


def test_report_search_profile_and_history(two: tuple[CLI, CLI], tmp_path: Path) -> None:
    sam, ana = two
    sam.json("need", "add", "Ladder for gutters", "--urgency", "now")
    tool = sam.json("tool", "add", "Ladder")
    sam.json("tool", "borrow", tool["id"], "--for", "ana")
    md = sam.run("report").stdout
    assert md.startswith("# Eastside: meeting report") and "| now | Ladder for gutters | sam |" in md
    page = tmp_path / "r.html"
    sam.run("report", "--format", "html", "--out", str(page))
    assert page.read_text().startswith("<!DOCTYPE html>") and "<td>ana</td>" in page.read_text()
    found = sam.json("search", "ladder")
    assert found["counts"]["needs"] == 1 and found["counts"]["tools"] == 1
    assert sam.json("profile", "--zone", "north side")["zone"] == "north side"
    history = sam.json("tool", "history", tool["id"])
    assert history["loans"][0]["borrower_handle"] == "ana" and history["loans"][0]["recorded_by"]
    # ana is not the steward: she cannot record a loan for sam.
    other = sam.json("tool", "add", "Saw")
    proc = ana.run("tool", "borrow", other["id"], "--for", "sam", check=False)
    assert proc.returncode != 0  # ana's copy has not synced the saw: refused either way, in one sentence
    assert "Traceback" not in proc.stderr


# --- several circles, global options anywhere ------------------------------------------------


def test_several_circles_prefixes_default_and_leave(tmp_path: Path) -> None:
    cli = CLI(tmp_path / "h")
    cli.run("init", "--name", "Tool Library", "--handle", "sam", "--no-passphrase")
    again = cli.run("init", "--name", "Tenants Union", "--handle", "sam", check=False)
    assert again.returncode == 2 and "--another" in again.stderr and "'Tool Library'" in again.stderr
    cli.run("init", "--name", "Tenants Union", "--handle", "sam", "--another")
    proc = cli.run("need", "list", check=False)
    assert proc.returncode == 3 and "'Tool Library'" in proc.stderr and "circle use" in proc.stderr
    cli.json("--circle", "Tool", "need", "add", "in tools")  # a name prefix
    assert [n["title"] for n in cli.json("need", "list", "--circle", "tool l")] == ["in tools"]
    cli.json("use", "tenants")
    assert cli.json("need", "list") == []  # the default now
    assert [c["default"] for c in cli.json("circles")] == [True, False]
    left = cli.run("forget", "tenants", check=False)
    assert left.returncode == 2 and "--yes" in left.stderr
    cli.json("forget", "tenants", "--yes")
    assert [n["title"] for n in cli.json("need", "list")] == ["in tools"]  # one circle left: no selector


def test_global_options_work_after_the_command(tmp_path: Path) -> None:
    env_less = CLI(tmp_path / "unused")
    home = tmp_path / "real"
    env_less.run("init", "--name", "Pantry", "--handle", "ana", "--no-passphrase", "--home", str(home))
    assert (home / "device.json").exists() and not (tmp_path / "unused").exists()
    env_less.run("need", "add", "Rice", "--home", str(home))
    listed = json.loads(env_less.run("need", "list", "--home", str(home), "--json").stdout)
    assert [n["title"] for n in listed] == ["Rice"]
    assert "--home" in env_less.run("app", "--help").stdout
    assert env_less.run("tool", "list", "--home", str(home), "--circle", "pan").returncode == 0


# --- no prompt on a home without a passphrase (a pty, no tmux) ----------------------------------


def _in_pty(args: list[str], env: dict[str, str], seconds: float) -> tuple[str, int | None]:
    """Run `circle ARGS` with a terminal as stdin/stdout; return what it printed
    within `seconds` and its exit code (None if it was still running)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "circle", *args], stdin=slave, stdout=slave, stderr=slave,
                            env=env, close_fds=True)
    os.close(slave)
    out = b""
    ended = False
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                if proc.poll() is not None:
                    ended = True
                    break
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                chunk = b""
            if not chunk:
                ended = True
                break
            out += chunk
    finally:
        code: int | None = None
        if ended:
            code = proc.wait(10)
        else:
            proc.kill()  # still running (or waiting at a prompt)
            proc.wait(10)
        os.close(master)
    return out.decode("utf-8", "replace"), code


@pytest.mark.parametrize("args", [["need", "list"], ["status"], ["tool", "list"], ["members"], ["circles"],
                                  ["activity"], ["search", "x"], ["report"]])
def test_no_command_prompts_on_a_home_without_a_passphrase(tmp_path: Path, args: list[str]) -> None:
    cli = CLI(tmp_path / "h")
    cli.run("init", "--name", "Plain", "--handle", "sam", "--no-passphrase")
    text, code = _in_pty(args, cli.env, 20)
    assert "Passphrase" not in text and code == 0, text


def test_serve_does_not_prompt_either(tmp_path: Path) -> None:
    cli = CLI(tmp_path / "h")
    cli.run("init", "--name", "Plain", "--handle", "sam", "--no-passphrase")
    text, code = _in_pty(["serve", "--listen", "127.0.0.1:0", "--no-discovery"], cli.env, 4)
    assert "Passphrase" not in text, text
    assert code in (None, 0), text  # still serving (killed by the test) or done


def test_an_encrypted_home_still_asks_on_a_terminal(tmp_path: Path) -> None:
    """The control: the pty check can see a prompt."""
    cli = CLI(tmp_path / "h", passphrase="correct horse battery")
    cli.run("init", "--name", "Locked", "--handle", "sam")
    env = {k: v for k, v in cli.env.items() if k != "CIRCLE_PASSPHRASE"}
    text, code = _in_pty(["need", "list"], env, 3)
    assert "Passphrase:" in text and code is None


def test_an_error_under_json_is_json_on_stdout(tmp_path: Path) -> None:
    cli = CLI(tmp_path / "h")
    cli.run("init", "--name", "Plain", "--handle", "sam", "--no-passphrase")
    proc = cli.run("need", "claim", "zzzz", "--json", check=False)
    assert proc.returncode == 3
    assert json.loads(proc.stdout) == {"error": "no need with id 'zzzz'", "exit_code": 3}
    assert proc.stderr.strip() == "circle: no need with id 'zzzz'"
