"""Issue 9's attacks, as an attacker would run them.

Each test plays a removed member with all its old keys, a member running a
modified client, or a straggler that has not heard of a removal, against real
services on disk (signed statements, change proofs, the gate). Transports are
in test_removal_live.py (real `circle serve` processes).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from circle.errors import CircleError
from circle.net.keys import key_check, member_id_for, new_epoch_key
from circle.net.membership_rules import actor_for
from circle.net.statements import Kind, Statement, sign
from circle.node import membership
from circle.node.authorship import UnverifiedChanges
from circle.node.service import CircleService
from factories import member_homes
from livehelp import open_service


def services(tmp_path: Path, handles: list[str]) -> list[CircleService]:
    return [open_service(p) for p in member_homes(tmp_path, handles)]


def deliver(src: CircleService, dst: CircleService) -> None:
    """Everything `src` has, with its proofs (a relay envelope, a bundle or a
    session would carry the same), duplicates included."""
    dst.apply_remote(src.doc.changes_since([]), src.gate.proofs_since(src.doc, []))


def forge(svc: CircleService, kind: Kind, **body: object) -> Statement:
    """A modified client: sign any statement and write it, no checks."""
    m = svc.membership()
    ident = svc.home.identity
    st = sign(ident, Statement(kind, svc.config.circle_id, ident.verify_key, ident.verify_key, int(svc.clock()),
                               tuple(m.heads), **body))  # type: ignore[arg-type]
    svc.board.add_statements([(st.id.hex(), st.raw)])
    return st


def needs(svc: CircleService) -> set[str]:
    return {n.title for n in svc.board.needs("all")}


# --- 1. a removed member plants an epoch through a straggler ------------------


def test_removed_member_cannot_plant_an_epoch_through_a_straggler(tmp_path: Path) -> None:
    ana, bo, cy = services(tmp_path, ["ana", "bo", "cy"])
    _, rotated = membership.remove(ana, "cy")  # bo is offline: a straggler
    # cy, still unaware, mints an epoch with a key it chose, granted to all.
    cid, evil, number = cy.config.circle_id, new_epoch_key(), 2**31 - 1
    m = cy.membership()
    grants = tuple((d.key, membership.seal_grant(d.box, cid, member_id_for(d.member), number, evil))
                   for d in sorted(m.active_devices(), key=lambda d: d.key))
    forge(cy, Kind.EPOCH, number=number, check=key_check(evil), grants=grants)
    deliver(cy, bo)  # through a relay envelope under the old key: bo still trusts cy
    deliver(bo, ana)
    deliver(ana, bo)
    for svc in (ana, bo):
        mm = svc.membership()
        assert mm.current is not None and mm.current.number == rotated
        assert svc.config.epoch == rotated and svc.config.epoch_key == ana.config.epoch_key != evil
        assert any(i.kind == "EPOCH" and "cy was removed" in i.reason for i in mm.ignored)
    assert ana.config.epoch_key not in cy.config.epoch_keys.values()


# --- 2. removal cannot be undone -------------------------------------------------


def test_nobody_can_undo_a_removal(tmp_path: Path) -> None:
    ana, bo, cy = services(tmp_path, ["ana", "bo", "cy"])
    membership.remove(ana, "cy")
    deliver(ana, bo)
    # bo (a member with a modified client) re-adds cy's old key: refused.
    forge(bo, Kind.ADD_MEMBER, subject=cy.home.identity.verify_key, box=cy.home.identity.box_public,
          handle="cy", zone="")
    deliver(bo, ana)
    for svc in (ana, bo):
        assert not svc.membership().members[cy.home.identity.verify_key].active
        assert any("coming back takes a new identity" in i.reason for i in svc.membership().ignored)
    with pytest.raises(CircleError):
        membership.add_member(ana, cy.home.identity.verify_key, cy.home.identity.box_public, "cy", "")


def test_a_removed_member_writing_many_statements_through_a_straggler_changes_nothing(tmp_path: Path) -> None:
    ana, bo, cy, dee = services(tmp_path, ["ana", "bo", "cy", "dee"])
    membership.remove(ana, "cy")  # bo and dee have not heard
    puppet = os.urandom(32)
    for i in range(40):  # many ops first, as the old LWW attack did
        forge(cy, Kind.PROFILE, handle=f"cy{i}", zone="")
    forge(cy, Kind.ADD_MEMBER, subject=puppet, box=os.urandom(32), handle="puppet", zone="")
    forge(cy, Kind.REMOVE, subject=dee.home.identity.verify_key)  # and a third member
    deliver(cy, bo)
    assert bo.membership().members[puppet].active  # the straggler believed it...
    for a, b in [(bo, ana), (ana, bo), (ana, dee), (dee, ana)]:
        deliver(a, b)
    for svc in (ana, bo, dee):  # ...until it heard of the removal
        mm = svc.membership()
        assert puppet not in mm.members
        assert mm.members[dee.home.identity.verify_key].active
        assert not mm.members[cy.home.identity.verify_key].active
        assert mm.members[cy.home.identity.verify_key].handle == "cy"


def test_concurrent_mutual_removal_removes_both(tmp_path: Path) -> None:
    ana, bo, cy = services(tmp_path, ["ana", "bo", "cy"])
    membership.remove(ana, "cy")
    membership.remove(cy, "ana")  # at the same time, each unaware of the other
    for a, b in [(ana, bo), (cy, bo), (bo, ana), (bo, cy)]:
        deliver(a, b)
    for svc in (ana, bo, cy):
        mm = svc.membership()
        assert {m.handle for m in mm.members.values() if m.active} == {"bo"}
    # bo, the one left, rotated to a key neither holds
    bo_key = bo.config.epoch_key
    assert bo.membership().current is not None
    assert bo_key not in ana.config.epoch_keys.values() and bo_key not in cy.config.epoch_keys.values()


# --- 3. an out-of-range or colliding epoch number ---------------------------------


def test_out_of_range_epoch_is_ignored_and_rotation_still_works(tmp_path: Path) -> None:
    ana, bo, cy = services(tmp_path, ["ana", "bo", "cy"])
    ident = bo.home.identity
    good = sign(ident, Statement(Kind.EPOCH, bo.config.circle_id, ident.verify_key, ident.verify_key, 1,
                                 tuple(bo.membership().heads), number=5, check=bytes(16), grants=()))
    # Re-sign the same bytes with the number patched to 2^32-1 (what a modified client can send).
    head = good.raw[:-64]
    at = head.index(struct.pack(">I", 5) + bytes(16))
    raw = head[:at] + struct.pack(">I", 0xFFFFFFFF) + head[at + 4:]
    raw += ident.sign(raw)
    bo.board.add_statements([(os.urandom(8).hex(), raw)])
    forge(bo, Kind.EPOCH, number=ana.config.epoch, check=bytes(16), grants=())  # a colliding number
    deliver(bo, ana)
    _, number = membership.remove(ana, "cy")  # must not crash, must not be blocked
    assert 0 < number < 2**31 and ana.config.epoch == number
    deliver(ana, bo)
    assert bo.config.epoch == number and bo.config.epoch_key == ana.config.epoch_key
    reasons = " ".join(i.reason for i in ana.membership().ignored)
    assert "out of range" in reasons and "already used" in reasons


# --- 5. authorship ----------------------------------------------------------------


def test_a_change_written_as_another_member_is_refused(tmp_path: Path) -> None:
    ana, bo = services(tmp_path, ["ana", "bo"])
    before = ana.doc.heads()
    # bo writes with ana's actor (its device binding) and signs with its own key
    bo.doc.set_actor(actor_for(bo.config.circle_id, ana.home.identity.verify_key) + os.urandom(8))
    bo.board.add_need("Send money to this account")
    forged = bo.doc.changes_since(ana.doc.heads())
    with pytest.raises(UnverifiedChanges):
        ana.apply_remote(forged, bo.gate.proofs_since(bo.doc, ana.doc.heads()))
    with pytest.raises(UnverifiedChanges):
        ana.apply_remote(forged, [])  # and without any proof
    assert ana.doc.heads() == before and "Send money to this account" not in needs(ana)


def test_an_author_field_naming_someone_else_shows_the_real_writer(tmp_path: Path) -> None:
    ana, bo = services(tmp_path, ["ana", "bo"])
    with bo.doc.edit() as ed:  # a modified client: the record says it is by ana
        ed.put_record("needs", "forged01", {"title": "Meet me alone at 2am", "author": ana.me,
                                            "created_at": bo.clock(), "updated_at": bo.clock(),
                                            "expires_at": bo.clock() + 10**9, "urgency": "now"})
    bo._local_commit()
    deliver(bo, ana)
    need = ana.board.need("forged01")
    assert need.author == bo.me  # shown as bo's, the verified writer
    assert ana.board.writer_of("needs", "forged01") == bo.me
    notes = [m.reason for m in ana.board.view().malformed if m.id == "forged01"]
    assert notes and "says it is by ana but was written by bo" in notes[0]


def test_a_member_cannot_replace_another_members_box_key(tmp_path: Path) -> None:
    ana, bo, cy = services(tmp_path, ["ana", "bo", "cy"])
    evil_box = os.urandom(32)
    ident = bo.home.identity
    # bo certifies a "new device" for ana with its own signature and a box key it controls
    st = sign(ident, Statement(Kind.ADD_DEVICE, bo.config.circle_id, ident.verify_key,
                               ana.home.identity.verify_key, 1, tuple(bo.membership().heads),
                               subject=os.urandom(32), box=evil_box, cert=os.urandom(64)))
    bo.board.add_statements([(st.id.hex(), st.raw)])
    deliver(bo, cy)
    membership.remove(cy, "bo")  # the next rotation
    deliver(cy, ana)
    assert ana.config.epoch_key == cy.config.epoch_key  # ana could open its grant
    devices = cy.membership().members[ana.home.identity.verify_key].devices
    assert devices == [ana.home.identity.verify_key]


# --- removed writers' edits have no effect ------------------------------------------


def test_edits_by_a_removed_member_after_its_removal_are_ignored_everywhere(tmp_path: Path) -> None:
    ana, bo, cy = services(tmp_path, ["ana", "bo", "cy"])
    cy.board.add_need("Before removal")
    deliver(cy, ana)
    membership.remove(ana, "cy")
    cy.board.add_need("After removal")  # cy does not know yet
    deliver(cy, bo)  # a straggler takes it...
    assert "After removal" in needs(bo)
    deliver(ana, bo)  # ...then hears of the removal
    deliver(bo, ana)
    for svc in (ana, bo):
        assert "Before removal" in needs(svc) and "After removal" not in needs(svc)
        assert any("after they were removed" in m.reason for m in svc.board.view().malformed)


def test_a_snapshot_without_proofs_is_refused(tmp_path: Path) -> None:
    ana, bo = services(tmp_path, ["ana", "bo"])
    bo.board.add_need("unsigned")
    with pytest.raises(CircleError):
        ana.merge_snapshot(bo.doc.save())  # a bare saved document: no proofs, no entry
    assert "unsigned" not in needs(ana)


def test_status_says_what_was_ignored_and_tells_the_removed_device(tmp_path: Path) -> None:
    ana, bo, cy = services(tmp_path, ["ana", "bo", "cy"])
    membership.remove(ana, "cy")
    forge(cy, Kind.PROFILE, handle="ana-real", zone="")
    deliver(cy, bo)
    deliver(ana, bo)
    texts = [i["text"] for i in bo.status()["membership"]["ignored"]]
    assert "1 membership change by cy ignored: cy was removed by ana before it" in texts
    deliver(ana, cy)  # the removed device hears of it (e.g. through the old mailbox)
    notice = cy.status()["me"]["removed_notice"]
    assert notice is not None and notice.startswith("You were removed from Eastside by ana on ")


def test_a_circle_from_before_signed_membership_is_refused_in_one_sentence(tmp_path: Path) -> None:
    from clihelp import CLI

    (ana_path,) = member_homes(tmp_path, ["ana"])
    ana = open_service(ana_path)
    # What an old (schema 1) store looks like to this code: schema 1 and no
    # signed statements. (schema 1 alone is a value any member can write: it
    # must not refuse a circle whose founding statement is there; see
    # tests/test_hostile_circle.py.)
    with ana.doc.edit() as ed:
        ed.put_root_scalar("meta", "schema", 1)
        for sid in ana.board.statement_ids():
            ed.put_root_scalar("statements", sid, None)
    ana._local_commit()
    proc = CLI(ana_path).run("need", "list", check=False)
    assert proc.returncode != 0
    assert "without signed membership" in proc.stderr and "Traceback" not in proc.stderr


def test_a_junk_proof_riding_along_a_good_one_is_not_kept_or_forwarded(tmp_path: Path) -> None:
    ana, bo = services(tmp_path, ["ana", "bo"])
    before = bo.doc.heads()
    bo.board.add_need("one")
    bo.board.add_need("two")
    metas = bo.doc.change_metas(before)
    first, last = metas[0].hash, metas[-1].hash
    proofs = [last + bo.gate.proofs[last], first + os.urandom(64)]  # the later one covers the earlier
    ana.apply_remote(bo.doc.changes_since(before), proofs)
    assert {"one", "two"} <= needs(ana)  # covered: accepted
    assert first not in ana.gate.proofs  # but the junk proof is not kept to be passed on
    assert ana.gate.proofs[last] == bo.gate.proofs[last]
