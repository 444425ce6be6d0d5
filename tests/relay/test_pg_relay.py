"""Several REAL relay processes over one REAL PostgreSQL database.

Each relay is `python -m circle.relay.server --store postgresql://...` on
127.0.0.1; members are real clients (RelayPool, or CircleService with
RelaySync). Nothing here asserts on time: timeouts are hang guards.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from circle.errors import NetworkError, RelayError, RelayQuotaExceeded
from circle.net.envelope import Kind, envelope_id, seal
from circle.net.relay_client import RelayConnection, RelayCredentials
from circle.node.relays import RelaySync
from factories import member_homes

from .conftest import Circle, RelayProcess
from .test_relay_client import WAIT, Member
from .test_relay_members import FAST, GUARD, open_svc, titles, until

pytestmark = pytest.mark.slow


@pytest.fixture
def pg_relays(pg_dsn: str, tmp_path: Path) -> Iterator[Callable[..., RelayProcess]]:
    procs: list[RelayProcess] = []

    def make(*args: str) -> RelayProcess:
        n = len(procs)
        data = tmp_path / f"pgrelay{n}"
        data.mkdir()
        rp = RelayProcess(data, tmp_path / f"pgrelay{n}.log", ["--stats-interval", "0.5", *args], store=pg_dsn)
        rp.start()
        procs.append(rp)
        return rp

    yield make
    for p in procs:
        p.stop()


def envelope(circle: Circle, payload: bytes | None = None) -> bytes:
    return seal(circle.members[0], circle.epoch, circle.key, Kind.CHANGES, [payload or os.urandom(32)])


async def test_live_push_crosses_processes(pg_relays: Callable[..., RelayProcess], circle: Circle) -> None:
    """A member on process A and one on process B: each sees the other's
    edits live, though neither ever talks to the other's process."""
    ra, rb = pg_relays(), pg_relays()
    a = Member(circle, circle.members[0], [ra.url])
    b = Member(circle, circle.members[1], [rb.url])
    async with a.pool, b.pool:
        assert await a.pool.wait_caught_up(WAIT) and await b.pool.wait_caught_up(WAIT)
        for i in range(5):
            a.edit(b"from A %d" % i)
            await b.wait_for({b"from A %d" % i})
            b.edit(b"from B %d" % i)
            await a.wait_for({b"from B %d" % i})
    assert b.applied == [x for i in range(5) for x in (b"from A %d" % i, b"from B %d" % i)]
    assert a.applied == b.applied
    assert a.errors == b.errors == []


