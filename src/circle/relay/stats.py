"""Operator stats: what `circle relay stats` shows, and how relay processes report it.

Counts only. Each running relay process publishes its counters (open and
total connections, puts, fetches, bytes, refusals by reason) every few
seconds: into the database for PostgreSQL (table `relay_processes`, one
row per process), into `<sqlite file>.stats.json` beside an SQLite store.
`circle relay stats` adds them up over the processes that reported
recently and reads the store's totals (mailboxes, envelopes, bytes).

What is deliberately absent, because a relay must not surface it (docs/
relay.md, DESIGN §8 "relay operator must never link circles"): mailbox ids
or any per-mailbox figure, tokens, client addresses (the per-address
connection table is never copied here), and anything derived from payloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from circle.errors import StoreError
from circle.relay.backends import StoreSpec, open_store

log = logging.getLogger("circle.relay")

#: (counter name in the report, where it lives on RelayServer: "counters" or "stats", attribute)
COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("open_connections", "counters", "open"),
    ("connections_total", "counters", "connections_total"),
    ("puts", "stats", "puts"),
    ("duplicates", "stats", "duplicates"),
    ("fetches", "stats", "fetches"),
    ("bytes_in", "stats", "bytes_in"),
    ("bytes_out", "stats", "bytes_out"),
    ("rejected_busy", "counters", "refused_busy"),
    ("rejected_path", "counters", "refused_path"),
    ("rejected_auth_timeout", "counters", "auth_timeouts"),
    ("rejected_wrong_token", "stats", "auth_failures"),
    ("rejected_protocol", "counters", "protocol_errors"),
    ("rejected_quota", "stats", "quota_refusals"),
)

#: A process that has not reported for this many publish intervals is not counted.
LIVE_INTERVALS = 3


def snapshot(server: Any) -> dict[str, int]:
    """The counters of one RelayServer, by name (missing ones count 0)."""
    out: dict[str, int] = {}
    for name, holder, attr in COUNTERS:
        out[name] = int(getattr(getattr(server, holder, None), attr, 0) or 0)
    return out


class StatsSink(Protocol):
    def publish(self, counters: dict[str, int], now: float) -> None: ...

    def forget(self) -> None: ...


class FileSink:
    """One JSON file beside an SQLite store (one process owns that store)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.started = int(time.time())

    def publish(self, counters: dict[str, int], now: float) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"started_at": self.started, "updated_at": int(now), "counters": counters}, f)
        os.replace(tmp, self.path)

    def forget(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def read(self) -> list[tuple[int, int, dict[str, int]]]:
        try:
            raw = json.loads(self.path.read_text())
            return [(int(raw["started_at"]), int(raw["updated_at"]),
                     {str(k): int(v) for k, v in raw["counters"].items()})]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return []


class PgSink:
    """One row per process in the shared database."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.started = int(time.time())

    def publish(self, counters: dict[str, int], now: float) -> None:
        self.store.publish_counters(self.store.process_id, self.started, int(now), json.dumps(counters))

    def forget(self) -> None:
        self.store.forget_process(self.store.process_id)


def stats_file(spec: StoreSpec) -> Path:
    assert spec.path is not None
    return spec.path.with_name(spec.path.name + ".stats.json")


def sink_for(spec: StoreSpec, store: Any) -> StatsSink:
    return PgSink(store) if spec.kind == "postgresql" else FileSink(stats_file(spec))


async def publish_loop(server: Any, sink: StatsSink, interval: float) -> None:
    """Publish `server`'s counters every `interval` seconds until cancelled;
    on cancellation (a clean stop) the process's entry is removed."""
    try:
        while True:
            try:
                await asyncio.to_thread(sink.publish, snapshot(server), time.time())
            except (StoreError, OSError) as e:  # stats must never take the relay down
                log.warning("relay stats not published: %s", type(e).__name__)
            await asyncio.sleep(interval)
    finally:
        with contextlib.suppress(StoreError, OSError):
            sink.forget()


@dataclass
class StatsReport:
    store: str
    mailboxes: int
    envelopes: int
    bytes: int
    processes: int
    counters: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def lines(self) -> list[str]:
        c = self.counters
        rejects = ", ".join(f"{name.removeprefix('rejected_').replace('_', ' ')} {c.get(name, 0)}"
                            for name, _, _ in COUNTERS if name.startswith("rejected_"))
        return [
            f"store: {self.store}",
            f"relay processes reporting: {self.processes}",
            f"circles served (mailboxes, one per circle epoch): {self.mailboxes}",
            f"envelopes stored: {self.envelopes} ({_size(self.bytes)})",
            f"connections: {c.get('open_connections', 0)} open, {c.get('connections_total', 0)} since start",
            f"envelopes received: {c.get('puts', 0)} new, {c.get('duplicates', 0)} duplicate; "
            f"fetches: {c.get('fetches', 0)}",
            f"traffic: {_size(c.get('bytes_in', 0))} in, {_size(c.get('bytes_out', 0))} out",
            f"rejected: {rejects}",
        ]


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1024  # type: ignore[assignment]
    return f"{n} B"


def read_report(spec: StoreSpec, interval: float, now: float | None = None) -> StatsReport:
    """Totals from the store plus the counters of every process that reported
    within LIVE_INTERVALS publish intervals (counters since each one started)."""
    now = time.time() if now is None else now
    if spec.kind == "sqlite":
        assert spec.path is not None
        if not spec.path.exists():
            raise StoreError(f"no relay database at {spec.path}")
    store = open_store(spec)
    try:
        usage = store.total_usage()
        mailboxes = store.mailbox_count()
        if spec.kind == "postgresql":
            rows = store.read_counters()  # type: ignore[attr-defined]
        else:
            rows = FileSink(stats_file(spec)).read()
    finally:
        store.close()
    # (times are stored in whole seconds: one second of slack)
    live = [c for _started, updated, c in rows if updated >= now - LIVE_INTERVALS * interval - 1]
    total: dict[str, int] = {name: 0 for name, _, _ in COUNTERS}
    for counters in live:
        for name in total:
            total[name] += int(counters.get(name, 0))
    return StatsReport(spec.describe(), mailboxes, usage.count, usage.bytes, len(live), total)
