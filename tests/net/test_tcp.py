"""Real loopback TCP (127.0.0.1 only): the driver moves bytes, ends bad sessions, keeps the doc."""

from __future__ import annotations

import asyncio

import pytest
from net_helpers import ALICE, BOB, KEYRING, MALLORY, add, is_member, make_doc

from circle.crdt.am import AmDoc
from circle.errors import DecryptionFailed, HandshakeFailed, PeerUnavailable
from circle.net.framing import encode_frame
from circle.net.keys import new_epoch_key
from circle.net.session import Closed, Connection, DocChanged, Event
from circle.net.tcp import PeerSession, SyncNode, Timeouts

HOST = "127.0.0.1"
FAST = Timeouts(connect=2.0, handshake=0.5, idle=0.3, write=2.0)
WAIT = 10.0  # generous upper bound for things that should happen at once


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[PeerSession, Event]] = []
        self.changed = asyncio.Event()
        self.closed = asyncio.Event()

    def __call__(self, session: PeerSession, event: Event) -> None:
        self.events.append((session, event))
        if isinstance(event, DocChanged):
            self.changed.set()
        if isinstance(event, Closed):
            self.closed.set()

    def errors(self) -> list[BaseException | None]:
        return [e.error for _, e in self.events if isinstance(e, Closed)]


def node(doc: AmDoc, who=BOB, rec: Recorder | None = None, **kw) -> SyncNode:  # type: ignore[no-untyped-def]
    return SyncNode(doc, who, KEYRING, is_member, on_event=rec, timeouts=FAST, **kw)


async def test_initial_sync_and_live_push_over_tcp() -> None:
    server_doc, client_doc = make_doc(300), AmDoc.new()
    rec = Recorder()
    server = node(server_doc)
    client = node(client_doc, ALICE, rec)
    host, port = await server.start_server(HOST, 0)
    try:
        session = await client.connect(host, port)
        assert await session.wait_in_sync(WAIT)
        assert set(client_doc.heads()) == set(server_doc.heads())
        assert session.stats.snapshots_received == 1
        assert session.peer_member_id == BOB.member_id and session.fingerprint
        # a live edit on the server reaches the client without a new session
        rec.changed.clear()
        rid = add(server_doc, title="ladder")
        server.local_change()
        await asyncio.wait_for(rec.changed.wait(), WAIT)
        assert client_doc.record("needs", rid) == {"title": "ladder", "zone": "north"}
        assert not session.closed
    finally:
        await client.close()
        await server.close()
    assert session.error is None


async def test_sync_once_reports_and_says_goodbye() -> None:
    base = make_doc(20)
    server_doc, client_doc = AmDoc.load(base.save()), AmDoc.load(base.save())
    add(server_doc, "s-only")
    add(client_doc, "c-only")
    srec = Recorder()
    server = node(server_doc, rec=srec)
    host, port = await server.start_server(HOST, 0)
    try:
        report = await node(client_doc, ALICE).sync_once(host, port, timeout=WAIT)
        assert report.in_sync and report.error is None
        assert report.peer_member_id == BOB.member_id
        assert server_doc.record("needs", "c-only") and client_doc.record("needs", "s-only")
        await asyncio.wait_for(srec.closed.wait(), WAIT)
        assert srec.errors() == [None]  # a clean goodbye on the server side too
    finally:
        await server.close()


async def test_wrong_epoch_key_learns_nothing_and_server_keeps_serving() -> None:
    server_doc = make_doc(10)
    heads = server_doc.heads()
    srec = Recorder()
    server = node(server_doc, rec=srec)
    host, port = await server.start_server(HOST, 0)
    try:
        outsider_doc = AmDoc.new()
        outsider = SyncNode(outsider_doc, MALLORY, {0: new_epoch_key()}, lambda vk: True, timeouts=FAST)
        report = await outsider.sync_once(host, port, timeout=WAIT)
        assert not report.in_sync and isinstance(report.error, HandshakeFailed)
        assert outsider_doc.is_empty()
        assert report.peer_member_id is None  # a decoy message 2: it learns nobody
        assert server_doc.heads() == heads
        await asyncio.wait_for(srec.closed.wait(), WAIT)  # the server sees the stranger hang up
        assert any(isinstance(e, HandshakeFailed) for e in srec.errors())
        # and a real member still syncs afterwards
        ok = await node(AmDoc.new(), ALICE).sync_once(host, port, timeout=WAIT)
        assert ok.in_sync
    finally:
        await server.close()


