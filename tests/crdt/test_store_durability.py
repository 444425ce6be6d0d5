"""The snapshot + log store: appends, torn tails, damage, follow, compaction."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from circle.crdt.am import AmDoc
from circle.crdt.store import DocStore, SecretBoxCipher, scan_records
from circle.errors import StoreCorrupt, StoreError


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


def test_crash_mid_append_is_ignored_then_cut(tmp_path: Path, cipher: SecretBoxCipher | None) -> None:
    doc, changes = _doc_with(4)
    store = DocStore(tmp_path / "s", cipher)
    store.create(AmDoc.new().save())
    all_changes = doc.changes_since([])
    store.append(all_changes[:-1])
    log, head = tmp_path / "s" / "log", tmp_path / "s" / "head"
    good, acknowledged = log.stat().st_size, head.read_bytes()
    store.append(all_changes[-1:])
    # A crash mid-append: half the last record reached the disk, the head was never updated.
    with open(log, "r+b") as fh:
        fh.truncate(good + (log.stat().st_size - good) // 2)
    head.write_bytes(acknowledged)
    s2 = DocStore(tmp_path / "s", cipher)
    loaded = s2.load()
    assert loaded.damaged_tail and loaded.damage is None and len(loaded.changes) == len(all_changes) - 1
    s2.append(all_changes[-1:])  # the next append cuts the torn bytes first
    assert len(DocStore(tmp_path / "s", cipher).load().changes) == len(all_changes)


def _five_saved(tmp_path: Path, cipher: SecretBoxCipher | None = None) -> tuple[DocStore, list[bytes]]:
    doc, _ = _doc_with(5)
    store = DocStore(tmp_path / "s", cipher)
    store.create(AmDoc.new().save())
    all_changes = doc.changes_since([])
    for change in all_changes:
        store.append([change])  # five acknowledged (fsynced) appends
    return store, all_changes


def _flip_last(data: bytearray) -> None:
    data[-5] ^= 0x01


def _cut_records(n: int) -> Callable[[bytearray], None]:
    def cut(data: bytearray) -> None:
        pos, ends = 40, []
        while pos < len(data):
            pos += 24 + int.from_bytes(data[pos : pos + 4], "big")
            ends.append(pos)
        del data[ends[-1 - n] :]
    return cut


def _zero_last_4k(data: bytearray) -> None:
    n = min(4096, len(data) - 40)  # the last block (or all records, in this small log)
    data[-n:] = b"\0" * n


@pytest.mark.parametrize("harm", [_flip_last, _cut_records(1), _cut_records(3), _zero_last_4k],
                         ids=["bit-flip-last", "cut-1", "cut-3", "zero-last-4k"])
def test_damage_at_the_end_is_reported_and_never_cut_away(tmp_path: Path, cipher: SecretBoxCipher | None,
                                                          harm: Callable[[bytearray], None]) -> None:
    """Issue 16 case 5: the end of a log of saved records is damaged."""
    _five_saved(tmp_path, cipher)
    log = tmp_path / "s" / "log"
    data = bytearray(log.read_bytes())
    harm(data)
    log.write_bytes(bytes(data))
    before = log.read_bytes()
    store = DocStore(tmp_path / "s", cipher)
    loaded = store.load()
    assert loaded.damage is not None and loaded.damage.kind == "tail"
    assert "saved changes are missing or unreadable" in loaded.damage.message
    with pytest.raises(StoreCorrupt, match="circle doctor"):
        store.append([b"next edit"])
    assert log.read_bytes() == before  # the damaged bytes are still there


def test_repair_keeps_the_good_prefix_and_sets_the_rest_aside(tmp_path: Path) -> None:
    _, all_changes = _five_saved(tmp_path)
    log = tmp_path / "s" / "log"
    data = bytearray(log.read_bytes())
    _flip_last(data)
    log.write_bytes(bytes(data))
    store = DocStore(tmp_path / "s")
    assert store.load().damage is not None
    report = store.repair()
    assert len(report.saved_aside) == 1
    aside = report.saved_aside[0].read_bytes()
    assert bytes(data).endswith(aside) and len(aside) > 0  # every damaged byte kept
    again = DocStore(tmp_path / "s")
    loaded = again.load()
    assert loaded.damage is None and len(loaded.changes) == len(all_changes) - 1
    again.append([all_changes[-1]])  # and the store takes edits again
    assert len(DocStore(tmp_path / "s").load().changes) == len(all_changes)


def test_rolled_back_snapshot_or_log_is_detected(tmp_path: Path) -> None:
    doc, _ = _doc_with(3)
    store = DocStore(tmp_path / "s")
    store.create(AmDoc.new().save())
    store.append(doc.changes_since([]))
    old = {name: (tmp_path / "s" / name).read_bytes() for name in ("snapshot", "log")}
    with store.compacting() as ticket:
        ticket.commit(doc.save())
    more, _ = _doc_with(4)
    store.append(more.changes_since(doc.heads()))
    for name in ("snapshot", "log"):
        current = (tmp_path / "s" / name).read_bytes()
        (tmp_path / "s" / name).write_bytes(old[name])  # an older copy put back
        loaded = DocStore(tmp_path / "s").load()
        assert loaded.damage is not None and loaded.damage.kind == "rollback", name
        (tmp_path / "s" / name).write_bytes(current)
    assert DocStore(tmp_path / "s").load().damage is None


def test_a_log_or_snapshot_from_another_circle_is_refused(tmp_path: Path) -> None:
    from circle.crdt.store import PlainCipher

    doc, _ = _doc_with(2)
    mine, theirs = PlainCipher(os.urandom(32)), PlainCipher(os.urandom(32))
    DocStore(tmp_path / "a", mine).create(doc.save())
    DocStore(tmp_path / "b", theirs).create(doc.save())
    for name in ("log", "snapshot"):
        backup = (tmp_path / "a" / name).read_bytes()
        (tmp_path / "a" / name).write_bytes((tmp_path / "b" / name).read_bytes())
        with pytest.raises(StoreCorrupt, match="another circle"):
            DocStore(tmp_path / "a", mine).load()
        (tmp_path / "a" / name).write_bytes(backup)
    DocStore(tmp_path / "a", mine).load()


@pytest.mark.parametrize("name", ["snapshot", "log", "head", "lock"])
def test_a_fifo_in_place_of_a_store_file_never_blocks(tmp_path: Path, name: str) -> None:
    doc, _ = _doc_with(1)
    DocStore(tmp_path / "s").create(doc.save())
    target = tmp_path / "s" / name
    target.unlink()
    os.mkfifo(target)
    with pytest.raises(StoreError, match="not a regular file|missing"):
        store = DocStore(tmp_path / "s")
        loaded = store.load()
        if loaded.damage is not None:  # a head that cannot be read is reported, not fatal
            raise StoreError(loaded.damage.message + " (not a regular file)")


@pytest.mark.parametrize("where", ["length", "payload"])
def test_damage_in_the_middle_is_refused_and_nothing_changes(tmp_path: Path, where: str) -> None:
    doc, _ = _doc_with(6)
    store = DocStore(tmp_path / "s")
    store.create(AmDoc.new().save())
    for change in doc.changes_since([]):
        store.append([change])
    log = tmp_path / "s" / "log"
    data = bytearray(log.read_bytes())
    offset = 40 + (0 if where == "length" else 30)  # first record's length field / payload
    data[offset] ^= 0x40
    log.write_bytes(bytes(data))
    before = log.read_bytes()
    damaged = DocStore(tmp_path / "s")
    loaded = damaged.load()  # the good prefix loads; the damage is named
    assert loaded.damage is not None and "damaged at byte 40" in loaded.damage.message
    assert loaded.changes == []
    with pytest.raises(StoreCorrupt, match="circle doctor"):
        damaged.append([b"x"])
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


@pytest.mark.parametrize("err", [errno.ENOLCK, errno.EIO])
def test_lock_failures_are_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    """flock returning ENOLCK (NFS) or EIO: a StoreError naming the cause, never an OSError."""
    import fcntl

    doc, _ = _doc_with(1)
    store = DocStore(tmp_path / "s")
    store.create(doc.save())

    def failing(fd: int, op: int) -> None:
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(fcntl, "flock", failing)
    with pytest.raises(StoreError) as info:
        DocStore(tmp_path / "s").load()
    assert ("file locks" if err == errno.ENOLCK else "input/output error") in str(info.value)


def test_os_error_sentences_name_the_cause() -> None:
    from circle.crdt.store import os_error_sentence

    assert "read-only" in os_error_sentence(OSError(errno.EROFS, "x"), "/h")
    assert "directory" in os_error_sentence(OSError(errno.EISDIR, "x"), "/h/log")
    assert "/h" in os_error_sentence(OSError(errno.EBADMSG, "Bad message"), "/h")