class RoundRobinProxy:
    """A plain TCP proxy on 127.0.0.1 that hands each new connection to the
    next relay process, as a deployment's reverse proxy does: members know
    one URL (their mailbox credentials depend on it), not the processes."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.served = [0] * len(ports)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        i = sum(self.served) % len(self.ports)
        self.served[i] += 1
        try:
            r2, w2 = await asyncio.open_connection("127.0.0.1", self.ports[i])
        except OSError:
            writer.close()
            return
        self._writers |= {writer, w2}

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, w2), pipe(r2, writer))
        self._writers -= {writer, w2}

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()


async def test_members_behind_one_url_on_two_processes_converge(
        tmp_path: Path, pg_relays: Callable[..., RelayProcess]) -> None:
    """Real members (CircleService + RelaySync), live at the same time, using
    one relay URL that a proxy spreads over two processes."""
    ra, rb = pg_relays(), pg_relays()
    proxy = RoundRobinProxy([ra.port, rb.port])
    url = await proxy.start()
    homes = member_homes(tmp_path, ["sam", "alex"])
    for path in homes:
        open_svc(path).board.add_relay(url)
    a, b = open_svc(homes[0]), open_svc(homes[1])
    rs_a, rs_b = RelaySync(a, backoff=FAST), RelaySync(b, backoff=FAST)
    await rs_a.start()
    await rs_b.start()
    try:
        await until(lambda: rs_a._ready and rs_b._ready, "both caught up")
        a.board.add_need("firewood for the shed")
        await until(lambda: "firewood for the shed" in titles(b), "B sees A's need")
        b.board.add_offer("a ladder")
        await until(lambda: "a ladder" in titles(a), "A sees B's offer")
        await rs_a.flush(GUARD)
        await rs_b.flush(GUARD)
        await until(lambda: sorted(a.doc.heads()) == sorted(b.doc.heads()), "documents converge")
    finally:
        await rs_a.close()
        await rs_b.close()
        await proxy.close()
    assert titles(a) == titles(b) >= {"firewood for the shed", "a ladder"}
    assert all(n > 0 for n in proxy.served)  # both processes served members


async def test_kill9_mid_write_loses_no_acknowledged_envelope(pg_relays: Callable[..., RelayProcess],
                                                              circle: Circle, pg_dsn: str) -> None:
    ra, rb = pg_relays(), pg_relays()
    acked: set[bytes] = set()
    sent = [envelope(circle) for _ in range(2000)]
    conn = await RelayConnection.open(ra.url, circle.creds)

    async def pump() -> None:
        async def one(env: bytes) -> None:
            try:
                ack = await conn.push(env)
            except NetworkError:  # the relay died under this put: not acknowledged
                return
            acked.add(ack.envelope_id)

        pending: set[asyncio.Task[None]] = set()
        for env in sent:  # 16 puts in flight at any moment, until the connection dies
            if conn.failed is not None:
                break
            if len(pending) >= 16:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            pending.add(asyncio.create_task(one(env)))
        await asyncio.gather(*pending)

    task = asyncio.create_task(pump())
    await until(lambda: len(acked) >= 300, "some envelopes acknowledged")
    ra.kill()  # SIGKILL while puts are in flight
    await asyncio.wait_for(task, GUARD)
    await conn.close()
    assert 300 <= len(acked) < len(sent)

    async with await RelayConnection.open(rb.url, circle.creds) as reader:
        items, _ = await reader.fetch_all(0)
    stored = {envelope_id(e) for _, e in items}
    assert acked <= stored  # every acknowledged envelope survived
    assert stored <= {envelope_id(e) for e in sent}
    with psycopg.connect(pg_dsn) as db:  # and the counters agree with the rows
        row = db.execute("SELECT m.count, (SELECT COUNT(*) FROM relay_envelopes), "
                         "(SELECT SUM(count) FROM relay_usage) FROM relay_mailboxes m").fetchone()
    assert row == (len(stored), len(stored), len(stored))

    ra.start()  # the killed process comes back on the same database
    async with await RelayConnection.open(ra.url, circle.creds) as again:
        assert again.head == max(c for c, _ in items)


async def test_quota_holds_across_processes(pg_relays: Callable[..., RelayProcess], circle: Circle) -> None:
    """Two processes with a 30-envelope mailbox quota, pushed at together:
    30 are stored in all, never 30 per process."""
    ra, rb = pg_relays("--mailbox-quota-envelopes", "30"), pg_relays("--mailbox-quota-envelopes", "30")
    ca = await RelayConnection.open(ra.url, circle.creds)
    cb = await RelayConnection.open(rb.url, circle.creds)
    try:
        results = await asyncio.gather(ca.push_many([envelope(circle) for _ in range(25)]),
                                       cb.push_many([envelope(circle) for _ in range(25)]))
    finally:
        await ca.close()
        await cb.close()
    flat = results[0] + results[1]
    refused = [r for r in flat if isinstance(r, RelayError)]
    assert len(flat) - len(refused) == 30
    assert refused and all(isinstance(r, RelayQuotaExceeded) for r in refused)
    async with await RelayConnection.open(rb.url, circle.creds) as reader:
        items, _ = await reader.fetch_all(0)
    assert len(items) == 30


async def test_ttl_across_processes(pg_relays: Callable[..., RelayProcess], circle: Circle) -> None:
    """Envelopes stored through B expire though B never runs expiry (A does),
    and the freed quota is usable through B again."""
    ra = pg_relays("--retention-seconds", "2", "--expire-interval", "0.3", "--time-granularity", "1")
    rb = pg_relays("--expire-interval", "100000", "--time-granularity", "1", "--mailbox-quota-envelopes", "5")
    async with await RelayConnection.open(rb.url, circle.creds) as cb:
        for _ in range(5):
            await cb.push(envelope(circle))
        with pytest.raises(RelayQuotaExceeded):
            await cb.push(envelope(circle))  # full
        deadline = time.monotonic() + GUARD
        while (await cb.fetch_all(0))[0]:
            assert time.monotonic() < deadline, "envelopes never expired"
            await asyncio.sleep(0.2)
    # The idle, empty mailbox was forgotten too (as on one SQLite relay): a
    # member's next connection registers it again and finds room.
    async with await RelayConnection.open(rb.url, circle.creds) as again:
        assert again.head == 0
        for _ in range(5):
            assert not (await again.push(envelope(circle))).duplicate
    assert ra.alive() and rb.alive()


def _stats(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "circle", "relay", "stats", *args],
                          capture_output=True, text=True, timeout=60)


async def test_stats_sum_processes_and_reveal_nothing(pg_relays: Callable[..., RelayProcess], pg_dsn: str) -> None:
    ra = pg_relays("--mailbox-quota-envelopes", "3")
    rb = pg_relays("--mailbox-quota-envelopes", "3")
    circles = [Circle.new() for _ in range(3)]
    conns = []
    for i, c in enumerate(circles):
        conn = await RelayConnection.open((ra if i % 2 else rb).url, c.creds)
        conns.append(conn)
        for _ in range(2):
            await conn.push(envelope(c))
    over = await conns[0].push_many([envelope(circles[0]) for _ in range(2)])  # one over quota
    assert sum(isinstance(r, RelayError) for r in over) == 1
    extra = await RelayConnection.open(ra.url, circles[1].creds)  # 4 open connections in all
    wrong = RelayCredentials(circles[1].creds.mailbox, b"w" * 32)
    with pytest.raises(RelayError):
        await RelayConnection.open(rb.url, wrong)
    await asyncio.sleep(1.5)  # both processes publish every 0.5 s
    try:
        proc = await asyncio.to_thread(_stats, "--store", pg_dsn, "--json", "--stats-interval", "0.5")
        text = (await asyncio.to_thread(_stats, "--store", pg_dsn, "--stats-interval", "0.5")).stdout
    finally:
        for conn in (*conns, extra):
            await conn.close()
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["processes"] == 2
    assert report["mailboxes"] == 3 and report["envelopes"] == 7
    c = report["counters"]
    assert c["open_connections"] == 4 and c["puts"] == 7
    assert c["rejected_quota"] == 1 and c["rejected_wrong_token"] == 1
    assert "circles served (mailboxes, one per circle epoch): 3" in text
    everything = proc.stdout + text
    for circ in circles:  # no mailbox id, token or address, in any form
        for secret in (circ.creds.mailbox, circ.creds.token):
            assert secret.hex() not in everything and secret.hex()[:8] not in everything
    assert "127.0.0.1" not in everything
    with psycopg.connect(pg_dsn) as db:
        stored = json.dumps([r[0] for r in db.execute("SELECT counters FROM relay_processes")])
    assert set(json.loads(stored)[0]) == set(c)  # the database row holds these counts, nothing else


def test_bad_store_url_is_one_sentence(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "circle", "relay", "--port", "0",
         "--store", "postgresql://relay:hunter2secret@127.0.0.1:1/circle?connect_timeout=2"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "hunter2secret" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("circle: cannot connect to the relay database"), proc.stderr
    both = subprocess.run([sys.executable, "-m", "circle", "relay", "--data", str(tmp_path),
                           "--store", "sqlite:" + str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert both.returncode != 0 and "not both" in both.stderr


async def test_relays_survive_a_database_restart(tmp_path: Path, circle: Circle) -> None:
    """The database restarts under two running relays: they stay up, and once
    it is back a member on A again gets B's envelopes live (the listener
    reconnected) without reconnecting itself."""
    from pghelp import PgServer, require_postgres

    require_postgres()
    with PgServer() as server:
        dsn = server.create_database()
        procs = [RelayProcess(tmp_path / f"d{i}", tmp_path / f"r{i}.log", [], store=dsn) for i in range(2)]
        for p in procs:
            p.data.mkdir()
            p.start()
        try:
            ra, rb = procs
            a = Member(circle, circle.members[0], [ra.url])
            b = Member(circle, circle.members[1], [rb.url])
            async with a.pool, b.pool:
                assert await a.pool.wait_caught_up(WAIT) and await b.pool.wait_caught_up(WAIT)
                b.edit(b"before")
                await a.wait_for({b"before"})
                await asyncio.to_thread(
                    subprocess.run, server._cmd("pg_ctl", "-D", str(server.data), "-l", str(server.logfile),
                                "-m", "fast", "-w", "restart"),
                    check=True, capture_output=True)
                b.edit(b"after")  # B's first tries may fail while connections are re-made; its pool retries
                await a.wait_for({b"after"})
            assert ra.alive() and rb.alive()
        finally:
            for p in procs:
                p.stop()
