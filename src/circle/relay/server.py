"""`circle relay`: an untrusted store-and-forward WebSocket server.

A thin asyncio driver around `circle.relay.core.ServerCore` and a SQLite
`MailboxStore`. It speaks plain `ws://` and is meant to sit behind an
ordinary reverse proxy that terminates TLS (see docs/relay.md); it binds
127.0.0.1 unless told otherwise.

Logging policy: the relay logs counts only (connections, envelopes, bytes,
refusals), in a periodic summary line and on start/stop. It never logs a
payload, a token, a mailbox id (not even a prefix: a prefix would still link
a circle's activity across log lines) or a client IP address.

Run it directly for tests or by hand::

    python -m circle.relay.server --host 127.0.0.1 --port 0 --data DIR

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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidMessage
from websockets.http11 import Request, Response
from websockets.protocol import CONNECTING
from websockets.server import ServerProtocol

from circle.net.relay_protocol import (
    CLOSE_UNSUPPORTED_DATA,
    DEFAULT_FRAME_CAP,
    DEFAULT_REGISTRATION_BITS,
    PRE_AUTH_FRAME_CAP,
    ErrorCode,
    encode,
)
from circle.net.relay_protocol import Error as ErrorMsg
from circle.relay.core import ServerCore, ServerLimits, ServerStats, TokenBucket
from circle.relay.store import MailboxStore, SQLiteStore, StoreLimits

log = logging.getLogger("circle.relay")

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
    #: Per-connection byte rate (bytes per second, sustained) and burst;
    #: counts what the client sends and what its requests make the relay
    #: send back (fetch replies), not live pushes.
    bytes_per_second: float = 1 * MIB
    byte_burst: float = 16 * MIB
    #: The same two limits for all connections from one address together.
    address_messages_per_second: float = 200.0
    address_message_burst: float = 800.0
    address_bytes_per_second: float = 2 * MIB
    address_byte_burst: float = 32 * MIB
    #: New mailboxes one address may register (per hour, sustained) and burst.
    registrations_per_hour: float = 120.0
    registration_burst: float = 10.0
    #: Proof bits a new mailbox costs (about 2**bits hashes for the client).
    registration_bits: int = DEFAULT_REGISTRATION_BITS
    #: Largest message before a connection has authenticated.
    pre_auth_frame_cap: int = PRE_AUTH_FRAME_CAP
    #: A mailbox with no envelopes is dropped after this long unused (seconds).
    empty_mailbox_ttl: float = 3600.0
    #: A send must finish within send_timeout + size / min_send_rate seconds;
    #: a client that does not read is disconnected and its slot freed.
    send_timeout: float = 20.0
    min_send_rate: float = 64 * 1024
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

    def store_limits(self) -> StoreLimits:
        return StoreLimits(
            mailbox_bytes=self.mailbox_quota_bytes,
            mailbox_count=self.mailbox_quota_envelopes,
            total_bytes=self.total_quota_bytes,
            max_mailboxes=self.max_mailboxes,
            time_granularity=self.time_granularity,
            empty_mailbox_ttl=self.empty_mailbox_ttl,
        )


@dataclass
class _Counters:
    connections_total: int = 0
    refused_busy: int = 0
    refused_path: int = 0
    auth_timeouts: int = 0
    protocol_errors: int = 0
    slow_readers: int = 0
    open: int = 0
    per_ip: Counter[str] = field(default_factory=Counter)


@dataclass
class _Address:
    """Limits shared by every connection from one client address."""

    msgs: TokenBucket
    byts: TokenBucket
    regs: TokenBucket


class _Dropped(Exception):
    """The client did not take what we sent in time; the connection was aborted."""


class _AnswerBadRequests(ServerProtocol):
    """websockets closes on a request it cannot parse without any HTTP
    status; answer 400 first, as an HTTP server should."""

    def send_eof(self) -> None:
        if (self.state is CONNECTING and isinstance(self.handshake_exc, InvalidMessage)
                and not self.eof_sent):
            self.writes.append(self.reject(400, "bad request\n").serialize())
        super().send_eof()


class _Connection(ServerConnection):
    def __init__(self, protocol: ServerProtocol, *args: Any, **kwargs: Any) -> None:
        protocol.__class__ = _AnswerBadRequests  # nothing has been parsed yet
        super().__init__(protocol, *args, **kwargs)


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
        self._limits = ServerLimits(frame_cap=self.settings.frame_cap,
                                    pre_auth_frame_cap=self.settings.pre_auth_frame_cap,
                                    registration_bits=self.settings.registration_bits)
        self._addresses: dict[str, _Address] = {}

    def _address(self, addr: str) -> _Address:
        a = self._addresses.get(addr)
        if a is None:
            s = self.settings
            if len(self._addresses) >= 4 * s.max_connections:
                self._forget_idle_addresses()
            a = _Address(TokenBucket(s.address_messages_per_second, s.address_message_burst),
                         TokenBucket(s.address_bytes_per_second, s.address_byte_burst),
                         TokenBucket(s.registrations_per_hour / 3600.0, s.registration_burst))
            self._addresses[addr] = a
        return a

    def _forget_idle_addresses(self) -> None:
        """Drop the state of addresses with no connection and full buckets:
        remembering them would change nothing."""
        now = time.monotonic()
        for addr, a in list(self._addresses.items()):
            if (self.counters.per_ip.get(addr, 0) == 0 and a.msgs.full(now) and a.byts.full(now)
                    and a.regs.full(now)):
                del self._addresses[addr]

    # --- lifecycle --------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        s = self.settings
        ws_logger = logging.getLogger("circle.relay.websockets")
        ws_logger.setLevel(logging.WARNING)
        self._server = await serve(
            self._handler, host, port,
            process_request=self._process_request,
            compression=None,  # ciphertext does not compress; and no zip bombs
            max_size=s.pre_auth_frame_cap,  # raised to frame_cap once authenticated
            create_connection=_Connection,
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
        self.store.close()

    async def _expire_loop(self) -> None:
        while True:
            try:
                dropped = self.store.expire(time.time(), self.settings.retention_seconds)
                if dropped:
                    log.info("expired %d envelopes", dropped)
            except Exception as e:  # never let expiry kill the relay
                log.error("expiry failed: %s", type(e).__name__)
            await asyncio.sleep(self.settings.expire_interval)

    async def _log_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.log_interval)
            self._forget_idle_addresses()
            self._log_summary("summary")

    def _log_summary(self, what: str) -> None:
        c, st = self.counters, self.stats
        usage = self.store.total_usage()
        log.info(
            "%s: open=%d connections=%d refused_busy=%d refused_path=%d auth_timeouts=%d "
            "protocol_errors=%d slow_readers=%d auth_failures=%d registrations=%d "
            "registrations_refused=%d puts=%d duplicates=%d fetches=%d "
            "quota_refusals=%d bytes_in=%d bytes_out=%d mailboxes=%d stored=%d stored_bytes=%d",
            what, c.open, c.connections_total, c.refused_busy, c.refused_path, c.auth_timeouts,
            c.protocol_errors, c.slow_readers, st.auth_failures, st.registrations,
            st.registrations_refused, st.puts, st.duplicates, st.fetches,
            st.quota_refusals, st.bytes_in, st.bytes_out, self.store.mailbox_count(),
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
        if path.rstrip("/").endswith(("/healthz", "/health")) and request.method in ("GET", "HEAD"):
            return conn.respond(200, "ok\n")
        if request.method != "GET":
            resp = conn.respond(405, "method not allowed\n")
            resp.headers["Allow"] = "GET"
            return resp
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

    async def _send(self, ws: ServerConnection, frame: bytes) -> None:
        """Send one message, or abort a connection whose client does not read.

        websockets waits for its write buffer to drain; a client that never
        reads would hold the connection (and its slot) forever, and the
        keep-alive ping would wait behind the same full buffer."""
        s = self.settings
        try:
            await asyncio.wait_for(ws.send(frame), s.send_timeout + len(frame) / s.min_send_rate)
        except TimeoutError:
            self.counters.slow_readers += 1
            ws.transport.abort()
            raise _Dropped from None

    async def _close(self, ws: ServerConnection, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(ws.close(code, reason), self.settings.send_timeout)
        except TimeoutError:
            ws.transport.abort()

    async def _handler(self, ws: ServerConnection) -> None:
        headers = ws.request.headers if ws.request is not None else Headers()
        addr = self._client_addr(ws.remote_address, headers)
        c = self.counters
        s = self.settings
        if c.open >= s.max_connections or c.per_ip[addr] >= s.max_connections_per_ip:
            c.refused_busy += 1
            await self._close(ws, 1013, "busy")
            return
        c.open += 1
        c.connections_total += 1
        c.per_ip[addr] += 1
        shared = self._address(addr)

        def may_register() -> bool:
            return shared.regs.try_take(time.monotonic())

        core = ServerCore(self.store, self._limits, stats=self.stats, may_register=may_register)
        wake = asyncio.Event()
        pusher: asyncio.Task[None] | None = None
        msgs = TokenBucket(s.messages_per_second, s.message_burst)
        byts = TokenBucket(s.bytes_per_second, s.byte_burst)
        # Authentication as a whole (a challenge and the proof included) must
        # finish within auth_timeout: a pre-auth client holds a slot for no longer.
        auth_deadline = time.monotonic() + s.auth_timeout
        try:
            data: bytes | str = b""
            while True:
                if core.authenticated:
                    data = await ws.recv()  # str for a text frame, bytes for binary
                else:
                    try:
                        data = await asyncio.wait_for(ws.recv(), max(0.0, auth_deadline - time.monotonic()))
                    except TimeoutError:
                        c.auth_timeouts += 1
                        await self._send(ws, encode(ErrorMsg(ErrorCode.AUTH_REQUIRED, "authenticate first", 0,
                                                             True)))
                        await self._close(ws, 1008, "authenticate first")
                        return
                if isinstance(data, str):
                    c.protocol_errors += 1
                    await self._send(ws, encode(ErrorMsg(ErrorCode.BAD_MESSAGE, "text frames are not part of "
                                                         "the relay protocol", 0, True)))
                    await self._close(ws, CLOSE_UNSUPPORTED_DATA, "binary messages only")
                    break
                now = time.monotonic()
                delay = max(msgs.delay_for(now), byts.delay_for(now, len(data)),
                            shared.msgs.delay_for(now), shared.byts.delay_for(now, len(data)))
                if delay > 0:
                    await asyncio.sleep(delay)  # back-pressure: we stop reading, TCP does the rest
                was_authenticated = core.authenticated
                out = core.receive(data)
                if core.authenticated and not was_authenticated:
                    ws.protocol.max_message_size = s.frame_cap
                sent = sum(len(b) for b in out.send)
                if sent > 256:  # replies cost the asker (a 13-byte Fetch may bring 4 MiB)
                    now = time.monotonic()
                    byts.delay_for(now, sent)
                    shared.byts.delay_for(now, sent)
                for frame in out.send:
                    await self._send(ws, frame)
                if out.stored_in is not None:
                    for ev in self._subscribers.get(out.stored_in, ()):
                        ev.set()
                if out.close:
                    c.protocol_errors += 1
                    await self._close(ws, out.close_code, "")
                    break
                if pusher is None and core.subscribed_since is not None and core.mailbox is not None:
                    self._subscribers.setdefault(core.mailbox, set()).add(wake)
                    wake.set()
                    pusher = asyncio.create_task(self._push_loop(ws, core, wake))
        except (ConnectionClosed, _Dropped):
            pass
        except Exception as e:  # a bug must not take the relay down; log without data
            log.error("connection handler failed: %s", type(e).__name__)
        finally:
            if pusher is not None:
                pusher.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, _Dropped):
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
                frames = core.pending_pushes()
                if not frames:
                    await wake.wait()
                    continue
                for frame in frames:
                    await self._send(ws, frame)
        except (ConnectionClosed, _Dropped):
            pass


async def run_relay(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    data_dir: Path | str = ".",
    settings: RelaySettings | None = None,
    stop: asyncio.Event | None = None,
    ready: asyncio.Future[int] | None = None,
) -> None:
    """Run a relay until `stop` is set (or SIGINT/SIGTERM when `stop` is None)."""
    settings = settings or RelaySettings()
    store = SQLiteStore(Path(data_dir) / SQLiteStore.FILENAME, settings.store_limits())
    server = RelayServer(store, settings)
    bound = await server.start(host, port)
    log.info("listening on %s:%d", host, bound)
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
        await server.close()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="circle relay", description="Run a circle relay.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free port)")
    p.add_argument("--data", required=True, help="directory for relay.sqlite3")
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
        asyncio.run(run_relay(ns.host, ns.port, ns.data, settings_from_args(ns)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
