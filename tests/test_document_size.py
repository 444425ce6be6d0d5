"""Issue 16 case 3: the size a document may reach is one number, the same on every path.

Peers' bytes are capped before Automerge inflates them (a zlib bomb), but a
member's own store is not a peer: a document that grew past the cap for one
message, through honest edits or a member's junk, must still open. Local
edits stop a margin below what every path carries (a snapshot, a bundle,
relay parts), so nobody can write a document another member's path refuses.

The documents here are built of long repeated text: Automerge deflates it, so
they are quick to build yet inflate past the caps, which is what the caps measure.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from circle.crdt import amscan
from circle.crdt.am import EDIT_LIMIT, AmDoc
from circle.errors import DocumentFull
from circle.node.home import Home
from circle.node.service import CircleService

MIB = 1 << 20


def grow(svc: CircleService, mib_per_record: int, records: int) -> None:
    words = "help with the move "
    for i in range(records):
        with svc.doc.edit() as ed:
            ed.put_record("needs", f"big{i}", {"text": words * (mib_per_record * MIB // len(words)) + str(i)})
    svc.persist()


def test_own_document_past_the_per_message_cap_still_opens(tmp_path: Path) -> None:
    """Was: the store loaded through the 64 MiB cap meant for one peer message, so
    a circle that grew past it could no longer be opened by any command."""
    home = Home.create(tmp_path / "ann", None)
    svc = CircleService.create(home, "big circle", "ann", "")
    grow(svc, 8, 9)
    svc.compact()
    saved = svc.doc.save()
    assert amscan.check_inflation(saved, amscan.MAX_DOCUMENT) > amscan.MAX_INFLATE  # past one message's cap
    again = CircleService.open(Home.open(tmp_path / "ann", None))
    assert len(again.doc.record_ids("needs")) == 9
    # ... and a new member can take it as a snapshot (the same number bounds every path).
    assert len(AmDoc.load(saved).record_ids("needs")) == 9


def test_an_edit_past_the_limit_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    home = Home.create(tmp_path / "ann", None)
    svc = CircleService.create(home, "big circle", "ann", "")
    with pytest.raises(DocumentFull) as refused:
        grow(svc, 16, EDIT_LIMIT // (16 * MIB) + 2)
    assert "nothing was changed" in str(refused.value)
    svc.persist()
    heads, count = svc.doc.heads(), len(svc.doc.record_ids("needs"))
    assert count * 16 * MIB > EDIT_LIMIT - 16 * MIB  # it stopped at the limit, not before
    with pytest.raises(DocumentFull):
        svc.board.add_need("one more", details="", category="other", tags=[], zone="")
    assert svc.doc.heads() == heads
    svc.compact()
    saved = svc.doc.save()
    assert amscan.check_inflation(saved, amscan.MAX_DOCUMENT) <= amscan.MAX_DOCUMENT  # every path carries it
    again = CircleService.open(Home.open(tmp_path / "ann", None))
    assert len(again.doc.record_ids("needs")) == count
    with pytest.raises(DocumentFull):  # the limit holds after a restart too
        again.board.add_need("one more", details="", category="other", tags=[], zone="")


def test_an_import_that_would_cross_the_limit_is_refused_whole(tmp_path: Path) -> None:
    import json

    from circle.crdt.transfer import export_json, import_records, parse_import

    source = CircleService.create(Home.create(tmp_path / "src", None), "source", "sam", "")
    for i in range(3):
        source.board.add_need(f"need {i}", details="x" * 1000, category="other", tags=[], zone="")
    data = parse_import(json.dumps(export_json(source.board)))
    svc = CircleService.create(Home.create(tmp_path / "ann", None), "big circle", "ann", "")
    svc.doc.inflated = EDIT_LIMIT - 2000  # as if grown this far: the 3 records (~3 KB) do not fit
    heads = svc.doc.heads()
    with pytest.raises(DocumentFull, match="nothing was changed"):
        import_records(svc.board, data)
    assert svc.doc.heads() == heads and not svc.doc.record_ids("needs")
    svc.doc.inflated = EDIT_LIMIT - 10_000  # room for them: all three land
    assert import_records(svc.board, data)["needs"]["added"] == 3
