"""`circle relay`: an untrusted store-and-forward WebSocket server.

A thin asyncio driver around `circle.relay.core.ServerCore` and a
`MailboxStore`: SQLite for one process (the default), or PostgreSQL shared
by any number of relay processes (`--store postgresql://...`; then store
calls run in worker threads, and envelopes stored by another process wake
this process's subscribers through the store's `follow()`). It speaks plain `ws://` and is meant to sit behind an
ordinary reverse proxy that terminates TLS (see docs/relay.md); it binds
127.0.0.1 unless told otherwise.

Logging policy: the relay logs counts only (connections, envelopes, bytes,
refusals), in a periodic summary line and on start/stop. It never logs a
payload, a token, a mailbox id (not even a prefix: a prefix would still link
a circle's activity across log lines) or a client IP address.

Run it directly for tests or by hand::

    python -m circle.relay.server --host 127.0.0.1 --port 0 --data DIR
    python -m circle.relay.server --port 0 --store postgresql://...

With `--port 0` the OS picks a free port; the first line on stdout says
which: ``circle relay listening on ws://127.0.0.1:PORT/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from circle.errors import StoreError
from circle.net.relay_protocol import (
    DEFAULT_FRAME_CAP,
    ErrorCode,
    encode,
)
from circle.net.relay_protocol import Error as ErrorMsg
from circle.relay.backends import open_store, parse_store
from circle.relay.core import ServerCore, ServerLimits, ServerStats, TokenBucket
from circle.relay.stats import publish_loop, sink_for
from circle.relay.store import MailboxStore, StoreLimits, Usage

log = logging.getLogger("circle.relay")
_T = TypeVar("_T")

DEFAULT_PORT = 7733
MIB = 1024 * 1024
DAY = 86400.0


@dataclass(frozen=True)
class RelaySettings:
    """Relay limits. Defaults are sized for a volunteer-run relay serving
    a few hundred small circles on a modest machine; docs/relay.md explains
    each one."""

    #: Largest message accepted: one largest envelope (4 MiB) plus headers.
    frame_cap: int = DEFAULT_FRAME_CAP
    #: Bytes of ciphertext one mailbox (one circle epoch) may hold.
    mailbox_quota_bytes: int = 64 * MIB
    #: Envelopes one mailbox may hold.
    mailbox_quota_envelopes: int = 20_000
    #: Bytes of ciphertext the whole relay may hold.
    total_quota_bytes: int = 4 * 1024 * MIB
    #: Mailboxes the relay will register.
    max_mailboxes: int = 10_000
    #: Envelopes older than this are dropped (seconds). 30 days.
    retention_seconds: float = 30 * DAY
    #: How often expiry runs (seconds).
    expire_interval: float = 600.0
    #: Open WebSocket connections, all clients together.
    max_connections: int = 1024
    #: Open connections from one client address.
    max_connections_per_ip: int = 32
    #: Per-connection message rate (messages per second, sustained) and burst.
    messages_per_second: float = 50.0
    message_burst: float = 200.0
    #: Per-connection upload rate (bytes per second, sustained) and burst.
    bytes_per_second: float = 1 * MIB
    byte_burst: float = 16 * MIB
    #: A connection that has not authenticated after this long is closed.
    auth_timeout: float = 10.0
    #: Keepalive pings detect dead peers (seconds).
    ping_interval: float = 30.0
    ping_timeout: float = 30.0
    #: Only accept WebSocket requests whose path starts with this ("/" = any).
    path: str = "/"
    #: Behind a reverse proxy, take the client address from the last
    #: X-Forwarded-For entry (for the per-address limit). Off by default:
    #: trusting it without a proxy would let a client pick its own address.
    trust_forwarded_for: bool = False
    #: Seconds between summary log lines (counts only).
    log_interval: float = 300.0
    #: Stored timestamps are rounded down to this many seconds.
    time_granularity: int = 600
    #: Seconds between publishing this process's counters for `circle relay stats`.
    stats_interval: float = 10.0

    def store_limits(self) -> StoreLimits:
        return StoreLimits(
            mailbox_bytes=self.mailbox_quota_bytes,
            mailbox_count=self.mailbox_quota_envelopes,
            total_bytes=self.total_quota_bytes,
            max_mailboxes=self.max_mailboxes,
            time_granularity=self.time_granularity,
        )


@dataclass
class _Counters:
    connections_total: int = 0
    refused_busy: int = 0
    refused_path: int = 0
    auth_timeouts: int = 0
    protocol_errors: int = 0
    open: int = 0
    per_ip: Counter[str] = field(default_factory=Counter)


class RelayServer:
    """The relay: one store, many connections. Use `start()` / `close()`."""

    def __init__(self, store: MailboxStore, settings: RelaySettings | None = None) -> None:
        self.settings = settings or RelaySettings()
        self.store = store
        self.stats = ServerStats()
        self.counters = _Counters()
        self._subscribers: dict[bytes, set[asyncio.Event]] = {}
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._limits = ServerLimits(frame_cap=self.settings.frame_cap)
        # A store that is safe to call from threads (PostgreSQL) runs off the
        # event loop, so a slow query or commit does not stall every connection.
        self._executor: ThreadPoolExecutor | None = None
        if getattr(store, "concurrent", False):
            self._executor = ThreadPoolExecutor(getattr(store, "pool_size", 8), "relay-store")

    async def _call(self, fn: Callable[..., _T], *args: object) -> _T:
        if self._executor is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def wake(self, mailbox: bytes | None) -> None:
        """A mailbox got a new envelope (None: maybe any did): its subscribers fetch."""
        if mailbox is None:
            for subs in self._subscribers.values():
                for ev in subs:
                    ev.set()
            return
        for ev in self._subscribers.get(mailbox, ()):
            ev.set()

    # --- lifecycle --------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        s = self.settings
        ws_logger = logging.getLogger("circle.relay.websockets")
        ws_logger.setLevel(logging.WARNING)
        self._server = await serve(
            self._handler, host, port,
            process_request=self._process_request,
            compression=None,  # ciphertext does not compress; and no zip bombs
            max_size=s.frame_cap,
            max_queue=4,
            open_timeout=s.auth_timeout,
            ping_interval=s.ping_interval,
            ping_timeout=s.ping_timeout,
            close_timeout=5,
            server_header=None,
            logger=ws_logger,
        )
        sock = next(iter(self._server.sockets))
        bound = int(sock.getsockname()[1])
        self._tasks.append(asyncio.create_task(self._expire_loop()))
        self._tasks.append(asyncio.create_task(self._log_loop()))
        return bound

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._log_summary("stopped")
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self.store.close()

    async def _expire_loop(self) -> None:
        while True:
            try:
                dropped = await self._call(self.store.expire, time.time(), self.settings.retention_seconds)
                if dropped:
                    log.info("expired %d envelopes", dropped)
            except Exception as e:  # never let expiry kill the relay
                log.error("expiry failed: %s", type(e).__name__)
            await asyncio.sleep(self.settings.expire_interval)

    async def _log_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.log_interval)
            self._log_summary("summary")

    def _log_summary(self, what: str) -> None:
        c, st = self.counters, self.stats
        try:
            usage, boxes = self.store.total_usage(), self.store.mailbox_count()
        except StoreError:  # the database is away for a moment: log the counts we have
            usage, boxes = Usage(-1, -1), -1
        log.info(
            "%s: open=%d connections=%d refused_busy=%d refused_path=%d auth_timeouts=%d "
            "protocol_errors=%d auth_failures=%d puts=%d duplicates=%d fetches=%d "
            "quota_refusals=%d bytes_in=%d bytes_out=%d mailboxes=%d stored=%d stored_bytes=%d",
            what, c.open, c.connections_total, c.refused_busy, c.refused_path, c.auth_timeouts,
            c.protocol_errors, st.auth_failures, st.puts, st.duplicates, st.fetches,
            st.quota_refusals, st.bytes_in, st.bytes_out, boxes,
            usage.count, usage.bytes,
        )

    # --- HTTP layer -------------------------------------------------------

    def _client_addr(self, remote: object, headers: Headers) -> str:
        if self.settings.trust_forwarded_for:
            fwd = headers.get("X-Forwarded-For")
            if fwd:
                return fwd.split(",")[-1].strip()[:64]
        if isinstance(remote, tuple) and remote:
            return str(remote[0])
        return "?"

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        prefix = self.settings.path.rstrip("/")
        if path.rstrip("/").endswith("/healthz") and "upgrade" not in request.headers.get("Connection", "").lower():
            return conn.respond(200, "ok\n")
        if prefix and not (path == prefix or path.startswith(prefix + "/")):
            self.counters.refused_path += 1
            return conn.respond(404, "not found\n")
        addr = self._client_addr(conn.remote_address, request.headers)
        if (self.counters.open >= self.settings.max_connections
                or self.counters.per_ip[addr] >= self.settings.max_connections_per_ip):
            self.counters.refused_busy += 1
            return conn.respond(503, "busy\n")
        return None

    # --- one connection ---------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        headers = ws.request.headers if ws.request is not None else Headers()
        addr = self._client_addr(ws.remote_address, headers)
        c = self.counters
        s = self.settings
        if c.open >= s.max_connections or c.per_ip[addr] >= s.max_connections_per_ip:
            c.refused_busy += 1
            await ws.close(1013, "busy")
            return
        c.open += 1
        c.connections_total += 1
        c.per_ip[addr] += 1
        core = ServerCore(self.store, self._limits, stats=self.stats)
        wake = asyncio.Event()
        pusher: asyncio.Task[None] | None = None
        msgs = TokenBucket(s.messages_per_second, s.message_burst)
        byts = TokenBucket(s.bytes_per_second, s.byte_burst)
        try:
            try:
                first = await asyncio.wait_for(ws.recv(decode=False), s.auth_timeout)
            except TimeoutError:
                c.auth_timeouts += 1
                await ws.send(encode(ErrorMsg(ErrorCode.AUTH_REQUIRED, "authenticate first", 0, True)))
                return
            data: bytes | str = first
            while True:
                if isinstance(data, str):
                    data = b""  # text frames are not part of the protocol: fatal below
                now = time.monotonic()
                delay = max(msgs.delay_for(now), byts.delay_for(now, len(data)))
                if delay > 0:
                    await asyncio.sleep(delay)  # back-pressure, not an error
                out = await self._call(core.receive, data)
                for frame in out.send:
                    await ws.send(frame)
                if out.stored_in is not None:
                    self.wake(out.stored_in)
                if out.close:
                    c.protocol_errors += 1
                    break
                if pusher is None and core.subscribed_since is not None and core.mailbox is not None:
                    self._subscribers.setdefault(core.mailbox, set()).add(wake)
                    wake.set()
                    pusher = asyncio.create_task(self._push_loop(ws, core, wake))
                data = await ws.recv(decode=False)
        except ConnectionClosed:
            pass
        except Exception as e:  # a bug must not take the relay down; log without data
            log.error("connection handler failed: %s", type(e).__name__)
        finally:
            if pusher is not None:
                pusher.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await pusher
            if core.mailbox is not None:
                subs = self._subscribers.get(core.mailbox)
                if subs is not None:
                    subs.discard(wake)
                    if not subs:
                        del self._subscribers[core.mailbox]
            c.open -= 1
            c.per_ip[addr] -= 1
            if c.per_ip[addr] <= 0:
                del c.per_ip[addr]

    async def _push_loop(self, ws: ServerConnection, core: ServerCore, wake: asyncio.Event) -> None:
        try:
            while True:
                wake.clear()
                frames = await self._call(core.pending_pushes)
                if not frames:
                    await wake.wait()
                    continue
                for frame in frames:
                    await ws.send(frame)
                if (len(frames) < self._limits.fetch_page_items
                        and sum(map(len, frames)) + self._limits.frame_cap < self._limits.fetch_page_bytes):
                    # A page cut by neither limit was the whole backlog: sleep
                    # until the next wake instead of asking the store again
                    # (a put since the clear above has set `wake` already).
                    await wake.wait()
        except ConnectionClosed:
            pass
        except StoreError:
            # Storage failed under this subscription (a database restart): end
            # the connection as for any storage failure; the client reconnects
            # and resumes from its cursor.
            with contextlib.suppress(ConnectionClosed):
                await ws.send(encode(ErrorMsg(ErrorCode.INTERNAL, "relay storage failed", 0, True)))
                await ws.close(1011, "storage failed")


async def run_relay(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    data_dir: Path | str | None = None,
    settings: RelaySettings | None = None,
    stop: asyncio.Event | None = None,
    ready: asyncio.Future[int] | None = None,
    store: str | None = None,
) -> None:
    """Run a relay until `stop` is set (or SIGINT/SIGTERM when `stop` is None).

    `store` is `sqlite:PATH` or a `postgresql://` URL; without it, the SQLite
    file in `data_dir`."""
    settings = settings or RelaySettings()
    spec = parse_store(store, data_dir)
    opened = open_store(spec, settings.store_limits())
    server = RelayServer(opened, settings)
    bound = await server.start(host, port)
    log.info("listening on %s:%d, store %s", host, bound, spec.kind)
    side: list[asyncio.Task[None]] = []
    follow = getattr(opened, "follow", None)
    if follow is not None:  # envelopes stored by other relay processes
        side.append(asyncio.create_task(follow(server.wake)))
    if settings.stats_interval > 0:
        side.append(asyncio.create_task(
            publish_loop(server, sink_for(spec, opened), settings.stats_interval)))
    print(f"circle relay listening on ws://{host}:{bound}/", flush=True)
    if ready is not None and not ready.done():
        ready.set_result(bound)
    own_stop = stop is None
    stop_event = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if own_stop:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop_event.set)
    try:
        await stop_event.wait()
    finally:
        for t in side:
            t.cancel()
        for t in side:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await server.close()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="circle relay", description="Run a circle relay.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free port)")
    p.add_argument("--data", default=None, help="directory for relay.sqlite3")
    p.add_argument("--store", default=None, help="sqlite:PATH or postgresql://... (instead of --data)")
    p.add_argument("--log-level", default="INFO")
    d = RelaySettings()
    for f in fields(RelaySettings):
        if f.name in ("path", "trust_forwarded_for"):
            continue
        p.add_argument("--" + f.name.replace("_", "-"), type=type(getattr(d, f.name)), default=None)
    p.add_argument("--path", default=None, help="only accept WebSocket requests under this path")
    p.add_argument("--trust-forwarded-for", action="store_true", default=None)
    return p


def settings_from_args(ns: argparse.Namespace) -> RelaySettings:
    overrides = {f.name: getattr(ns, f.name) for f in fields(RelaySettings) if getattr(ns, f.name, None) is not None}
    return RelaySettings(**overrides)


def main(argv: list[str] | None = None) -> int:
    ns = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(ns.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_relay(ns.host, ns.port, ns.data, settings_from_args(ns), store=ns.store))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
