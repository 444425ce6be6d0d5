"""The CLI through real subprocesses in temporary homes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clihelp import CLI


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    c = CLI(tmp_path / "home")
    c.run("init", "--name", "Eastside Tools", "--handle", "sam", "--no-passphrase")
    return c


def test_board_round_trip(cli: CLI) -> None:
    need = cli.json("need", "add", "Ride to clinic Tue", "--category", "transport", "--urgency", "48h",
                    "--zone", "north", "--tag", "medical")
    assert need["status"] == "open" and need["tags"] == ["medical"] and need["urgency"] == "48h"
    offer = cli.json("offer", "add", "Can drive Tuesdays", "--category", "transport")
    matches = cli.json("match", need["id"][:4])
    assert [m["offer"] for m in matches] == [offer["id"]]
    assert cli.json("need", "claim", need["id"][:5])["status"] == "claimed"
    assert cli.json("need", "met", need["id"])["status"] == "met"
    assert cli.json("need", "list") == []
    assert [n["id"] for n in cli.json("need", "list", "--status", "met")] == [need["id"]]
    tool = cli.json("tool", "add", "Cordless drill", "--category", "power-tools", "--loan-days", "7")
    loan = cli.json("tool", "borrow", tool["id"])
    assert loan["status"] == "out"
    assert cli.json("tool", "list", "--available") == []
    returned = cli.json("tool", "return", tool["id"], "--condition", "worn")
    assert returned["availability"] == "available" and returned["condition"] == "worn"
    cond = cli.json("tool", "condition", tool["id"], "--condition", "needs-repair", "--note", "chuck slips")
    assert cond["condition_note"] == "chuck slips"
    status = cli.json("status")
    assert status["storage"]["encrypted_at_rest"] is False
    assert "file permissions" in status["storage"]["protection"]
    members = cli.json("members")
    assert members[0]["handle"] == "sam" and len(members[0]["fingerprint"]) == 19
    human = cli.run("need", "list", "--status", "all").stdout
    assert "Ride to clinic Tue" in human


def test_errors_are_one_sentence_and_nonzero(cli: CLI) -> None:
    proc = cli.run("need", "claim", "zzzz", check=False)
    assert proc.returncode == 3 and proc.stderr.strip() == "circle: no need with id 'zzzz'"
    proc = cli.run("need", "add", "   ", check=False)
    assert proc.returncode == 2 and "must not be empty" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = cli.run("tool", "borrow", "nope", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr


def test_export_import_round_trip_and_merge(cli: CLI, tmp_path: Path) -> None:
    cli.json("need", "add", "Soup", "--tag", "food")
    tool = cli.json("tool", "add", "Ladder")
    cli.json("tool", "borrow", tool["id"])
    out = tmp_path / "export.json"
    cli.run("export", "--format", "json", "--out", str(out))
    exported = json.loads(out.read_text())
    assert {len(exported[k]) for k in ("needs", "tools", "loans")} == {1}
    # Into a fresh circle: everything arrives; a second import adds nothing.
    other = CLI(tmp_path / "other")
    other.run("init", "--name", "Other", "--handle", "kim", "--no-passphrase")
    report = other.json("import", str(out))
    assert report["needs"]["added"] == 1 and report["loans"]["added"] == 1
    assert report["members"]["not_imported"] == 1
    again = other.json("import", str(out))
    assert again["needs"] == {"added": 0, "already_present": 1}
    assert other.json("tool", "show", tool["id"])["availability"] == "on-loan"
    csv_text = cli.run("export", "--format", "csv", "--collection", "needs").stdout
    assert csv_text.startswith("id,title,status,") and "Soup" in csv_text
    folder = tmp_path / "csv"
    cli.run("export", "--format", "csv", "--out", str(folder))
    assert sorted(p.name for p in folder.iterdir()) == [
        "bring.csv", "events.csv", "exchanges.csv", "holds.csv", "loans.csv", "members.csv", "needs.csv",
        "offers.csv", "shifts.csv", "skills.csv", "tools.csv"]


@pytest.mark.parametrize("content,expected", [
    ("not json at all", "invalid JSON at line 1"),
    ('{"format": "something-else"}', "not a circle export"),
    ('{"format": "circle-export", "version": 1, "needs": [{"id": "abc"}]}', "needs[0] (id abc): missing field"),
    ('{"format": "circle-export", "version": 1, "needs": [{"id": "ab", "title": 5, "details": "", "category": "", '
     '"tags": [], "urgency": "now", "zone": "", "author": "x", "created_at": 1, "updated_at": 1, '
     '"expires_at": 1, "claims": {}, "met_at": null, "withdrawn_at": null}]}', "field 'title' must be text"),
    ('{"format": "circle-export", "version": 1, "loans": [{"id": "l1", "tool": "nothere", "borrower": "b", '
     '"out_at": 1, "due_at": 2, "returned_at": null, "lost_at": null, "condition_out": "good", '
     '"condition_in": null, "renewals": 0}]}', "refers to tool nothere"),
    ('{"format": "circle-export", "version": 7}', "unsupported export version"),
])
def test_garbage_import_is_rejected_and_changes_nothing(cli: CLI, tmp_path: Path, content: str, expected: str) -> None:
    cli.json("need", "add", "Existing")
    before = cli.run("export").stdout
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    proc = cli.run("import", str(bad), check=False)
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
    after = cli.run("export").stdout
    def strip(s):
        return ({k: v for k, v in json.loads(s).items() if k != "exported_at"})
    assert strip(before) == strip(after)


def test_passphrase_encrypts_and_wrong_one_is_refused(tmp_path: Path) -> None:
    c = CLI(tmp_path / "enc", passphrase="correct horse battery")
    c.run("init", "--name", "Quiet", "--handle", "ro")
    c.json("need", "add", "Secret plan for the rent strike")
    assert c.json("status")["storage"]["encrypted_at_rest"] is True
    for path in (tmp_path / "enc").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"Secret plan" not in data and b"rent strike" not in data and b"Quiet" not in data, path
    wrong = c.run("need", "list", check=False, env={"CIRCLE_PASSPHRASE": "wrong passphrase"})
    assert wrong.returncode == 5 and "wrong passphrase" in wrong.stderr
    pfile = tmp_path / "pass.txt"
    pfile.write_text("correct horse battery\n")
    nopass = CLI(tmp_path / "enc")
    assert nopass.run("need", "list", check=False).returncode == 5
    listed = nopass.json("--passphrase-file", str(pfile), "need", "list")
    assert listed[0]["title"] == "Secret plan for the rent strike"


def test_unreadable_home_files_give_clear_errors(cli: CLI) -> None:
    device = cli.home / "device.json"
    original = device.read_bytes()
    device.write_bytes(original[:20])
    proc = cli.run("need", "list", check=False)
    assert proc.returncode == 5 and "damaged" in proc.stderr and "Traceback" not in proc.stderr
    device.write_bytes(original)
    cdir = next((cli.home / "circles").iterdir())
    log = cdir / "doc" / "log"
    cli.json("need", "add", "one")
    cli.json("need", "add", "two")
    data = bytearray(log.read_bytes())
    data[50] ^= 0xFF  # inside the first record
    log.write_bytes(bytes(data))
    proc = cli.run("need", "list", check=False)  # reading still works, and says what is wrong
    assert proc.returncode == 0 and "damaged at byte" in proc.stderr and "circle doctor" in proc.stderr
    proc = cli.run("need", "add", "three", check=False)  # writing is refused until the user acts
    assert proc.returncode == 5 and "nothing was saved" in proc.stderr
    assert log.read_bytes() == bytes(data)  # left exactly as found


def test_two_circles_need_a_selector(cli: CLI) -> None:
    cli.run("init", "--name", "Second", "--handle", "sam2", "--another")
    proc = cli.run("need", "list", check=False)
    assert proc.returncode == 3 and "--circle" in proc.stderr
    cli.json("--circle", "second", "need", "add", "in second")
    assert [n["title"] for n in cli.json("--circle", "Second", "need", "list")] == ["in second"]
    assert cli.json("--circle", "Eastside Tools", "need", "list") == []
