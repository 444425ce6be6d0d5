"""Invites on the service level: host pending invites, and join a circle.

The inviter's process keeps its pending invites in memory and serves them on
a TCP listener (the address goes into the code). An invite dies with the
process that made it, when it expires, or when it is used once.

A short code (net/shortcode.py) is served on the same listener: the first
frame of a connection is either a short-code OPEN (answered with the long
code, sealed under the PAKE key, then the connection closes) or the first
handshake message of an ordinary join. The joiner then joins with the long
code on a new connection. A short code stops working when its long code is
used, when it expires, or after MAX_ATTEMPTS answers; the long code is not
affected by wrong short-code guesses (it was never on the wire).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from circle.errors import (
    CircleError,
    InviteError,
    MalformedDocument,
    PeerUnavailable,
    StoreError,
    UsageError,
)
from circle.net.discovery import ALL_INTERFACES, Discovery, PeerFound, parse_manual_peer
from circle.net.framing import FrameDecoder, encode_frame
from circle.net.handshake import MAX_HANDSHAKE_MESSAGE
from circle.net.invite import (
    Connected,
    InviteCode,
    InviterConnection,
    JoinAccepted,
    JoinerConnection,
    JoinEvent,
    JoinFailed,
    JoinRefused,
    JoinRequest,
)
from circle.net.shortcode import (
    MAX_SHORT_MESSAGE,
    Refusal,
    ShortCode,
    ShortInvite,
    ShortJoiner,
    parse_open,
    refuse,
)
from circle.node import membership
from circle.node.home import Home
from circle.node.service import CircleService

JOIN_TIMEOUT_S = 30.0
#: How far a joiner's clock may be ahead of the inviter's before it refuses a code itself
#: (the inviter always checks expiry on its own clock).
INVITE_CLOCK_SKEW_S = 6 * 3600.0
KEYS_FOR_JOINER = 8  # the newest epoch keys a joiner gets (so it can talk to members not yet rotated)


@dataclass
class JoinedEvent:
    member_id: str
    handle: str
    session_fingerprint: str
    code: InviteCode


@dataclass
class InviteHost:
    svc: CircleService
    on_joined: Callable[[JoinedEvent], None] | None = None
    pending: dict[str, InviteCode] = field(default_factory=dict)
    used: dict[str, str] = field(default_factory=dict)  # invite id -> member id
    links: set[str] = field(default_factory=set)  # codes that link a device of ours, not a new member
    failures: list[str] = field(default_factory=list)
    bound: tuple[str, int] | None = None
    _server: asyncio.Server | None = None
    _relay_tasks: dict[str, list[asyncio.Task[None]]] = field(default_factory=dict)
    short: dict[str, ShortInvite] = field(default_factory=dict)  # nameplate -> open short code
    _short_of: dict[str, str] = field(default_factory=dict)  # invite id -> nameplate
    clock: Callable[[], float] = time.time

    async def start(self, host: str = "0.0.0.0", port: int = 0) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve, host, port)
        sock = self._server.sockets[0].getsockname()
        self.bound = (str(sock[0]), int(sock[1]))
        return self.bound

    async def close(self) -> None:
        """Stop accepting; let a join in progress finish sending (bounded)."""
        for tasks in self._relay_tasks.values():
            for task in tasks:
                task.cancel()
        self._relay_tasks.clear()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._server.wait_closed(), 5.0)

    def create_link(self, expires_minutes: float = 10, addresses: tuple[str, ...] = (),
                    relays: tuple[str, ...] = ()) -> InviteCode:
        """A one-time code for linking another device of this member (`circle device link`)."""
        code = self.create(expires_minutes, addresses, relays)
        self.links.add(code.invite_id)
        return code

    def create(self, expires_minutes: float = 30, addresses: tuple[str, ...] = (),
               relays: tuple[str, ...] = ()) -> InviteCode:
        if self.svc.board.active_member(self.svc.me) is None:
            raise UsageError("only an active member can invite")
        if not 1 <= expires_minutes <= 7 * 24 * 60:
            raise UsageError("an invite must expire in between 1 minute and 7 days")
        if not addresses and not relays:
            raise UsageError("an invite needs an address or a relay where the joiner can reach this device")
        code = InviteCode.new(self.svc.config.circle_id, self.svc.me, int(self.clock() + expires_minutes * 60),
                              addresses, relays)
        self.pending[code.invite_id] = code
        if relays:
            from circle.node.invite_relay import serve_invite_on_relay

            loop = asyncio.get_running_loop()
            self._relay_tasks[code.invite_id] = [
                loop.create_task(serve_invite_on_relay(url, self.svc.home.identity, code, self.process))
                for url in relays
            ]
        return code

    def create_short(self, expires_minutes: float = 30, addresses: tuple[str, ...] = (),
                     relays: tuple[str, ...] = ()) -> tuple[InviteCode, ShortCode]:
        """An invite with both forms: the long code (any way in) and a short
        code for the LAN that the joiner trades for the long one."""
        code = self.create(expires_minutes, addresses, relays)
        now = self.clock()
        for nameplate, old in list(self.short.items()):  # keep refusing clearly for an hour, then forget
            if old.expires_at + 3600 <= now:
                del self.short[nameplate]
        short = ShortCode.new()
        while short.nameplate in self.short:
            short = ShortCode.new()
        self.short[short.nameplate] = ShortInvite(short, code.encode(), code.expires_at)
        self._short_of[code.invite_id] = short.nameplate
        return code, short

    def short_attempts_left(self, nameplate: str) -> int:
        invite = self.short.get(nameplate)
        return invite.attempts_left if invite is not None else 0

    def _answer_short(self, nameplate: str, ya: bytes) -> bytes:
        invite = self.short.get(nameplate)
        if invite is None:
            return refuse(Refusal.NOT_OPEN)
        return invite.answer(ya, self.clock())

    def _live_codes(self) -> list[InviteCode]:
        now = self.clock()
        for invite_id, code in list(self.pending.items()):
            if code.expires_at <= now:
                del self.pending[invite_id]
        return list(self.pending.values())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await asyncio.wait_for(self._first_frame(reader), JOIN_TIMEOUT_S)
            opened = parse_open(first[1]) if first is not None else None
            if opened is not None:
                writer.write(encode_frame(self._answer_short(*opened), MAX_SHORT_MESSAGE))
                await writer.drain()
                return
            codes = self._live_codes()
            if first is None or not codes:
                return
            conn = InviterConnection(self.svc.home.identity, codes)
            conn.receive_data(first[0])
            await asyncio.wait_for(self._drive(conn, reader, writer, self.process(conn)), JOIN_TIMEOUT_S)
        except (TimeoutError, OSError, CircleError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    @staticmethod
    async def _first_frame(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
        """(the raw bytes read, the first frame's body), or None if the peer left first."""
        decoder = FrameDecoder(MAX_HANDSHAKE_MESSAGE)
        raw = b""
        while True:
            data = await reader.read(4096)
            if not data:
                return None
            frames, used = decoder.feed_some(data, 1)
            raw += data
            if frames:
                return raw, frames[0]

    async def _drive(self, conn: InviterConnection, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, after: Callable[[], None] | None = None) -> None:
        pending_out = conn.data_to_send()
        if pending_out:  # the answer to what was read with the first frame
            writer.write(pending_out)
            await writer.drain()
        if after is not None:
            after()
        while not conn.closed:
            data = await reader.read(65536)
            conn.receive_data(data)
            after = self.process(conn)
            out = conn.data_to_send()
            if out:
                writer.write(out)
                await writer.drain()
            if after is not None:
                after()  # only once the welcome has been handed to the transport
            if not data:
                break

    def process(self, conn: InviterConnection) -> Callable[[], None] | None:
        """Handle a join connection's events (any transport). Returns what to
        run after the answer has been sent, if someone joined."""
        joined: JoinedEvent | None = None
        while (event := conn.next_event()) is not None:
            if isinstance(event, JoinRequest):
                joined = self._answer(conn, event)
            elif isinstance(event, JoinFailed):
                self.failures.append(str(event.error))
        if joined is None:
            return None
        done = joined
        return lambda: self._joined(done)

    def _joined(self, event: JoinedEvent) -> None:
        # Keep answering on the relay until the code expires, so a second use
        # through a relay is refused at once instead of timing out.
        tasks = self._relay_tasks.get(event.code.invite_id, [])
        if tasks:
            asyncio.get_running_loop().call_later(
                max(0.0, event.code.expires_at - time.time()), lambda: [t.cancel() for t in tasks])
        if self.on_joined is not None:
            self.on_joined(event)

    def _answer(self, conn: InviterConnection, request: JoinRequest) -> JoinedEvent | None:
        code = conn.code
        if code.invite_id not in self.pending or code.expires_at <= self.clock():
            conn.refuse("this invite was already used or has expired")
            return None
        svc = self.svc
        try:
            if code.invite_id in self.links:
                membership.link_device(svc, request.verify_key, request.box_key)
            else:
                membership.add_member(svc, request.verify_key, request.box_key, request.handle, request.zone)
        except CircleError as exc:
            conn.refuse(f"could not add you: {exc}")
            return None
        member_id = request.member_id
        current = svc.membership().current
        number = current.number if current is not None else svc.config.epoch
        del self.pending[code.invite_id]  # one use only, decided before anything is sent
        self.short.pop(self._short_of.pop(code.invite_id, ""), None)  # its short code goes with it
        self.used[code.invite_id] = member_id
        newest = sorted(svc.config.epoch_keys)[-KEYS_FOR_JOINER:]
        conn.accept(JoinAccepted(svc.config.circle_id, svc.config.name, number,
                                 {n: svc.config.epoch_keys[n] for n in newest}, svc.packed_snapshot()))
        fpr = conn.result.fingerprint if conn.result is not None else ""
        return JoinedEvent(member_id, request.handle, fpr, code)


# --- short codes: advertising, finding the inviter, trading the short code for the long one --


SHORT_FIND_TIMEOUT_S = 10.0


async def advertise_short(short: ShortCode, port: int, interfaces: list[str] | None) -> Discovery:
    """Announce an open short code on the LAN (mDNS, tagged under the nameplate's
    public lookup key). `interfaces` None means all (real use only); the caller closes it."""
    disc = Discovery(short.lookup_key, port, interfaces=interfaces if interfaces else ALL_INTERFACES, browse=False)
    await disc.start()
    return disc


async def find_inviter(short: ShortCode, interfaces: list[str] | None,
                       timeout: float = SHORT_FIND_TIMEOUT_S) -> list[str]:
    """HOST:PORT of devices advertising this short code's nameplate on the LAN."""
    found: asyncio.Queue[str] = asyncio.Queue()

    def on_event(event: object) -> None:
        if isinstance(event, PeerFound):
            found.put_nowait(f"{event.address}:{event.port}")

    disc = Discovery(short.lookup_key, 9, interfaces=interfaces if interfaces else ALL_INTERFACES,
                     advertise=False, on_event=on_event)
    await disc.start()
    try:
        first = await asyncio.wait_for(found.get(), timeout)
    except TimeoutError:
        raise PeerUnavailable(
            "no device on this network is offering that short code (is `circle invite --short` still "
            "running, on the same network?); on networks without multicast add --peer HOST:PORT, "
            "or use the long code") from None
    finally:
        await disc.close()
    more = [first]
    while not found.empty():
        more.append(found.get_nowait())
    return more


async def redeem_short(short: ShortCode, addresses: list[str], timeout: float = JOIN_TIMEOUT_S) -> InviteCode:
    """Trade a short code for its long code at the first address that answers.

    A wrong code is reported at once (never retried at another address: each
    answer costs the inviter one of its few attempts)."""
    errors: list[str] = []
    for address in addresses:
        try:
            host, port = parse_manual_peer(address)
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5.0)
        except (TimeoutError, OSError, ValueError, CircleError) as exc:
            errors.append(f"{address}: {exc or 'timed out'}")
            continue
        try:
            joiner = ShortJoiner(short)
            writer.write(encode_frame(joiner.open_message(), MAX_SHORT_MESSAGE))
            await writer.drain()
            reply = await asyncio.wait_for(_read_frame(reader, MAX_SHORT_MESSAGE), timeout)
            if reply is None:
                errors.append(f"{address}: hung up (not an inviter, or an older circle)")
                continue
            code = InviteCode.parse(joiner.receive(reply))
        except (TimeoutError, OSError) as exc:
            errors.append(f"{address}: {exc or 'timed out'}")
            continue
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        # The address that answered is known to work: try it first.
        rest = tuple(a for a in code.addresses if a != address)
        return dataclasses.replace(code, addresses=(address, *rest))
    raise PeerUnavailable("could not reach the inviter (" + "; ".join(errors) + ")")


