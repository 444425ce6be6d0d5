"""Issue 16 case 3: a circle bigger than one envelope travels through a real relay.

1,500 needs with long details make a 4.6 MB document, above one envelope's
4 MiB. Before: `circle sync` printed "in sync" and the relay stored nothing
(later: "too large ... nothing was sent", exit 6). Now the snapshot goes out
as signed parts and a fresh member rebuilds it.

The hostile relay is the real relay process whose operator edits its store
between syncs (stop, change relay.sqlite3, start): it drops, reorders,
duplicates and replays parts. The receiver must never apply part of a
snapshot, must say what it waits for (never "in sync"), must keep what it
received across processes, and must end with the whole circle once the
parts are there."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from circle.node.home import Home
from circle.node.service import CircleService
from clihelp import CLI

from . import bigcircle
from .conftest import RelayProcess

SYNC = ("sync", "--no-discovery", "--listen", "127.0.0.1:0", "--timeout", "30")
PART_MIN = 1_000_000  # part envelopes pad to 1 MiB; everything else here is far smaller


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return bigcircle.build(tmp_path_factory.mktemp("big"))


@pytest.fixture
def homes(built: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    return bigcircle.copy(built, tmp_path / "homes")


def need_count(home: Path) -> int:
    svc = CircleService.open(Home.open(home, None))
    return len(svc.board.needs(status="all"))


def parts_dir_files(home: Path) -> list[Path]:
    return sorted(home.glob("circles/*/parts/*"))


class Operator:
    """The relay operator, editing the store while the relay is stopped."""

    def __init__(self, relay: RelayProcess) -> None:
        self.relay = relay

    def edit(self) -> Iterator[sqlite3.Connection]:
        self.relay.stop()
        db = sqlite3.connect(self.relay.data / "relay.sqlite3")
        try:
            yield db
            db.commit()
        finally:
            db.close()
        self.relay.start()

    def parts(self, db: sqlite3.Connection) -> list[tuple[bytes, int, bytes, bytes]]:
        return list(db.execute("SELECT mailbox, cursor, eid, data FROM envelopes WHERE length(data) > ? "
                               "ORDER BY cursor", (PART_MIN,)))

    @staticmethod
    def append(db: sqlite3.Connection, mailbox: bytes, eid: bytes, data: bytes) -> None:
        """Serve `data` again at the end of the mailbox (a late or replayed delivery)."""
        (cursor,) = db.execute("SELECT next_cursor FROM mailboxes WHERE id = ?", (mailbox,)).fetchone()
        (now,) = db.execute("SELECT max(stored_at) FROM envelopes").fetchone()  # not expired at once
        db.execute("INSERT INTO envelopes (mailbox, cursor, eid, stored_at, data) VALUES (?, ?, ?, ?, ?)",
                   (mailbox, cursor, eid, now, data))
        db.execute("UPDATE mailboxes SET next_cursor = ?, count = count + 1, bytes = bytes + ? WHERE id = ?",
                   (cursor + 1, len(data), mailbox))


def _setup(homes: tuple[Path, Path], relay: RelayProcess) -> tuple[CLI, CLI]:
    a, b = CLI(homes[0]), CLI(homes[1])
    b.json("relay", "add", relay.url)
    assert b.run(*SYNC, "--json", check=False).returncode == 0  # alex's small snapshot first
    a.json("relay", "add", relay.url)
    return a, b


def test_big_circle_reaches_a_fresh_member(homes: tuple[Path, Path],
                                           relay_factory: Callable[..., RelayProcess]) -> None:
    relay = relay_factory()
    a, b = _setup(homes, relay)
    sent = a.run(*SYNC, "--json", check=False)
    assert sent.returncode == 0, sent.stdout  # was: exit 6 "too large ... nothing was sent"
    got = b.run(*SYNC, "--json", check=False)
    assert got.returncode == 0, got.stdout
    assert need_count(homes[1]) == bigcircle.NEEDS
    assert parts_dir_files(homes[1]) == []  # the set was used, its parts deleted
    db = sqlite3.connect(relay.data / "relay.sqlite3")
    assert db.execute("SELECT count(*) FROM envelopes WHERE length(data) > ?", (PART_MIN,)).fetchone()[0] >= 5
    db.close()


def test_dropped_part_is_waited_for_and_nothing_is_applied(
        homes: tuple[Path, Path], relay_factory: Callable[..., RelayProcess]) -> None:
    relay = relay_factory()
    a, b = _setup(homes, relay)
    assert a.run(*SYNC, "--json", check=False).returncode == 0
    op = Operator(relay)
    for db in op.edit():
        parts = op.parts(db)
        mailbox, cursor, eid, data = parts[2]
        db.execute("DELETE FROM envelopes WHERE mailbox = ? AND cursor = ?", (mailbox, cursor))
    waiting = b.run(*SYNC, "--json", check=False)
    assert waiting.returncode == 6, waiting.stdout  # never "in sync" with a part missing
    assert "waiting for the rest of a snapshot" in waiting.stdout and "missing part 3" in waiting.stdout
    assert need_count(homes[1]) == 0  # nothing of an incomplete snapshot is applied
    assert len(parts_dir_files(homes[1])) == len(parts) - 1  # what arrived is kept
    again = b.run(*SYNC, "--json", check=False)  # a new process still knows what it waits for
    assert again.returncode == 6 and "waiting for the rest" in again.stdout
    for _ in range(2):  # `status` says so too, computed and then from the kept view
        said = b.run("status", check=False).stdout
        assert "waiting for the rest of a snapshot" in said and "missing part 3" in said, said
    for db in op.edit():  # the operator stops dropping: the part arrives late
        op.append(db, mailbox, eid, data)
    done = b.run(*SYNC, "--json", check=False)
    assert done.returncode == 0, done.stdout
    assert need_count(homes[1]) == bigcircle.NEEDS
    assert parts_dir_files(homes[1]) == []
    assert "waiting" not in b.run("status").stdout


def test_reordered_duplicated_and_replayed_parts(homes: tuple[Path, Path],
                                                 relay_factory: Callable[..., RelayProcess]) -> None:
    relay = relay_factory()
    a, b = _setup(homes, relay)
    assert a.run(*SYNC, "--json", check=False).returncode == 0
    op = Operator(relay)
    for db in op.edit():
        parts = op.parts(db)
        (m, c0, e0, d0), (_, c1, e1, d1) = parts[0], parts[-1]
        db.execute("UPDATE envelopes SET eid = ?, data = ? WHERE mailbox = ? AND cursor = ?", (b"x" * 32, d1, m, c0))
        db.execute("UPDATE envelopes SET eid = ?, data = ? WHERE mailbox = ? AND cursor = ?", (e0, d0, m, c1))
        db.execute("UPDATE envelopes SET eid = ? WHERE mailbox = ? AND cursor = ?", (e1, m, c0))
        op.append(db, m, b"y" * 32, parts[1][3])  # part 2 served twice
    got = b.run(*SYNC, "--json", check=False)
    assert got.returncode == 0, got.stdout  # each part's index is signed: order does not matter
    assert need_count(homes[1]) == bigcircle.NEEDS
    for db in op.edit():  # replay an old part after the set was used
        op.append(db, m, b"z" * 32, parts[3][3])
    again = b.run(*SYNC, "--json", check=False)
    assert again.returncode == 0, again.stdout
    assert need_count(homes[1]) == bigcircle.NEEDS and parts_dir_files(homes[1]) == []


def test_parts_refused_by_a_full_relay_stay_queued(homes: tuple[Path, Path],
                                                   relay_factory: Callable[..., RelayProcess]) -> None:
    relay = relay_factory("--mailbox-quota-envelopes", "4")
    a, b = _setup(homes, relay)  # alex's snapshot takes one slot: 3 of sam's 5 parts fit
    full = a.run(*SYNC, "--json", check=False)
    assert full.returncode == 6, full.stdout
    assert "relay full" in full.stdout and "still queued" in full.stdout
    waiting = b.run(*SYNC, "--json", check=False)
    assert waiting.returncode == 6 and "waiting for the rest" in waiting.stdout
    assert need_count(homes[1]) == 0
    relay.stop()
    relay.args = ["--mailbox-quota-envelopes", "1000"]
    relay.start()
    assert a.run(*SYNC, "--json", check=False).returncode == 0  # a new process re-sends what is owed
    done = b.run(*SYNC, "--json", check=False)
    assert done.returncode == 0, done.stdout
    assert need_count(homes[1]) == bigcircle.NEEDS


def test_big_circle_travels_a_live_session_to_a_fresh_member(homes: tuple[Path, Path]) -> None:
    """The LAN path: `circle serve` on sam's home, `circle sync --peer` from alex.
    The session's snapshot fallback is chunked already (256 KiB chunks, 64 MiB
    cap): this checks that a document above one envelope goes through it."""
    import json
    import subprocess
    import sys

    a, b = CLI(homes[0]), CLI(homes[1])
    serve = subprocess.Popen([sys.executable, "-m", "circle", "serve", "--listen", "127.0.0.1:0",
                              "--no-discovery", "--json"], env=a.env, stdout=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, text=True)
    try:
        assert serve.stdout is not None
        listening = json.loads(serve.stdout.readline())
        proc = b.run("sync", "--peer", f"127.0.0.1:{listening['port']}", "--no-discovery",
                     "--listen", "127.0.0.1:0", "--timeout", "60", "--json", check=False)
        out = json.loads(proc.stdout)
        assert proc.returncode == 0 and len(out) == 1 and out[0]["in_sync"], json.dumps(out)
    finally:
        serve.terminate()
        serve.wait(timeout=20)
    assert need_count(homes[1]) == bigcircle.NEEDS
