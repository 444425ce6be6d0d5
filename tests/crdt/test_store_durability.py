"""The snapshot + log store: appends, torn tails, damage, follow, compaction."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from circle.crdt.am import AmDoc
from circle.crdt.store import DocStore, SecretBoxCipher, scan_records
from circle.errors import StoreCorrupt


def _doc_with(n: int) -> tuple[AmDoc, list[bytes]]:
    doc = AmDoc.new()
    with doc.edit() as ed:
        ed.create_collections(["needs"])
    base = doc.heads()
    for i in range(n):
        with doc.edit() as ed:
            ed.put_record("needs", f"r{i}", {"title": f"need {i}"})
    return doc, doc.changes_since(base)


def _load(store: DocStore) -> AmDoc:
    loaded = store.load()
    doc = AmDoc.load(loaded.snapshot)
    doc.apply_changes(loaded.changes)
    return doc


@pytest.fixture(params=["plain", "encrypted"])
def cipher(request: pytest.FixtureRequest) -> SecretBoxCipher | None:
    return SecretBoxCipher(os.urandom(32)) if request.param == "encrypted" else None


def test_append_and_reload(tmp_path: Path, cipher: SecretBoxCipher | None) -> None:
    doc, changes = _doc_with(5)
    base = AmDoc.load(doc.save())  # snapshot already has everything...
    store = DocStore(tmp_path / "s", cipher)
    empty = AmDoc.new()
    with empty.edit() as ed:
        ed.create_collections(["needs"])
    store.create(AmDoc.new().save())
    store.append(doc.changes_since([]))
    again = _load(DocStore(tmp_path / "s", cipher))
    assert sorted(again.record_ids("needs")) == sorted(base.record_ids("needs"))


def test_encrypted_files_hold_no_plaintext(tmp_path: Path) -> None:
    doc, _ = _doc_with(3)
    store = DocStore(tmp_path / "s", SecretBoxCipher(os.urandom(32)))
    store.create(AmDoc.new().save())
    store.append(doc.changes_since([]))
    store2 = DocStore(tmp_path / "s2", SecretBoxCipher(os.urandom(32)))
    store2.create(doc.save())
    for path in [*(tmp_path / "s").iterdir(), *(tmp_path / "s2").iterdir()]:
        assert b"need 1" not in path.read_bytes()


def test_torn_tail_is_ignored_then_cut(tmp_path: Path, cipher: SecretBoxCipher | None) -> None:
    doc, changes = _doc_with(4)
    store = DocStore(tmp_path / "s", cipher)
    store.create(AmDoc.new().save())
    all_changes = doc.changes_since([])
    store.append(all_changes[:-1])
    log = tmp_path / "s" / "log"
    good = log.stat().st_size
    store.append(all_changes[-1:])
    with open(log, "r+b") as fh:  # a crash mid-append: half the last record
        fh.truncate(good + (log.stat().st_size - good) // 2)
    s2 = DocStore(tmp_path / "s", cipher)
    loaded = s2.load()
    assert loaded.damaged_tail and len(loaded.changes) == len(all_changes) - 1
    s2.append(all_changes[-1:])  # the next append cuts the torn bytes first
    assert len(DocStore(tmp_path / "s", cipher).load().changes) == len(all_changes)


def test_zero_filled_tail_is_torn_not_corrupt(tmp_path: Path) -> None:
    doc, _ = _doc_with(2)
    store = DocStore(tmp_path / "s")
    store.create(AmDoc.new().save())
    store.append(doc.changes_since([]))
    with open(tmp_path / "s" / "log", "ab") as fh:
        fh.write(b"\0" * 4096)
    assert DocStore(tmp_path / "s").load().damaged_tail


@pytest.mark.parametrize("where", ["length", "payload"])
def test_damage_in_the_middle_is_refused_and_nothing_changes(tmp_path: Path, where: str) -> None:
    doc, _ = _doc_with(6)
    store = DocStore(tmp_path / "s")
    store.create(AmDoc.new().save())
    for change in doc.changes_since([]):
        store.append([change])
    log = tmp_path / "s" / "log"
    data = bytearray(log.read_bytes())
    offset = 24 + (0 if where == "length" else 30)  # first record's length field / payload
    data[offset] ^= 0x40
    log.write_bytes(bytes(data))
    before = log.read_bytes()
    with pytest.raises(StoreCorrupt, match="damaged at byte"):
        DocStore(tmp_path / "s").load()
    with pytest.raises(StoreCorrupt):
        DocStore(tmp_path / "s").append([b"x"])
    assert log.read_bytes() == before


@pytest.mark.parametrize("damage", ["truncate", "flip", "foreign", "empty"])
def test_bad_snapshot_is_a_clear_error(tmp_path: Path, damage: str) -> None:
    doc, _ = _doc_with(3)
    store = DocStore(tmp_path / "s")
    store.create(doc.save())
    snap = tmp_path / "s" / "snapshot"
    data = snap.read_bytes()
    snap.write_bytes({"truncate": data[: len(data) // 2], "flip": data[:-3] + bytes([data[-3] ^ 1]) + data[-2:],
                      "foreign": b"PK\x03\x04 this is a zip file" * 4, "empty": b""}[damage])
    with pytest.raises(StoreCorrupt):
        DocStore(tmp_path / "s").load()


def test_wrong_key_is_refused(tmp_path: Path) -> None:
    doc, _ = _doc_with(2)
    DocStore(tmp_path / "s", SecretBoxCipher(os.urandom(32))).create(doc.save())
    with pytest.raises(StoreCorrupt):
        DocStore(tmp_path / "s", SecretBoxCipher(os.urandom(32))).load()
    with pytest.raises(StoreCorrupt):
        DocStore(tmp_path / "s", None).load()


def test_follow_and_compaction_between_two_handles(tmp_path: Path, cipher: SecretBoxCipher | None) -> None:
    doc, _ = _doc_with(0)
    writer = DocStore(tmp_path / "s", cipher)
    writer.create(doc.save())
    reader = DocStore(tmp_path / "s", cipher)
    reader.load()
    more, _ = _doc_with(3)
    writer.append(more.changes_since([]))
    got, reloaded = reader.poll()
    assert not reloaded and len(got) == len(more.changes_since([]))
    assert reader.poll() == ([], False)
    with writer.compacting() as ticket:
        ticket.commit(more.save())
    got, reloaded = reader.poll()
    assert reloaded and AmDoc.load(got[0]).record_ids("needs") == more.record_ids("needs")
    assert writer.log_size() == 0


def test_scan_records_states() -> None:
    assert scan_records(b"") == ([], 0, "ok")
    assert scan_records(b"\x00\x00")[2] == "torn"
    assert scan_records(b"\x01" * 64)[2] == "corrupt"
