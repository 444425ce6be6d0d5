"""Fixtures for the TUI tests: a fixed clock and deterministic ids and keys,
so tables and snapshots are the same on every run."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import nacl.public
import nacl.signing
import pytest

from circle.crdt.model import RecordId
from circle.net.keys import DeviceIdentity
from circle.tui.demo import Demo, build_demo

FIXED_NOW = 1_750_000_000_000  # 2025-06-15, a fixed clock for every test


class Clock:
    def __init__(self, now: int = FIXED_NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance_days(self, days: float) -> None:
        self.now += int(days * 24 * 3600 * 1000)


@pytest.fixture
def deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    """Record ids, circle ids and device keys from counters instead of os.urandom."""
    ids = itertools.count(1)
    alphabet = "abcdefghijkmnpqrstuvwxyz23456789"

    def record_id() -> RecordId:
        n = next(ids)
        digest = hashlib.blake2b(n.to_bytes(8, "big"), digest_size=8).digest()
        return RecordId("".join(alphabet[b % 32] for b in digest))

    keys = itertools.count(1)

    def generate(cls: type[DeviceIdentity]) -> DeviceIdentity:
        n = next(keys)
        seed = hashlib.blake2b(b"sign" + n.to_bytes(4, "big"), digest_size=32).digest()
        box = hashlib.blake2b(b"box" + n.to_bytes(4, "big"), digest_size=32).digest()
        return cls(nacl.signing.SigningKey(seed), nacl.public.PrivateKey(box))

    monkeypatch.setattr("circle.crdt.board.new_record_id", record_id)
    monkeypatch.setattr(DeviceIdentity, "generate", classmethod(generate))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def demo(tmp_path: Path, deterministic: None, clock: Clock) -> Iterator[Demo]:
    d = build_demo(tmp_path / "demo", clock=clock)
    yield d
    d.close()