async def _read_frame(reader: asyncio.StreamReader, cap: int) -> bytes | None:
    decoder = FrameDecoder(cap)
    while True:
        data = await reader.read(4096)
        if not data:
            return None
        frames, _ = decoder.feed_some(data, 1)
        if frames:
            return frames[0]


@dataclass
class JoinResult:
    service: CircleService
    inviter_handle: str
    session_fingerprint: str


async def join(home: Home, code: InviteCode, handle: str, zone: str = "",
               timeout: float = JOIN_TIMEOUT_S, clock: Callable[[], float] = time.time) -> JoinResult:
    """Reach the inviter (LAN addresses first, then relays) and join the circle.

    Expiry is the inviter's rule, on the inviter's clock: it refuses an
    expired code itself. This device only gives up early when the code is
    expired by more than INVITE_CLOCK_SKEW_S on its own clock, so a joiner
    whose clock is hours fast is not told a fresh invite "has expired"."""
    if code.expires_at + INVITE_CLOCK_SKEW_S <= clock():
        raise InviteError("this invite has expired; ask for a new one")
    if code.circle_id in home.circle_ids():
        raise StoreError("this device is already in that circle")
    if not code.addresses and not code.relays:
        raise InviteError("this invite lists no way to reach the inviter")
    errors: list[str] = []
    for address in code.addresses:
        try:
            host, port = parse_manual_peer(address)
        except (ValueError, CircleError):
            errors.append(f"{address}: not an address")
            continue
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5.0)
        except (TimeoutError, OSError) as exc:
            errors.append(f"{address}: {exc or 'timed out'}")
            continue

        async def send_tcp(data: bytes, writer: asyncio.StreamWriter = writer) -> None:
            writer.write(data)
            await writer.drain()

        async def receive_tcp(reader: asyncio.StreamReader = reader) -> bytes:
            return await reader.read(1 << 20)

        try:
            return await asyncio.wait_for(_join_over(home, code, handle, zone, send_tcp, receive_tcp), timeout)
        except TimeoutError:
            errors.append(f"{address}: the inviter did not answer in time")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    for url in code.relays:
        from circle.node.invite_relay import RelayJoinerPipe

        try:
            pipe = await RelayJoinerPipe.open(url, home.identity, code)
        except CircleError as exc:
            errors.append(f"{url}: {exc}")
            continue
        try:
            return await asyncio.wait_for(_join_over(home, code, handle, zone, pipe.send, pipe.receive), timeout)
        except TimeoutError:
            errors.append(f"{url}: the inviter did not answer through the relay in time")
        finally:
            await pipe.close()
    raise PeerUnavailable("could not reach the inviter (" + "; ".join(errors) + "); is `circle invite` still running?")