async def _raw_member(host: str, port: int, doc: AmDoc) -> tuple[Connection, asyncio.StreamReader, asyncio.StreamWriter]:
    """A hand-driven client: handshake and Hello done, then under the test's control."""
    conn = Connection.initiator(doc, ALICE, KEYRING, is_member)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(conn.data_to_send())
    while conn.peer_hello is None:
        data = await asyncio.wait_for(reader.read(65536), WAIT)
        assert data, "server hung up during the handshake"
        conn.receive_data(data)
        writer.write(conn.data_to_send())
    return conn, reader, writer


async def test_garbage_after_handshake_ends_only_that_session() -> None:
    server_doc = make_doc(10)
    client_doc = AmDoc.load(server_doc.save())
    heads = server_doc.heads()
    srec = Recorder()
    server = node(server_doc, rec=srec)
    host, port = await server.start_server(HOST, 0)
    try:
        conn, reader, writer = await _raw_member(host, port, client_doc)
        writer.write(encode_frame(b"\x13" * 80))
        await writer.drain()
        await asyncio.wait_for(srec.closed.wait(), WAIT)
        assert any(isinstance(e, DecryptionFailed) for e in srec.errors())
        assert server_doc.heads() == heads
        writer.close()
        ok = await node(AmDoc.load(server_doc.save()), ALICE).sync_once(host, port, timeout=WAIT)
        assert ok.in_sync
    finally:
        await server.close()


async def test_silent_connection_times_out_in_handshake() -> None:
    srec = Recorder()
    server = node(make_doc(1), rec=srec)
    host, port = await server.start_server(HOST, 0)
    try:
        reader, writer = await asyncio.open_connection(host, port)
        await asyncio.wait_for(srec.closed.wait(), WAIT)
        assert isinstance(srec.errors()[0], HandshakeFailed)
        assert await asyncio.wait_for(reader.read(), WAIT) == b""  # server hung up
        writer.close()
    finally:
        await server.close()


async def test_member_that_stalls_after_handshake_is_dropped() -> None:
    server_doc = make_doc(5)
    srec = Recorder()
    server = node(server_doc, rec=srec)
    host, port = await server.start_server(HOST, 0)
    try:
        conn, reader, writer = await _raw_member(host, port, AmDoc.load(server_doc.save()))
        # never read, never answer pings
        await asyncio.wait_for(srec.closed.wait(), WAIT)
        err = srec.errors()[0]
        assert isinstance(err, PeerUnavailable) and "stalled" in str(err)
        writer.close()
    finally:
        await server.close()


async def test_peer_vanishing_mid_snapshot_leaves_receiver_doc_intact() -> None:
    """A hostile/unlucky server sends half a snapshot, then drops the connection."""
    big = make_doc(1500)
    sent_half = asyncio.Event()

    async def half_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection.responder(big, BOB, KEYRING, is_member, snapshot_chunk=512, compress=False)
        while True:
            data = await reader.read(65536)
            if not data:
                break
            conn.receive_data(data)
            out = conn.data_to_send()
            if len(out) > 4000:  # the snapshot: send half of it, then vanish
                writer.write(out[: len(out) // 2])
                await writer.drain()
                writer.transport.abort()
                sent_half.set()
                return
            writer.write(out)

    srv = await asyncio.start_server(half_server, HOST, 0)
    port = srv.sockets[0].getsockname()[1]
    client_doc = AmDoc.new()
    rec = Recorder()
    client = node(client_doc, ALICE, rec)
    try:
        session = await client.connect(HOST, port)
        assert not await session.wait_in_sync(WAIT)
        err = await session.wait_closed()
        assert sent_half.is_set()
        assert isinstance(err, PeerUnavailable) and "snapshot" in str(err)
        assert client_doc.is_empty()  # nothing half-applied
    finally:
        await client.close()
        srv.close()
        await srv.wait_closed()


async def test_unreachable_peer_is_typed() -> None:
    srv = await asyncio.start_server(lambda r, w: None, HOST, 0)
    port = srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()
    with pytest.raises(PeerUnavailable):
        await node(AmDoc.new(), ALICE).connect(HOST, port)


async def test_duplicate_sessions_between_two_members_collapse_to_one() -> None:
    a_doc = make_doc(5)
    b_doc = AmDoc.load(a_doc.save())
    a, b = node(a_doc, ALICE), node(b_doc, BOB)
    ha, pa = await a.start_server(HOST, 0)
    hb, pb = await b.start_server(HOST, 0)
    try:
        s1 = await a.connect(hb, pb)
        s2 = await b.connect(ha, pa)
        await asyncio.wait_for(asyncio.wait({asyncio.ensure_future(s1.wait_closed()), asyncio.ensure_future(s2.wait_closed())}, return_when=asyncio.FIRST_COMPLETED), WAIT)
        assert s1.closed != s2.closed
        survivor = s2 if s1.closed else s1
        assert await survivor.wait_in_sync(WAIT)
    finally:
        await a.close()
        await b.close()
