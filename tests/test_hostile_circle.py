"""A hostile member's odd values never stop the real CLI (attack 6 of issue 9).

The odd change is written by JavaScript Automerge, as a modified client would,
and arrives as a peer's change would (`apply_remote`). Then real `circle`
processes must open the circle, list the board, say what is odd, and print
no Rust panic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from circle.crdt.am import AmDoc
from circle.node.home import Home
from circle.node.service import CircleService
from clihelp import CLI
from jsam import js_edit, require_node


@pytest.mark.parametrize("circle_id", [{"counter": 7}, {"str": "someothercircle"}])
def test_counter_in_meta_does_not_brick_the_circle(tmp_path: Path, circle_id: dict[str, object]) -> None:
    require_node()
    cli = CLI(tmp_path / "home")
    cli.run("init", "--name", "Eastside", "--handle", "sam", "--no-passphrase")
    need = cli.json("need", "add", "Soup for four")["id"]
    cli.run("need", "add", "Ride to clinic")

    svc = CircleService.open(Home.open(tmp_path / "home", None))
    theirs = AmDoc.load(js_edit(svc.doc.save(), [
        {"path": ["meta", "circle_id"], "value": circle_id},
        {"path": ["meta", "schema"], "value": {"counter": 1}},
        {"path": ["needs", need, "urgency"], "value": {"counter": 2}},
    ]))
    assert svc.apply_remote(theirs.changes_since(svc.doc.heads()))

    listed = cli.run("need", "list", "--json")
    assert "panicked" not in listed.stderr, listed.stderr
    titles = {n["title"] for n in json.loads(listed.stdout)}
    assert titles == {"Soup for four", "Ride to clinic"}

    status = cli.run("status")
    assert "panicked" not in status.stderr, status.stderr
    assert "WARNING: " in status.stdout and "keeps using" in status.stdout
    assert f"unreadable field urgency of need {need[:4]}" in status.stdout
    assert status.stdout.count("unreadable field urgency") == 1

    exported = cli.run("export")
    assert "panicked" not in exported.stderr, exported.stderr
    data = json.loads(exported.stdout)
    assert {n["title"] for n in data["needs"]} == {"Soup for four", "Ride to clinic"}
    assert data["circle"]["name"] == "Eastside"
