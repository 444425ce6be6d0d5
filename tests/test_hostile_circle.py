"""A hostile member's odd values never stop the real CLI (attack 6 of issue 9).

Rex is a real member of the circle running a modified client: the odd change
is written by JavaScript Automerge under rex's device actor, signed by rex's
device (so the trust layer lets it in, as it must for a member's writes), and
applied on sam's device as a peer's change. Then real `circle` processes on
sam's home must open the circle, list the board, say what is odd, export,
and print no Rust panic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from circle.crdt.am import AmDoc
from circle.node.home import Home
from circle.node.service import CircleService
from clihelp import CLI
from factories import member_homes
from jsam import js_edit, require_node


def _hostile_change_from_rex(sam_path: Path, rex_path: Path, ops: list[dict[str, object]]) -> None:
    sam = CircleService.open(Home.open(sam_path, None))
    rex = CircleService.open(Home.open(rex_path, None))
    rex.apply_remote(sam.doc.changes_since(rex.doc.heads()), sam.gate.proofs_since(sam.doc, rex.doc.heads()))
    before = rex.doc.heads()
    theirs = AmDoc.load(js_edit(rex.doc.save(), ops, actor=rex.doc.actor()))
    changes = theirs.changes_since(before)
    rex.doc.apply_changes(changes)  # rex's own client wrote it
    rex.gate.sign_new(rex.doc, before)  # ...and rex's device signs it, like any change of its own
    proofs = rex.gate.proofs_since(rex.doc, before)
    assert sam.apply_remote(changes, proofs)


@pytest.mark.parametrize(("circle_id", "schema"), [({"counter": 7}, {"counter": 1}),
                                                  ({"str": "someothercircle"}, {"int": 1})])
def test_counter_in_meta_does_not_brick_the_circle(tmp_path: Path, circle_id: dict[str, object],
                                                   schema: dict[str, object]) -> None:
    require_node()
    sam_path, rex_path = member_homes(tmp_path, ["sam", "rex"])
    cli = CLI(sam_path)
    need = cli.json("need", "add", "Soup for four")["id"]
    cli.run("need", "add", "Ride to clinic")
    _hostile_change_from_rex(sam_path, rex_path, [
        {"path": ["meta", "circle_id"], "value": circle_id},
        {"path": ["meta", "schema"], "value": schema},  # 1: "an earlier circle" (refused on main)
        {"path": ["needs", need, "urgency"], "value": {"counter": 2}},
    ])

    listed = cli.run("need", "list", "--json")
    assert "panicked" not in listed.stderr, listed.stderr
    titles = {n["title"] for n in json.loads(listed.stdout)}
    assert titles == {"Soup for four", "Ride to clinic"}

    status = cli.run("status")
    assert "panicked" not in status.stderr, status.stderr
    assert "WARNING: " in status.stdout and "keeps using" in status.stdout
    assert f"unreadable field urgency of need {need[:4]}\u2026 (written by rex)" in status.stdout
    assert status.stdout.count("unreadable field urgency") == 1

    exported = cli.run("export")
    assert "panicked" not in exported.stderr, exported.stderr
    data = json.loads(exported.stdout)
    assert {n["title"] for n in data["needs"]} == {"Soup for four", "Ride to clinic"}
    assert data["circle"]["name"] == "Eastside"
