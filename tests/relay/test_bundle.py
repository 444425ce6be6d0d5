from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from circle.errors import (
    BundleCorrupt,
    DecryptionFailed,
    EnvelopeRejected,
    StoreError,
    UnknownEpoch,
)
from circle.net.bundle import MAGIC, open_bundle, read_bundle, write_bundle
from circle.net.envelope import Kind, seal, seal_changes, seal_snapshot
from circle.net.keys import new_epoch_key

from .conftest import Circle


def envelopes(circle: Circle) -> list[bytes]:
    a, b = circle.members[0], circle.members[1]
    out = seal_changes(a, circle.epoch, circle.key, [b"need %d" % i for i in range(30)], max_block=200)
    out.append(seal_snapshot(b, circle.epoch, circle.key, b"saved doc" * 1000))
    return out


def test_round_trip(tmp_path: Path, circle: Circle) -> None:
    envs = envelopes(circle)
    path = tmp_path / "stick" / "circle.bundle"
    path.parent.mkdir()
    assert write_bundle(path, envs + envs[:3]) == len(envs)  # duplicates written once
    assert read_bundle(path) == envs
    assert (path.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["circle.bundle"]  # no temp file left
    seen: set[bytes] = set()
    first = open_bundle(path, circle.keys, circle.is_active, seen=seen)
    assert [p for o in first.accepted for p in o.payloads][:30] == [b"need %d" % i for i in range(30)]
    assert first.accepted[-1].kind is Kind.SNAPSHOT
    again = open_bundle(path, circle.keys, circle.is_active, seen=seen)  # reading twice changes nothing
    assert again.accepted == [] and again.duplicates == len(envs)


def test_empty_bundle_and_overwrite(tmp_path: Path, circle: Circle) -> None:
    path = tmp_path / "b"
    write_bundle(path, envelopes(circle))
    write_bundle(path, [])
    assert read_bundle(path) == []


def test_plaintext_not_in_file(tmp_path: Path, circle: Circle) -> None:
    path = tmp_path / "b"
    write_bundle(path, seal_changes(circle.members[0], 1, circle.key, [b"handle=Rosemary-Fox"]))
    raw = path.read_bytes()
    assert b"Rosemary" not in raw and circle.members[0].verify_key not in raw


def test_truncated_bundle(tmp_path: Path, circle: Circle) -> None:
    path = tmp_path / "b"
    write_bundle(path, envelopes(circle))
    raw = path.read_bytes()
    for cut in (3, 12, 17, 500, len(raw) // 2, len(raw) - 1):
        path.write_bytes(raw[:cut])
        with pytest.raises(BundleCorrupt):
            read_bundle(path)
    path.write_bytes(raw + b"x")
    with pytest.raises(BundleCorrupt, match="trailing"):
        read_bundle(path)


def test_damaged_bundle(tmp_path: Path, circle: Circle) -> None:
    path = tmp_path / "b"
    write_bundle(path, envelopes(circle))
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(BundleCorrupt, match="checksum"):
        read_bundle(path)


def test_tampered_envelope_with_fixed_checksum(tmp_path: Path, circle: Circle) -> None:
    """Someone who recomputes the (unkeyed) checksum still cannot alter an envelope."""
    envs = envelopes(circle)
    bad = bytearray(envs[2])
    bad[200] ^= 1
    path = tmp_path / "b"
    write_bundle(path, envs[:2] + [bytes(bad)] + envs[3:])
    seen: set[bytes] = set()
    with pytest.raises(DecryptionFailed):
        open_bundle(path, circle.keys, circle.is_active, seen=seen)
    assert seen == set()  # strict: nothing from a tampered bundle is taken
    lenient = open_bundle(path, circle.keys, circle.is_active, strict=False)
    assert len(lenient.accepted) == len(envs) - 1 and [i for i, _ in lenient.rejected] == [2]


def test_not_a_bundle_and_newer_version(tmp_path: Path) -> None:
    path = tmp_path / "b"
    path.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(BundleCorrupt, match="not a circle bundle"):
        read_bundle(path)
    path.write_bytes(MAGIC + struct.pack(">HHI", 3, 0, 0) + bytes(32))
    with pytest.raises(BundleCorrupt, match="version 3"):
        read_bundle(path)
    path.write_bytes(MAGIC + struct.pack(">HHI", 1, 0, 5) + struct.pack(">I", 2**31))
    with pytest.raises(BundleCorrupt, match="impossible length"):
        read_bundle(path)
    with pytest.raises(StoreError):
        read_bundle(tmp_path / "missing")


def test_bundle_of_another_circle(tmp_path: Path, circle: Circle) -> None:
    other = Circle.new()
    path = tmp_path / "b"
    write_bundle(path, envelopes(other))
    with pytest.raises(DecryptionFailed):
        open_bundle(path, circle.keys, circle.is_active)
    # the same epoch number does not help; another epoch number is named as such
    write_bundle(path, [seal(other.members[0], 9, other.key, Kind.CHANGES, [b"x"])])
    with pytest.raises(UnknownEpoch):
        open_bundle(path, circle.keys, circle.is_active)


def test_bundle_from_removed_member(tmp_path: Path, circle: Circle) -> None:
    """A removed member who kept the old epoch key writes a bundle after removal."""
    gone = circle.members[2]
    circle.removed.add(gone.verify_key)
    path = tmp_path / "b"
    write_bundle(path, seal_changes(gone, circle.epoch, circle.key, [b"sneaky edit"]))
    with pytest.raises(EnvelopeRejected, match="not an active member"):
        open_bundle(path, circle.keys, circle.is_active)
    # and after the key rotation the new epoch's readers cannot even decrypt it
    new_key = new_epoch_key()
    with pytest.raises(UnknownEpoch):
        open_bundle(path, {2: new_key}, circle.is_active)


def test_refuses_to_write_non_envelopes(tmp_path: Path) -> None:
    from circle.errors import RemoteProtocolError

    with pytest.raises(RemoteProtocolError):
        write_bundle(tmp_path / "b", [os.urandom(2000)])
    assert not (tmp_path / "b").exists()


def test_write_failure_leaves_old_file(tmp_path: Path, circle: Circle) -> None:
    path = tmp_path / "b"
    write_bundle(path, envelopes(circle))
    before = path.read_bytes()

    def broken() -> list[bytes]:
        raise RuntimeError("disk pulled out")

    def gen():  # type: ignore[no-untyped-def]
        yield from envelopes(circle)
        broken()

    with pytest.raises(RuntimeError):
        write_bundle(path, gen())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_version_1_bundles_are_still_read(tmp_path: Path, circle: Circle) -> None:
    """Files written before bundles named their size (no `body` field, one checksum)."""
    import hashlib

    envs = envelopes(circle)
    head = MAGIC + struct.pack(">HHI", 1, 0, len(envs))
    body = b"".join(struct.pack(">I", len(e)) + e for e in envs)
    check = hashlib.blake2b(head + body, digest_size=32, person=b"circle/bundle").digest()
    path = tmp_path / "old.bundle"
    path.write_bytes(head + body + check)
    assert read_bundle(path) == envs
    path.write_bytes(head + body + bytes(32))
    with pytest.raises(BundleCorrupt, match="checksum"):
        read_bundle(path)


def test_version_2_header_names_its_size(tmp_path: Path, circle: Circle) -> None:
    path = tmp_path / "b"
    write_bundle(path, envelopes(circle))
    raw = path.read_bytes()
    _m, version, _f, count, body = struct.unpack_from(">8sHHIQ", raw)
    assert (version, count, body + 24 + 32) == (2, len(envelopes(circle)), len(raw))
    path.write_bytes(raw[:24] + raw[24:-32][:-1] + raw[-32:])  # one byte short inside
    with pytest.raises(BundleCorrupt, match="truncated"):
        read_bundle(path)
