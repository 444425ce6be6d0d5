"""Gatherings through the real CLI (subprocesses, real homes) and the whole
flow between two members over a real loopback session."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import icalendar

from circle.crdt.gatherings import gatherings
from circle.crdt.matching import skills_for
from circle.crdt.timebank import ExchangeStatus
from circle.node.live import LiveSync
from clihelp import CLI
from factories import member_homes
from livehelp import open_service

BERLIN = {"TZ": "Europe/Berlin"}
NEW_YORK = {"TZ": "America/New_York"}


def test_cli_events_shown_in_the_readers_zone_with_rsvp_bring_shifts_and_ics(tmp_path: Path) -> None:
    a_path, _ = member_homes(tmp_path, ["ana", "bo"])
    ana = CLI(a_path)
    # Typed in Berlin (this device's zone), stored as an instant plus "Europe/Berlin".
    proc = ana.run("event", "add", "Potluck", "--at", "2026-12-12T18:00", "--duration", "3h",
                   "--where", "community room", "--kind", "potluck", "--json", env=BERLIN)
    ev = json.loads(proc.stdout)
    assert ev["tz"] == "Europe/Berlin" and ev["starts_at"] == int(datetime(2026, 12, 12, 17, tzinfo=UTC).timestamp() * 1000)
    listing = ana.run("event", "list", "--all", env=NEW_YORK).stdout
    assert "Sat 2026-12-12 12:00" in listing and "community room" in listing  # the reader's zone
    shown = ana.run("event", "show", ev["id"], env=NEW_YORK).stdout
    assert "12:00" in shown and "18:00 Europe/Berlin" in shown
    ana.run("event", "rsvp", ev["id"][:5], "yes")
    ana.run("event", "bring", ev["id"], "lentil soup")
    shift = ana.json("event", "shift", "add", ev["id"], "set-up", "--at", "2026-12-12T17:00Z", "--slots", "1")
    took = ana.json("event", "shift", "take", shift["id"])
    assert took["takers"] and took["open_slots"] == 0 and not took["over_full"]
    full = ana.json("event", "show", ev["id"])
    assert [b["item"] for b in full["bring"]] == ["lentil soup"] and full["rsvps"] == {full["author"]: "yes"}
    out = tmp_path / "circle.ics"
    ana.run("event", "ics", "--all", "--out", str(out))
    cal = icalendar.Calendar.from_ical(out.read_bytes())
    uids = {str(c["UID"]).split("@")[0] for c in cal.walk("VEVENT")}
    assert uids == {ev["id"], shift["id"]}
    # Bad input: a clear sentence, a usage exit code, nothing written.
    bad = ana.run("event", "add", "Meeting", "--at", "next tuesday", check=False)
    assert bad.returncode == 2 and "not a date and time" in bad.stderr
    bad = ana.run("event", "add", "Meeting", "--at", "2026-12-12T18:00", "--duration", "forever", check=False)
    assert bad.returncode == 2 and "not a duration" in bad.stderr
    assert len(ana.json("event", "list", "--all")) == 1
    # status counts the new collections; export carries them (JSON and one CSV).
    status = ana.run("status").stdout
    assert "0 skills, 1 upcoming events, 0 open shifts" in status
    exported = json.loads(ana.run("export").stdout)
    assert [e["id"] for e in exported["events"]] == [ev["id"]] and len(exported["shifts"]) == 1
    csv_text = ana.run("export", "--format", "csv", "--collection", "bring").stdout
    assert csv_text.splitlines()[0].startswith("id,event_id,event,member") and "lentil soup" in csv_text


def test_cli_skills_settings_and_hours(tmp_path: Path) -> None:
    a_path, _ = member_homes(tmp_path, ["ana", "bo"])
    ana = CLI(a_path)
    sk = ana.json("skill", "add", "Bike repair", "--category", "Repair", "--teach")
    assert sk["teach"] and sk["category"] == "repair"
    assert [s["id"] for s in ana.json("skill", "list", "--member", "ana", "--search", "bike")] == [sk["id"]]
    assert ana.json("skill", "list", "--member", "bo") == []
    # Time bank: off by default, and then nothing about hours is shown.
    assert ana.json("settings") == {"timebank": False}
    off = ana.run("hours", check=False)
    assert off.returncode == 4 and "time bank is off" in off.stderr and off.stdout == ""
    ana.run("settings", "timebank", "on")
    x = ana.json("hours", "log", "--with", "bo", "--hours", "1.5", "--for", "fixed the back brake")
    assert x["minutes"] == 90 and x["status"] == "pending" and x["giver_handle"] == "ana"
    report = ana.json("hours")
    assert [e["id"] for e in report["exchanges"]] == [x["id"]] and report["balances"] == []
    ana.run("hours", "confirm", x["id"])  # confirming your own side again changes nothing:
    assert ana.json("hours")["balances"] == []  # it counts once bo confirms
    me_too = ana.run("hours", "log", "--with", "ana", "--hours", "1", "--for", "x", check=False)
    assert me_too.returncode == 2 and "between two members" in me_too.stderr


async def _wait_for(predicate, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_two_members_whole_flow_over_a_live_loopback_session(tmp_path: Path) -> None:
    a_path, b_path = member_homes(tmp_path, ["ana", "bo"])
    a, b = open_service(a_path), open_service(b_path)
    ga, gb = gatherings(a.board), gatherings(b.board)
    server = LiveSync(a, listen=("127.0.0.1", 0), discovery=False)
    await server.start()
    assert server.bound is not None
    client = LiveSync(b, listen=None, discovery=False, manual_peers=[f"127.0.0.1:{server.bound[1]}"])
    await client.start()
    try:
        await _wait_for(lambda: any(p.in_sync for p in client.peers.values()), "the first sync")
        # Skills meet needs.
        ga.add_skill("Bike repair", "repair", teach=True)
        nid = b.board.add_need("My bike brakes squeal", category="repair")
        await _wait_for(lambda: gb.skills() and nid in a.board.view().needs, "skill and need both ways")
        (m,) = skills_for(b.board.need(nid), gb.skills())
        assert m.skill.author == a.me and m.skill.teach and "category repair" in m.reasons
        # A gathering with a shift; bo answers, brings, takes the shift.
        (eid,) = ga.add_event("Repair café", a.clock() + 86_400_000, 180, "the library", kind="workshop")
        sid = ga.add_shift(eid, "tools out", a.clock() + 86_000_000, 60, 1)
        await _wait_for(lambda: sid in gb.view().shifts, "the event and shift on bo")
        gb.rsvp(eid, "yes")
        gb.add_bring(eid, "spare tubes")
        gb.take_shift(sid)
        await _wait_for(lambda: ga.shift(sid).takers == (b.me,) and ga.bring_list(eid), "bo's answers on ana")
        assert ga.event(eid).rsvps == {b.me: "yes"}
        # The time bank: on for both, an exchange counted once bo confirms.
        ga.set_timebank(True)
        await _wait_for(lambda: gb.settings().timebank, "the setting on bo")
        xid = ga.log_hours(b.me, 90, "brakes", need=nid)
        await _wait_for(lambda: xid in gb.view().exchanges, "the exchange on bo")
        gb.confirm(xid)
        await _wait_for(lambda: ga.exchange(xid).status == ExchangeStatus.CONFIRMED, "bo's confirmation")
        assert ga.balances()[a.me].given_minutes == 90 and ga.balances()[b.me].received_minutes == 90
    finally:
        await client.close()
        await server.close()
    # Everything that arrived was persisted on both sides.
    for path in (a_path, b_path):
        g = gatherings(open_service(path).board)
        assert g.exchange(xid).counted and g.shift(sid).takers and len(g.skills()) == 1


def test_the_trust_gate_accepts_exactly_the_shared_change_and_nothing_else_under_its_actor(tmp_path: Path) -> None:
    import pytest

    from circle.crdt.am import AmDoc
    from circle.crdt.gatherings import _EXT_ACTOR, EXT_COLLECTIONS, extension_change
    from circle.node.authorship import UnverifiedChanges

    a_path, _ = member_homes(tmp_path, ["ana", "bo"])
    ana = open_service(a_path)
    # A look-alike under the same fixed actor that turns the time bank on: refused.
    forged = AmDoc.new(actor=_EXT_ACTOR)
    with forged.edit() as ed:
        ed.create_collections(EXT_COLLECTIONS)
        ed.put_record("settings", "circle", {"timebank": True})
    (fake,) = forged.changes_since([])
    assert fake != extension_change()
    before = ana.doc.heads()
    with pytest.raises(UnverifiedChanges):
        ana.apply_remote([fake])
    assert ana.doc.heads() == before and not ana.doc.has_collection("settings")
    # The genuine one, arriving from a peer without any proof: accepted.
    assert ana.apply_remote([extension_change()])
    assert gatherings(ana.board).settings().timebank is False


def test_a_member_cannot_answer_take_a_shift_or_list_a_skill_in_anothers_name(tmp_path: Path) -> None:
    """DESIGN §8: a malicious member may write junk under its own name, never
    forge another's. bo's device writes ana's RSVP, shift take and a skill
    "by ana" with raw edits (a modified client); ana's copy accepts the signed
    change but credits nothing to ana."""
    a_path, b_path = member_homes(tmp_path, ["ana", "bo"])
    ana, bo = open_service(a_path), open_service(b_path)
    ga = gatherings(ana.board)
    (eid,) = ga.add_event("Potluck", ana.clock() + 86_400_000, 120, "hall")
    sid = ga.add_shift(eid, "door", ana.clock() + 86_000_000, 60, 1)
    bo.apply_remote(ana.doc.changes_since([]), ana.gate.proofs_since(ana.doc, []))
    before = bo.doc.heads()
    with bo.doc.edit() as ed:
        ed.map_put("events", eid, "rsvps", ana.me, "no")
        ed.map_put("events", eid, "rsvps", bo.me, "yes")  # bo's own answer is fine
        ed.map_put("shifts", sid, "takes", ana.me, 1)
        ed.put_record("skills", "forged01", {"title": "Lock picking", "category": "", "details": "",
                                             "teach": True, "author": ana.me, "created_at": 1,
                                             "updated_at": 1, "removed_at": None})
    assert bo.board.on_commit is not None
    bo.board.on_commit()  # persist and sign, as any local edit
    ana.apply_remote(bo.doc.changes_since(before), bo.gate.proofs_since(bo.doc, before))
    for look in (lambda: ga.event(eid), lambda: ga.view().events[eid]):
        assert look().rsvps == {bo.me: "yes"}
    assert ga.shift(sid).takes == {} and ga.view().shifts[sid].open_slots == 1
    assert ga.skill("forged01").author == bo.me  # credited to the device that wrote it
    assert [s.author for s in ga.skills()] == [bo.me]
