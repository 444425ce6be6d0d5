"""Issue 3 benchmark: live sync over real encrypted TCP on loopback vs in-process Automerge.

Same documents, same run:
1. initial sync of N records (default 10k: 70% needs, 30% offers, built with the
   domain layer) to an empty peer: time and bytes on the wire, against
   in-process Automerge sync (two SyncStates, messages handed over in memory)
   and against the size of save();
2. one new record between connected peers: latency from the edit (on one
   side) to the DocChanged event on the other, median/p90 over T trials, and
   wire bytes per edit; reference: the same edit synced in-process;
3. reconnect with nothing new: message flights (both directions), round
   trips and bytes; reference: in-process sync with fresh SyncStates.

Both TCP peers run in this one process on one event loop (the loop is each
document's single owner), over 127.0.0.1 only.

Times of the initial sync are the median of --repeat runs each way.

Run: /work/venv/bin/python bench/bench_sync.py [--records 10000] [--trials 50] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from benchcircle import founded_board

from circle.crdt.am import AmDoc
from circle.crdt.board import Board
from circle.net.keys import DeviceIdentity, new_epoch_key
from circle.net.session import DocChanged, Event, HandshakeDone
from circle.net.tcp import PeerSession, SyncNode

HOST = "127.0.0.1"


def build(records: int) -> tuple[AmDoc, Board, DeviceIdentity, DeviceIdentity]:
    founder, other = DeviceIdentity.generate(), DeviceIdentity.generate()
    doc, board, _cid, _number, _key = founded_board(founder, "bench circle", "ann", 1_700_000_000_000)
    for i in range(records):
        if i % 10 < 7:
            board.add_need(f"need {i}: help moving a sofa", details="second floor, no lift",
                           category="moving", tags=["moving", "heavy"], zone="north")
        else:
            board.add_offer(f"offer {i}: spare bike pump", details="presta and schrader",
                            category="tools", tags=["bike"], zone="south")
    return doc, board, founder, other


def in_process_sync(a: AmDoc, b: AmDoc) -> dict[str, float]:
    t0 = time.perf_counter()
    result = _drive(a, b, a.new_sync_state(), b.new_sync_state())
    return {"seconds": time.perf_counter() - t0, **result}


class Watch:
    def __init__(self) -> None:
        self.changed: asyncio.Event = asyncio.Event()
        self.at = 0.0

    def __call__(self, session: PeerSession, event: Event) -> None:
        if isinstance(event, DocChanged):
            self.at = time.perf_counter()
            self.changed.set()


async def tcp_part(doc: AmDoc, board: Board, founder: DeviceIdentity, other: DeviceIdentity,
                   trials: int, repeat: int) -> dict[str, Any]:
    keyring = {0: new_epoch_key()}
    members = {founder.verify_key, other.verify_key}

    def is_member(vk: bytes) -> bool:
        return vk in members

    empty = AmDoc.new()
    watch = Watch()
    server_sessions: list[PeerSession] = []

    def on_server_event(session: PeerSession, event: Event) -> None:
        if isinstance(event, HandshakeDone):
            server_sessions.append(session)

    server = SyncNode(doc, founder, keyring, is_member, on_event=on_server_event)
    client = SyncNode(empty, other, keyring, is_member, on_event=watch)
    host, port = await server.start_server(HOST, 0)
    out: dict[str, Any] = {}

    # 1. initial sync to an empty peer (median of `repeat`; the last one stays connected)
    times: list[float] = []
    for r in range(repeat):
        if r < repeat - 1:
            scratch = SyncNode(AmDoc.new(), other, keyring, is_member)
            t0 = time.perf_counter()
            report = await scratch.sync_once(host, port, timeout=120)
            times.append(time.perf_counter() - t0)
            assert report.in_sync, report.error
            await scratch.close()
            continue
        t0 = time.perf_counter()
        session = await client.connect(host, port)
        assert await session.wait_in_sync(120), session.error
        times.append(time.perf_counter() - t0)
    out["initial_seconds"] = statistics.median(times)
    out["initial_seconds_all"] = times
    out["initial_wire_bytes"] = session.stats.wire_bytes_in + session.stats.wire_bytes_out
    out["initial_snapshot_bytes"] = session.stats.snapshot_bytes_received
    assert set(empty.heads()) == set(doc.heads())

    # 2. one new record, connected peers
    latencies: list[float] = []
    per_edit: list[int] = []
    for i in range(trials):
        await asyncio.sleep(0.01)  # let the previous exchange finish (Idle messages)
        before = session.stats.wire_bytes_in + session.stats.wire_bytes_out
        watch.changed.clear()
        t0 = time.perf_counter()
        board.add_need(f"live need {i}", category="food", zone="north")
        server.local_change()
        await asyncio.wait_for(watch.changed.wait(), 10)
        latencies.append(watch.at - t0)
        await asyncio.sleep(0.01)
        per_edit.append(session.stats.wire_bytes_in + session.stats.wire_bytes_out - before)
    assert set(empty.heads()) == set(doc.heads())
    latencies.sort()
    out["live_latency_median_ms"] = 1000 * statistics.median(latencies)
    out["live_latency_p90_ms"] = 1000 * latencies[int(0.9 * (len(latencies) - 1))]
    out["live_bytes_median"] = statistics.median(per_edit)
    session.close()
    await session.wait_closed()

    # 3. reconnect with nothing new
    report = await client.sync_once(host, port, timeout=30)
    assert report.in_sync, report.error
    await server_sessions[-1].wait_closed()
    out["reconnect_flights"] = report.stats.flights_out + server_sessions[-1].stats.flights_out
    out["reconnect_wire_bytes"] = report.stats.wire_bytes_in + report.stats.wire_bytes_out
    out["reconnect_sync_messages"] = report.stats.sync_messages_sent + report.stats.sync_messages_received
    out["reconnect_seconds"] = report.seconds
    await client.close()
    await server.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="initial-sync repetitions (median)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    t0 = time.perf_counter()
    doc, board, founder, other = build(args.records)
    build_s = time.perf_counter() - t0
    saved = doc.save()

    # References, in process, on copies of the same document.
    runs = [in_process_sync(AmDoc.load(saved), AmDoc.new()) for _ in range(args.repeat)]
    ref_initial = dict(runs[0])
    ref_initial["seconds"] = statistics.median(r["seconds"] for r in runs)
    x, y = AmDoc.load(saved), AmDoc.load(saved)
    in_process_sync(x, y)  # baseline: both in sync
    ref_reconnect = in_process_sync(x, y)  # fresh SyncStates, nothing new
    # One record with live (already synced) SyncStates: edit, then the first
    # message delivers it (latency); the exchange then runs to quiet (bytes).
    sx, sy = x.new_sync_state(), y.new_sync_state()
    _drive(x, y, sx, sy)
    bx = Board(x, founder.member_id)
    bx.members_source = board.members_source  # same circle, same signed founding statements
    ref_lat: list[float] = []
    ref_bytes: list[int] = []
    for i in range(args.trials):
        t1 = time.perf_counter()
        bx.add_need(f"one more {i}", category="food", zone="north")
        first = x.generate_sync_message(sx)
        assert first is not None
        y.receive_sync_message(sy, first)
        ref_lat.append(time.perf_counter() - t1)
        ref_bytes.append(len(first) + _drive(x, y, sx, sy)["bytes"])
    ref_one_s = statistics.median(ref_lat)
    one = {"bytes": int(statistics.median(ref_bytes))}

    res = asyncio.run(tcp_part(doc, board, founder, other, args.trials, args.repeat))

    table = [
        ("records", f"{args.records}", "", ""),
        ("save() bytes", f"{len(saved):,}", "", ""),
        ("initial sync: time", f"{res['initial_seconds'] * 1000:.0f} ms",
         f"{ref_initial['seconds'] * 1000:.0f} ms",
         f"{res['initial_seconds'] / ref_initial['seconds']:.2f}x time"),
        ("initial sync: bytes", f"{res['initial_wire_bytes']:,}", f"{ref_initial['bytes']:,}",
         f"{res['initial_wire_bytes'] / len(saved):.3f}x save()"),
        ("one record: latency", f"median {res['live_latency_median_ms']:.1f} ms "
         f"(p90 {res['live_latency_p90_ms']:.1f})", f"median {ref_one_s * 1000:.1f} ms", ""),
        ("one record: bytes", f"{res['live_bytes_median']:,.0f}", f"{one['bytes']:,}", ""),
        ("reconnect, nothing new: flights", f"{res['reconnect_flights']} (incl. 3 handshake, 1 bye)",
         f"{ref_reconnect['messages']} msgs / {ref_reconnect['rounds']} rounds", ""),
        ("reconnect, nothing new: bytes", f"{res['reconnect_wire_bytes']:,}",
         f"{ref_reconnect['bytes']:,}", f"sync msgs over TCP: {res['reconnect_sync_messages']}"),
    ]
    if args.json:
        print(json.dumps({"build_seconds": build_s, "save_bytes": len(saved), "tcp": res,
                          "ref_initial": ref_initial, "ref_reconnect": ref_reconnect,
                          "ref_one_seconds": ref_one_s, "ref_one": one}, indent=2))
        return
    print(f"(built {args.records} records in {build_s:.1f} s)")
    head = ("measure", "encrypted TCP", "in-process automerge", "ratio")
    widths = [max(len(str(r[i])) for r in [*table, head]) for i in range(4)]
    for row in [head, *table]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def _drive(a: AmDoc, b: AmDoc, sa: Any, sb: Any) -> dict[str, int]:
    """Automerge's own sync between two in-process docs until both are quiet."""
    total = msgs = rounds = 0
    while True:
        ma = a.generate_sync_message(sa)
        if ma is not None:
            total += len(ma)
            msgs += 1
            b.receive_sync_message(sb, ma)
        mb = b.generate_sync_message(sb)
        if mb is not None:
            total += len(mb)
            msgs += 1
            a.receive_sync_message(sa, mb)
        if ma is None and mb is None:
            return {"bytes": total, "messages": msgs, "rounds": rounds}
        rounds += 1


if __name__ == "__main__":
    main()