async def _join_over(home: Home, code: InviteCode, handle: str, zone: str,
                     send: Callable[[bytes], Awaitable[None]], receive: Callable[[], Awaitable[bytes]]) -> JoinResult:
    conn = JoinerConnection(home.identity, code, handle, zone)
    fpr = ""
    while True:
        out = conn.data_to_send()
        if out:
            await send(out)
        event: JoinEvent | None
        while (event := conn.next_event()) is not None:
            if isinstance(event, Connected):
                fpr = event.result.fingerprint
            elif isinstance(event, JoinAccepted):
                return JoinResult(_install(home, event), "", fpr)
            elif isinstance(event, JoinRefused):
                raise InviteError(f"the inviter refused: {event.reason}")
            elif isinstance(event, JoinFailed):
                raise event.error
        conn.receive_data(await receive())


def _install(home: Home, accepted: JoinAccepted) -> CircleService:
    """The inviter's copy, verified like anything else from a peer (signed by
    members' devices, anchored at the circle's founding statement)."""
    try:
        svc = CircleService.join_from_snapshot(home, accepted.circle_id, accepted.name, accepted.document,
                                               dict(accepted.keys), accepted.epoch)
    except MalformedDocument as exc:
        raise InviteError(f"the inviter sent a document this device cannot trust: {exc}") from None
    mine = svc.membership().active_device(home.identity.verify_key)
    if mine is None:
        raise InviteError("the inviter's document does not list this device as a member")
    if mine.member != home.identity.verify_key:  # a linked device acts for the member that certified it
        svc.config.settings["member_key"] = mine.member.hex()
        svc.config.save(home)
        svc.board.me = svc.me
    membership.reconcile(svc)
    return svc
