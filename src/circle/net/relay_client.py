"""Relay client: one connection (`RelayConnection`) and a federation (`RelayPool`).

`RelayConnection` is a thin asyncio driver around `relay_protocol.ClientCore`:
authenticate, push envelopes (pipelined), fetch since a cursor, and a live
subscription delivered as an async iterator.

`RelayPool` is what the service uses. It keeps one supervised connection per
relay URL, reconnecting with jittered exponential backoff:

- **write to all**: every pushed envelope goes into each relay's outbox and
  stays there until that relay acknowledges it (a relay that is down gets it
  when it is back; the outbox is bounded, and on overflow the relay is flagged
  for a resync).
- **read from all**: each relay is subscribed from its own cursor; envelopes
  are deduplicated by id across relays and handed to `on_envelope` once.
- **per-relay cursors** live in `RelayCursors` (`to_json`/`from_json`; the
  caller persists them). A cursor only advances after `on_envelope` returned,
  so a crash re-delivers rather than loses.
- a relay that was **wiped** (new instance id) or **restored from an old
  backup** (head below our cursor) is read again from 0, and `on_reset(url)`
  tells the caller to push a snapshot envelope there: the relay has lost the
  circle's history. `on_reset` is also called when our auth *registered* the
  mailbox, i.e. the relay never had it.

Nothing here opens envelopes: the caller does (`envelope.EnvelopeInbox`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from circle.errors import (
    CircleError,
    LocalProtocolError,
    NetworkError,
    PeerUnavailable,
    RelayAuthFailed,
    RelayError,
    RelayQuotaExceeded,
    RemoteProtocolError,
    UsageError,
)
from circle.net.envelope import envelope_id
from circle.net.keys import EpochKey, Purpose, derive
from circle.net.relay_protocol import (
    DEFAULT_FRAME_CAP,
    Authenticated,
    ClientCore,
    EnvelopePushed,
    FetchResult,
    InsecureRelay,
    ProofRequired,
    PutAcked,
    PutRefused,
    RelayFailed,
    check_relay_url,
    mailbox_for_token,
    make_proof,
    normalise_relay_url,
)

log = logging.getLogger("circle.relay.client")

REFUSED_RETRY_S = 30.0  # a relay that refused (full, too large) is retried this often
_PUSH_QUEUE = 1024  # pushed envelopes buffered before we stop reading (back-pressure)


@dataclass(frozen=True)
class RelayCredentials:
    """Mailbox id and access token for one circle epoch on one relay.

    The token is a keyed BLAKE2b of the relay's URL under a key derived from
    the epoch key, so every relay of a circle gets a different token (and,
    since the mailbox id is the token's hash, a different mailbox id): one
    relay cannot replay what it saw at another, spend the circle's quota
    there, or link the circle across relays by its mailbox id.
    """

    mailbox: bytes
    token: bytes

    @classmethod
    def from_token(cls, token: bytes) -> RelayCredentials:
        return cls(mailbox_for_token(token), token)

    @classmethod
    def for_relay(cls, epoch_key: EpochKey, url: str) -> RelayCredentials:
        context = b"relay-url\0" + normalise_relay_url(url).encode()
        return cls.from_token(derive(epoch_key, Purpose.RELAY_TOKEN, context))

    @classmethod
    def for_epoch(cls, epoch_key: EpochKey) -> RelayCredentials:
        """One token for every relay: tests only (every real mailbox, invites included, uses `for_relay`)."""
        return cls.from_token(derive(epoch_key, Purpose.RELAY_TOKEN))


#: What a pool is given: one credential for every relay, or one per URL.
CredentialSource = RelayCredentials | Callable[[str], RelayCredentials]


# --- one connection -----------------------------------------------------------

#: Registration proofs made in this process (mailbox -> proof), so a relay
#: that forgot a mailbox and asks again costs nothing the second time.
_known_proofs: dict[bytes, int] = {}


@functools.lru_cache(maxsize=256)
def _proof_for(mailbox: bytes, bits: int) -> int:
    return make_proof(mailbox, bits)


def _proof(mailbox: bytes, bits: int) -> int:
    try:
        proof = _proof_for(mailbox, bits)
    except LocalProtocolError as e:
        raise RelayError(e.message) from None
    _known_proofs[mailbox] = proof
    return proof


class RelayConnection:
    """One authenticated connection to one relay mailbox."""

    def __init__(self, ws: ClientConnection, core: ClientCore, auth: Authenticated, url: str) -> None:
        self.url = url
        self._ws = ws
        self._core = core
        self.instance = auth.instance
        self.head = auth.head
        self.registered = auth.registered
        self._waiters: dict[int, asyncio.Future[Any]] = {}
        self._pushed: asyncio.Queue[EnvelopePushed | None] = asyncio.Queue(_PUSH_QUEUE)
        self._failure: NetworkError | None = None
        self.bytes_sent = 0  # protocol messages after authentication, both ways
        self.bytes_received = 0
        self._reader = asyncio.create_task(self._read_loop())
        self.last_seen = time.time()

    @classmethod
    async def open(
        cls,
        url: str,
        creds: RelayCredentials,
        *,
        open_timeout: float = 10.0,
        frame_cap: int = DEFAULT_FRAME_CAP,
    ) -> RelayConnection:
        """Connect and authenticate. Raises PeerUnavailable, RelayAuthFailed, RelayError."""
        url = check_relay_url(url)
        try:
            ws = await asyncio.wait_for(
                connect(url, compression=None, max_size=frame_cap, open_timeout=open_timeout,
                        ping_interval=20, ping_timeout=20, close_timeout=2, proxy=None),
                open_timeout,
            )
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as e:
            raise PeerUnavailable(f"relay {url} is unreachable ({type(e).__name__})") from None
        core = ClientCore(frame_cap)
        try:
            await ws.send(core.auth(creds.mailbox, creds.token, _known_proofs.get(creds.mailbox, 0)))
            ev = await cls._auth_reply(ws, core, open_timeout)
            if isinstance(ev, ProofRequired):  # a new mailbox: registering costs a proof
                proof = await asyncio.to_thread(_proof, creds.mailbox, ev.bits)
                await ws.send(core.auth(creds.mailbox, creds.token, proof))
                ev = await cls._auth_reply(ws, core, open_timeout)
        except (ConnectionClosed, TimeoutError, OSError):
            await ws.close()
            raise PeerUnavailable(f"relay {url} closed the connection during auth") from None
        except BaseException:
            await ws.close()
            raise
        if isinstance(ev, RelayFailed):
            await ws.close()
            raise ev.error
        if not isinstance(ev, Authenticated):
            await ws.close()
            raise RemoteProtocolError("relay did not answer the auth")
        return cls(ws, core, ev, url)

    @staticmethod
    async def _auth_reply(ws: ClientConnection, core: ClientCore, timeout: float) -> Any:
        data = await asyncio.wait_for(ws.recv(decode=False), timeout)
        if isinstance(data, str):
            raise RemoteProtocolError("relay sent a text frame")
        return core.receive(data)

    async def _read_loop(self) -> None:
        failure: NetworkError
        try:
            while True:
                data = await self._ws.recv(decode=False)
                if isinstance(data, str):
                    raise RemoteProtocolError("relay sent a text frame")
                self.last_seen = time.time()
                self.bytes_received += len(data)
                ev = self._core.receive(data)
                if isinstance(ev, (PutAcked, PutRefused, FetchResult)):
                    fut = self._waiters.pop(ev.req, None)
                    if fut is not None and not fut.done():
                        fut.set_result(ev)
                elif isinstance(ev, EnvelopePushed):
                    await self._pushed.put(ev)
                elif isinstance(ev, RelayFailed):
                    raise ev.error
        except ConnectionClosed:
            failure = PeerUnavailable(f"relay {self.url} closed the connection")
        except NetworkError as e:
            failure = e
        except asyncio.CancelledError:
            failure = PeerUnavailable("connection closed")
            self._fail(failure)
            raise
        self._fail(failure)

    def _fail(self, failure: NetworkError) -> None:
        if self._failure is None:
            self._failure = failure
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(self._failure)
        self._waiters.clear()
        with contextlib.suppress(asyncio.QueueFull):
            self._pushed.put_nowait(None)

    @property
    def failed(self) -> NetworkError | None:
        return self._failure

    async def _send(self, data: bytes) -> None:
        if self._failure is not None:
            raise self._failure
        self.bytes_sent += len(data)
        try:
            await self._ws.send(data)
        except ConnectionClosed:
            raise PeerUnavailable(f"relay {self.url} closed the connection") from None

    async def _request(self, req: int, data: bytes) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[req] = fut
        await self._send(data)
        return await fut

    async def push(self, envelope: bytes) -> PutAcked:
        """Store one envelope. Raises RelayQuotaExceeded / RelayError if refused."""
        req, data = self._core.put(envelope)
        ev = await self._request(req, data)
        if isinstance(ev, PutRefused):
            raise ev.error
        assert isinstance(ev, PutAcked)
        return ev

    async def push_many(self, envelopes: Sequence[bytes], window: int = 32) -> list[PutAcked | RelayError]:
        """Pipelined pushes (at most `window` in flight). One result per envelope."""
        sem = asyncio.Semaphore(window)

        async def one(env: bytes) -> PutAcked | RelayError:
            async with sem:
                try:
                    return await self.push(env)
                except RelayError as e:
                    return e

        return list(await asyncio.gather(*(one(e) for e in envelopes)))

    async def fetch(self, since: int, limit: int = 200) -> FetchResult:
        req, data = self._core.fetch(since, limit)
        ev = await self._request(req, data)
        assert isinstance(ev, FetchResult)
        return ev

    async def fetch_all(self, since: int) -> tuple[list[tuple[int, bytes]], int]:
        """Every envelope after `since`: (items, next cursor)."""
        items: list[tuple[int, bytes]] = []
        while True:
            page = await self.fetch(since)
            items.extend(page.items)
            since = page.next_cursor
            if not page.more or not page.items:
                return items, since

    async def subscribe(self, since: int) -> None:
        """Ask for every envelope after `since`, then live ones; read them with `pushed()`."""
        await self._send(self._core.subscribe(since))

    async def pushed(self) -> AsyncIterator[tuple[int, bytes]]:
        """(cursor, envelope) pairs as the relay pushes them; ends by raising on failure."""
        while True:
            if self._failure is not None and self._pushed.empty():
                raise self._failure
            ev = await self._pushed.get()
            if ev is None:
                assert self._failure is not None
                raise self._failure
            yield ev.cursor, ev.envelope

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        with contextlib.suppress(Exception):
            await self._ws.close()

    async def __aenter__(self) -> RelayConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# --- cursors ------------------------------------------------------------------


@dataclass
class RelayCursor:
    instance: str = ""  # hex of the relay store's instance id; "" = never connected
    mailbox: str = ""  # hex of the mailbox this cursor belongs to
    cursor: int = 0


@dataclass
class RelayCursors:
    """Per-relay read positions. The caller persists them (to_json/from_json)."""

    by_url: dict[str, RelayCursor] = field(default_factory=dict)

    def get(self, url: str) -> RelayCursor:
        return self.by_url.setdefault(url, RelayCursor())

    def to_json(self) -> str:
        return json.dumps(
            {u: {"instance": c.instance, "mailbox": c.mailbox, "cursor": c.cursor}
             for u, c in sorted(self.by_url.items())},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> RelayCursors:
        try:
            raw = json.loads(text) if text.strip() else {}
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
            out = cls()
            for url, c in dict(raw).items():
                cursor = int(c.get("cursor", 0))
                if cursor < 0:
                    raise ValueError("negative cursor")
                out.by_url[str(url)] = RelayCursor(str(c.get("instance", "")), str(c.get("mailbox", "")), cursor)
            return out
        except (ValueError, TypeError, AttributeError) as e:
            raise UsageError(f"relay cursors are malformed: {e}") from None


# --- pool ---------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.5
    maximum: float = 60.0
    factor: float = 2.0

    def delays(self) -> Iterable[float]:
        d = self.initial
        while True:
            yield d * random.uniform(0.5, 1.0)
            d = min(self.maximum, d * self.factor)


@dataclass
class RelayStatus:
    url: str
    connected: bool = False
    caught_up: bool = False  # has delivered everything the relay held at connect time
    last_seen: float | None = None  # wall clock of the last message from the relay
    last_error: str | None = None
    pending: int = 0  # envelopes not yet acknowledged by this relay
    cursor: int = 0
    received: int = 0  # envelopes read from this relay (before dedupe)
    resets: int = 0
    needs_resync: bool = False
    bytes_sent: int = 0  # protocol bytes to and from this relay, all connections so far
    bytes_received: int = 0


EnvelopeCallback = Callable[[bytes, str], Awaitable[None] | None]
ResetCallback = Callable[[str], Awaitable[None] | None]


async def _maybe_await(x: Awaitable[None] | None) -> None:
    if inspect.isawaitable(x):
        await x


class _Relay:
    def __init__(self, url: str, max_outbox: int) -> None:
        self.url = url
        self.status = RelayStatus(url)
        self.outbox: OrderedDict[bytes, bytes] = OrderedDict()
        self.max_outbox = max_outbox
        self.outbox_changed = asyncio.Event()
        self.drained = asyncio.Event()
        self.drained.set()
        self.caught_up = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.conn: RelayConnection | None = None
        self.refused_since: float | None = None

    def enqueue(self, eid: bytes, env: bytes, urgent: bool = False) -> None:
        if eid in self.outbox:
            return
        self.outbox[eid] = env
        if urgent:  # an alert: ahead of everything still queued (issue 13)
            self.outbox.move_to_end(eid, last=False)
        while len(self.outbox) > self.max_outbox:
            self.outbox.popitem(last=False)
            self.status.needs_resync = True
        self.status.pending = len(self.outbox)
        self.drained.clear()
        self.outbox_changed.set()

    def settle(self, batch: list[tuple[bytes, bytes]], results: Sequence[object]) -> int:
        """Drop what the relay stored; keep what it refused (queued, retried later).

        A refused envelope was *not* delivered: reporting it as sent is how an
        edit got lost behind a full relay (issue 16). Returns how many were refused."""
        refused = 0
        for (eid, _env), res in zip(batch, results, strict=True):
            if isinstance(res, RelayError):
                refused += 1
                if self.refused_since is None:
                    self.refused_since = time.time()
                since = time.strftime("%H:%M", time.localtime(self.refused_since))
                what = "relay full" if isinstance(res, RelayQuotaExceeded) else "relay refused"
                self.status.last_error = (f"{what} since {since}: {res.message}; {len(self.outbox)} envelope(s) "
                                          "still queued and retried")
            else:
                self.done(eid)
        if not refused:
            self.refused_since = None
        return refused

    def done(self, eid: bytes) -> None:
        self.outbox.pop(eid, None)
        self.status.pending = len(self.outbox)
        if not self.outbox:
            self.drained.set()


class RelayPool:
    """Write to every relay, read from every relay, deliver each envelope once."""

    def __init__(
        self,
        urls: Iterable[str],
        creds: CredentialSource,
        *,
        cursors: RelayCursors | None = None,
        on_envelope: EnvelopeCallback | None = None,
        on_reset: ResetCallback | None = None,
        backoff: Backoff | None = None,
        max_outbox: int = 10_000,
        seen_capacity: int = 100_000,
        open_timeout: float = 10.0,
    ) -> None:
        self.creds = creds
        self.cursors = cursors or RelayCursors()
        self.on_envelope = on_envelope
        self.on_reset = on_reset
        self.backoff = backoff or Backoff()
        self.open_timeout = open_timeout
        self._relays: dict[str, _Relay] = {}
        self._max_outbox = max_outbox
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._seen_capacity = seen_capacity
        self._queue: asyncio.Queue[tuple[bytes, str]] = asyncio.Queue(_PUSH_QUEUE)
        self._deliver_lock = asyncio.Lock()
        self._started = False
        self.rejected = 0  # envelopes whose on_envelope raised a CircleError
        for url in urls:
            u = normalise_relay_url(url)  # an insecure one is reported by its supervisor
            self._relays[u] = _Relay(u, max_outbox)

    def creds_for(self, url: str) -> RelayCredentials:
        return self.creds(url) if callable(self.creds) else self.creds

    # --- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        self._started = True
        for r in self._relays.values():
            if r.task is None:
                r.task = asyncio.create_task(self._supervise(r))

    async def close(self) -> None:
        self._started = False
        tasks = [r.task for r in self._relays.values() if r.task is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for r in self._relays.values():
            r.task = None

    async def __aenter__(self) -> RelayPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def add_relay(self, url: str) -> None:
        url = normalise_relay_url(url)
        if url in self._relays:
            return
        r = _Relay(url, self._max_outbox)
        self._relays[url] = r
        if self._started:
            r.task = asyncio.create_task(self._supervise(r))

    async def remove_relay(self, url: str) -> None:
        r = self._relays.pop(normalise_relay_url(url), None)
        if r is not None and r.task is not None:
            r.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await r.task

    @property
    def urls(self) -> list[str]:
        return list(self._relays)

    def status(self) -> list[RelayStatus]:
        for r in self._relays.values():
            r.status.cursor = self.cursors.get(r.url).cursor
        return [r.status for r in self._relays.values()]

    # --- writing ----------------------------------------------------------

    def push(self, envelopes: Iterable[bytes], urgent: bool = False) -> None:
        """Queue envelopes for every relay (returns at once; see `flush`);
        `urgent` ones go to the front of each outbox."""
        for env in reversed(list(envelopes)) if urgent else envelopes:
            env = bytes(env)
            eid = envelope_id(env)
            self._mark_seen(eid)  # our own envelopes are not delivered back to us
            for r in self._relays.values():
                r.enqueue(eid, env, urgent)

    def push_to(self, url: str, envelopes: Iterable[bytes]) -> None:
        """Queue envelopes for one relay only (e.g. a snapshot after `on_reset`)."""
        r = self._relays[normalise_relay_url(url)]
        for env in envelopes:
            env = bytes(env)
            eid = envelope_id(env)
            self._mark_seen(eid)
            r.enqueue(eid, env)

    async def flush(self, timeout: float | None = None, urls: Iterable[str] | None = None) -> dict[str, bool]:
        """Wait until every relay (or those in `urls`) acknowledged everything queued.

        Returns url -> True if that relay's outbox is empty (False = timed out)."""
        wanted = set(self._relays) if urls is None else set(urls)
        waits = [r.drained.wait() for u, r in self._relays.items() if u in wanted]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits), timeout)
        return {u: not r.outbox for u, r in self._relays.items()}

    async def wait_caught_up(self, timeout: float | None = None, *, any_relay: bool = False) -> bool:
        """Wait until every relay (or any one) delivered all it held when we connected."""
        events = [r.caught_up for r in self._relays.values()]
        if not events:
            return True
        try:
            if any_relay:
                tasks = [asyncio.create_task(e.wait()) for e in events]
                try:
                    done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for t in tasks:
                        t.cancel()
                return bool(done)
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), timeout)
            return True
        except TimeoutError:
            return False

    # --- reading ----------------------------------------------------------

    def _mark_seen(self, eid: bytes) -> bool:
        """True if new."""
        if eid in self._seen:
            self._seen.move_to_end(eid)
            return False
        self._seen[eid] = None
        while len(self._seen) > self._seen_capacity:
            self._seen.popitem(last=False)
        return True

    async def envelopes(self) -> AsyncIterator[tuple[bytes, str]]:
        """(envelope, relay url) for every new envelope, when no on_envelope is set."""
        while True:
            yield await self._queue.get()

    async def _deliver(self, r: _Relay, cursor: int, env: bytes) -> None:
        r.status.received += 1
        async with self._deliver_lock:
            if self._mark_seen(envelope_id(env)):
                if self.on_envelope is None:
                    await self._queue.put((env, r.url))
                else:
                    try:
                        await _maybe_await(self.on_envelope(env, r.url))
                    except CircleError as e:  # e.g. a tampered envelope, or bytes automerge refused
                        self.rejected += 1
                        log.warning("rejected an envelope from a relay: %s", e.message)
            c = self.cursors.get(r.url)
            if cursor > c.cursor:
                c.cursor = cursor

    # --- one relay's supervisor -------------------------------------------

    async def _supervise(self, r: _Relay) -> None:
        delays = iter(self.backoff.delays())
        while True:
            conn: RelayConnection | None = None
            try:
                conn = await RelayConnection.open(r.url, self.creds_for(r.url), open_timeout=self.open_timeout)
                r.conn = conn
                delays = iter(self.backoff.delays())  # connected: start backing off afresh
                await self._session(r, conn)
            except asyncio.CancelledError:
                raise
            except InsecureRelay as e:  # retrying will not make it safe
                r.status.last_error = e.message
                return
            except RelayAuthFailed as e:
                r.status.last_error = e.message
            except NetworkError as e:
                r.status.last_error = e.message
            except Exception as e:  # keep the supervisor alive whatever happens
                r.status.last_error = f"unexpected {type(e).__name__}"
                log.exception("relay supervisor error")
            finally:
                r.status.connected = False
                r.conn = None
                r.caught_up.clear()
                r.status.caught_up = False
                if conn is not None:
                    r.status.bytes_sent += conn.bytes_sent
                    r.status.bytes_received += conn.bytes_received
                    await conn.close()
            await asyncio.sleep(next(delays))

    async def _session(self, r: _Relay, conn: RelayConnection) -> None:
        c = self.cursors.get(r.url)
        mailbox = self.creds_for(r.url).mailbox.hex()
        instance = conn.instance.hex()
        reset = False
        if c.mailbox != mailbox:
            c.mailbox, c.instance, c.cursor = mailbox, instance, 0
        elif c.instance and c.instance != instance:
            reset = True
        elif conn.head < c.cursor:
            reset = True
        if reset:
            c.instance, c.cursor = instance, 0
            r.status.resets += 1
        c.instance = instance
        r.status.connected = True
        r.status.last_error = None
        r.status.last_seen = conn.last_seen
        if reset or conn.registered or r.status.needs_resync:
            r.status.needs_resync = False
            if self.on_reset is not None:
                await _maybe_await(self.on_reset(r.url))
        head = conn.head
        if c.cursor >= head:
            r.caught_up.set()
            r.status.caught_up = True
        await conn.subscribe(c.cursor)

        async def reader() -> None:
            async for cursor, env in conn.pushed():
                r.status.last_seen = conn.last_seen
                await self._deliver(r, cursor, env)
                if cursor >= head and not r.caught_up.is_set():
                    r.caught_up.set()
                    r.status.caught_up = True

        async def writer() -> None:
            while True:
                r.outbox_changed.clear()
                batch = list(r.outbox.items())[:256]
                if not batch:
                    await r.outbox_changed.wait()
                    continue
                results = await conn.push_many([env for _eid, env in batch])
                refused = r.settle(batch, results)
                r.status.last_seen = conn.last_seen
                if refused:  # kept queued: retry after a pause (the relay may get room)
                    await asyncio.sleep(REFUSED_RETRY_S)

        tasks = [asyncio.create_task(reader()), asyncio.create_task(writer())]
        try:
            done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                exc = t.exception()
                if exc is not None:
                    raise exc
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t

    # --- one-shot sync ----------------------------------------------------

    async def sync_once(self, timeout: float = 30.0) -> dict[str, str | None]:
        """Connect to each relay once: push the outbox, read everything new, disconnect.

        For CLI commands that should not stay online. Returns url -> error
        message (None on success). Does not need `start()`.
        """

        async def one(r: _Relay) -> str | None:
            try:
                conn = await RelayConnection.open(r.url, self.creds_for(r.url), open_timeout=self.open_timeout)
            except NetworkError as e:
                r.status.last_error = e.message
                return e.message
            try:
                c = self.cursors.get(r.url)
                mailbox, instance = self.creds_for(r.url).mailbox.hex(), conn.instance.hex()
                if c.mailbox != mailbox or (c.instance and c.instance != instance) or conn.head < c.cursor:
                    if c.mailbox == mailbox:
                        r.status.resets += 1
                        if self.on_reset is not None:
                            await _maybe_await(self.on_reset(r.url))
                    c.mailbox, c.cursor = mailbox, 0
                elif conn.registered and self.on_reset is not None:
                    await _maybe_await(self.on_reset(r.url))
                c.instance = instance
                batch = list(r.outbox.items())
                results = await conn.push_many([env for _eid, env in batch])
                refused = r.settle(batch, results)
                since = c.cursor
                while True:
                    page = await conn.fetch(since)
                    for cursor, env in page.items:
                        await self._deliver(r, cursor, env)
                    since = page.next_cursor
                    if not page.more or not page.items:
                        break
                r.status.last_seen = conn.last_seen
                if refused:
                    return r.status.last_error
                r.status.last_error = None
                return None
            except NetworkError as e:
                r.status.last_error = e.message
                return e.message
            finally:
                r.status.bytes_sent += conn.bytes_sent
                r.status.bytes_received += conn.bytes_received
                await conn.close()

        relays = list(self._relays.values())

        async def bounded(r: _Relay) -> str | None:
            try:
                return await asyncio.wait_for(one(r), timeout)
            except TimeoutError:
                r.status.last_error = "timed out"
                return "timed out"

        results = await asyncio.gather(*(bounded(r) for r in relays))
        return {r.url: res for r, res in zip(relays, results, strict=True)}


__all__ = [
    "Backoff", "CredentialSource", "InsecureRelay", "RelayConnection", "RelayCredentials", "RelayCursor",
    "RelayCursors", "RelayPool", "RelayStatus", "check_relay_url", "normalise_relay_url",
]
