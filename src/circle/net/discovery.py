"""LAN discovery over mDNS (python-zeroconf), and manual peers.

What goes on the wire (and nothing else):

- service type ``_circle._tcp.local.``;
- an instance name and a host label that are fresh random hex every time the
  advertisement is (re)published: on start, at every tag window rotation and on
  every epoch-key change, so names never link one window to the next;
- the SRV port and the A/AAAA addresses of the interfaces we advertise on;
- a TXT record with exactly three keys: ``v`` (discovery version, 2), ``n``
  (a fresh random 16-byte nonce per advertisement, hex) and ``t`` (the tag:
  ``lan_advert_tag(epoch_key, nonce, window, port, addresses)``, 16 bytes hex,
  ``window = unix_time // 300``).

No circle name, member name, handle, member id, key or machine host name is
ever put into a record. Only holders of the epoch key can compute or check a
tag, so only members recognise each other's advertisements. Because every
advertisement has its own nonce, two devices of one circle (or one device
before and after a restart) publish unrelated tags: a stranger learns that
*some* devices run circle, how many, and their IP/MAC, but cannot group them
by circle or link a restart. Because the tag covers the port and addresses, a
stranger who re-advertises a member's record at its own address is not
recognised (it cannot learn who would have dialled it).

The browser accepts tags for the current window and its neighbours (one window
either side by default) to tolerate clock skew between laptops, and reports
endpoints as :class:`PeerFound` / :class:`PeerLost`. Manual ``host:port`` peers
bypass mDNS entirely (networks that block multicast) and are reported once as
``PeerFound(..., manual=True)``.

Liveness does not rest on the zeroconf cache (which keeps a PTR for at least
1125 s whatever TTL we send): every advertiser re-announces its records every
``heartbeat`` seconds (30 by default), every record heard refreshes that
advertisement's last-heard time, and a matched advertisement not heard for
``max_silence`` seconds (75) is dropped: a peer that vanishes without a
goodbye is reported lost within max_silence + poll_interval + lost_grace
(88 s by default). If it is heard again, it is resolved and found again.

Interfaces: :class:`Discovery` takes a required keyword ``interfaces``. Pass a
list of local IP addresses to bind mDNS to exactly those interfaces (tests must
always do this, inside their own network namespaces), or
:data:`ALL_INTERFACES` for zeroconf's default (every non-loopback IPv4
interface) in real use. Setting the environment variable
``CIRCLE_DISCOVERY_FORBID_ALL=1`` turns :data:`ALL_INTERFACES` into an error,
as a guard for test suites.

The matching / bookkeeping logic is sans-I/O (:class:`PeerTable`,
:func:`advert_properties`) and tested without sockets; :class:`Discovery` is the
thin asyncio driver around python-zeroconf.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from circle.net.keys import KEY_LEN, EpochKey, constant_time_equal, lan_advert_tag

log = logging.getLogger(__name__)

SERVICE_TYPE: Final = "_circle._tcp.local."
PROTOCOL_VERSION: Final = 2
WINDOW_SECONDS: Final = 300
TAG_BYTES: Final = 16
NONCE_BYTES: Final = 16
HEARTBEAT_S: Final = 30.0
"""How often an advertiser re-announces its records (liveness for others)."""
MAX_SILENCE_S: Final = 75.0
"""A matched advertisement not heard for this long is dropped (2.5 heartbeats:
one or two lost multicast packets are tolerated)."""
RECORD_TTL: Final = 120
"""TTL (seconds) for every record we publish: well below one tag window, so
stale advertisements age out of caches soon after a device leaves."""
MAX_TRACKED: Final = 256
"""Cap on remembered foreign advertisements (a flood of fake adverts must not
grow memory without bound)."""
RESOLVE_TIMEOUT_MS: Final = 3000
FORBID_ALL_ENV: Final = "CIRCLE_DISCOVERY_FORBID_ALL"
_DNS_TYPE_PTR: Final = 12


class _AllInterfaces:
    """Sentinel type for :data:`ALL_INTERFACES`."""

    def __repr__(self) -> str:
        return "ALL_INTERFACES"


ALL_INTERFACES: Final = _AllInterfaces()
Interfaces = Sequence[str] | _AllInterfaces


# ---------------------------------------------------------------------------
# events


@dataclass(frozen=True, slots=True)
class PeerFound:
    """A member's device is reachable at ``address:port`` (TCP)."""

    address: str
    port: int
    manual: bool = False


@dataclass(frozen=True, slots=True)
class PeerLost:
    """No matching advertisement for ``address:port`` remains."""

    address: str
    port: int


@dataclass(frozen=True, slots=True)
class AdvertIgnored:
    """A ``_circle._tcp`` advertisement whose tag did not match our key.

    Only emitted when ``report_adverts=True`` (diagnostics and tests).
    """

    instance: str


@dataclass(frozen=True, slots=True)
class AdvertMatched:
    """An advertisement instance newly accepted as a member's.

    Only emitted when ``report_adverts=True`` (diagnostics and tests).
    """

    instance: str


DiscoveryEvent = PeerFound | PeerLost | AdvertIgnored | AdvertMatched


# ---------------------------------------------------------------------------
# pure helpers


def window_for(now: float) -> int:
    """The tag window containing unix time ``now``."""
    return int(now // WINDOW_SECONDS)


def _canonical(addresses: Iterable[str]) -> list[str]:
    out = []
    for a in addresses:
        try:
            out.append(str(ipaddress.ip_address(a)))
        except ValueError:
            out.append(a)
    return sorted(set(out))


def tag_hex(epoch_key: EpochKey, nonce: bytes, window: int, port: int, addresses: Iterable[str]) -> str:
    return lan_advert_tag(epoch_key, nonce, window, port, _canonical(addresses), TAG_BYTES).hex()


def advert_properties(
    epoch_key: EpochKey, window: int, port: int, addresses: Iterable[str], nonce: bytes | None = None
) -> dict[str, str]:
    """The complete TXT record of one advertisement: version, nonce and tag, nothing else."""
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    return {"v": str(PROTOCOL_VERSION), "n": nonce.hex(),
            "t": tag_hex(epoch_key, nonce, window, port, addresses)}


def tag_matches(
    epoch_key: EpochKey, properties: dict[str, str], port: int, addresses: Iterable[str],
    now: float, skew_windows: int = 1,
) -> bool:
    """True if the TXT record's tag is ours for this port and these addresses,
    in the window of ``now`` or a neighbour."""
    try:
        raw = bytes.fromhex(properties.get("t", ""))
        nonce = bytes.fromhex(properties.get("n", ""))
    except ValueError:
        return False
    if len(raw) != TAG_BYTES or len(nonce) != NONCE_BYTES:
        return False
    addrs = _canonical(addresses)
    w = window_for(now)
    ok = False
    for d in range(-skew_windows, skew_windows + 1):
        # no early exit: same work whether or not an earlier window matched
        ok |= constant_time_equal(raw, lan_advert_tag(epoch_key, nonce, w + d, port, addrs, TAG_BYTES))
    return ok


def random_label() -> str:
    """A fresh random DNS label (16 hex chars); never derived from anything."""
    return secrets.token_hex(8)


def parse_manual_peer(text: str) -> tuple[str, int]:
    """Parse ``host:port`` or ``[v6addr]:port``; raises ValueError."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"bad peer {text!r}: expected [ipv6]:port")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"bad peer {text!r}: expected host:port")
    if not host:
        raise ValueError(f"bad peer {text!r}: empty host")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad peer {text!r}: port is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"bad peer {text!r}: port out of range")
    return host, port


@dataclass(frozen=True, slots=True)
class _Seen:
    properties: dict[str, str]
    endpoint: tuple[str, int] | None
    addresses: tuple[str, ...]  # every address in the record (what the tag covers)


class PeerTable:
    """Sans-I/O bookkeeping: which advertisements are ours, which match, which are alive.

    Feed it resolved and removed advertisements, and every time a record of
    an advertisement is heard; it returns the events to report. An endpoint
    (address, port) is found when the first matching instance for it appears
    and lost when the last one goes (withdrawn, lapsed, or silent for
    ``max_silence``), so a peer's rotation (new instance registered, then the
    old one withdrawn) does not flap.
    """

    def __init__(
        self,
        epoch_key: EpochKey,
        clock: Callable[[], float],
        *,
        skew_windows: int = 1,
        report_adverts: bool = False,
        max_tracked: int = MAX_TRACKED,
        liveness_clock: Callable[[], float] = time.monotonic,
        max_silence: float = MAX_SILENCE_S,
    ) -> None:
        _check_key(epoch_key)
        self._key = epoch_key
        self._clock = clock
        self._skew = skew_windows
        self._report_adverts = report_adverts
        self._max = max_tracked
        self._live_clock = liveness_clock
        self.max_silence = max_silence
        self.own_instances: set[str] = set()
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        self._heard: dict[str, float] = {}
        self._matched: dict[str, tuple[str, int]] = {}
        self._refs: dict[tuple[str, int], int] = {}

    @property
    def peers(self) -> frozenset[tuple[str, int]]:
        return frozenset(self._refs)

    def knows(self, instance: str) -> bool:
        """Seen (resolved) and not yet withdrawn or expired, or our own."""
        return instance in self._seen or instance in self.own_instances

    def _accepts(self, seen: _Seen) -> bool:
        return (
            seen.endpoint is not None
            and seen.properties.get("v") == str(PROTOCOL_VERSION)
            and tag_matches(self._key, seen.properties, seen.endpoint[1], seen.addresses,
                            self._clock(), self._skew)
        )

    def _unmatch(self, instance: str) -> list[DiscoveryEvent]:
        ep = self._matched.pop(instance, None)
        if ep is None:
            return []
        self._refs[ep] -= 1
        if self._refs[ep] == 0:
            del self._refs[ep]
            return [PeerLost(*ep)]
        return []

    def _match(self, instance: str, ep: tuple[str, int]) -> list[DiscoveryEvent]:
        if self._matched.get(instance) == ep:
            return []
        events = self._unmatch(instance)
        self._matched[instance] = ep
        self._refs[ep] = self._refs.get(ep, 0) + 1
        if self._refs[ep] == 1:
            events.append(PeerFound(*ep))
        if self._report_adverts:
            events.append(AdvertMatched(instance))
        return events

    def _evaluate(self, instance: str, report: bool) -> list[DiscoveryEvent]:
        seen = self._seen.get(instance)
        if seen is not None and self._accepts(seen):
            assert seen.endpoint is not None
            return self._match(instance, seen.endpoint)
        events = self._unmatch(instance)
        if seen is not None and report and self._report_adverts:
            events.append(AdvertIgnored(instance))
        return events

    def resolved(
        self, instance: str, properties: dict[str, str], address: str | None, port: int | None,
        addresses: Sequence[str] | None = None,
    ) -> list[DiscoveryEvent]:
        """An advertisement was (re)resolved with these TXT properties.

        `address` is the one to dial; `addresses` every address in the record
        (default: just `address`)."""
        if instance in self.own_instances:
            return []
        ep = (address, port) if address is not None and port else None
        addrs = tuple(addresses) if addresses is not None else ((address,) if address else ())
        prev = self._seen.pop(instance, None)
        self._seen[instance] = _Seen(dict(properties), ep, addrs)
        self._heard[instance] = self._live_clock()
        events: list[DiscoveryEvent] = []
        while len(self._seen) > self._max:
            old, _ = self._seen.popitem(last=False)
            self._heard.pop(old, None)
            events += self._unmatch(old)
        changed = prev is None or prev.properties.get("t") != properties.get("t")
        events += self._evaluate(instance, report=changed)
        return events

    def heard(self, instance: str) -> None:
        """A record of this advertisement arrived (an announcement or an answer)."""
        if instance in self._seen:
            self._heard[instance] = self._live_clock()

    def removed(self, instance: str) -> list[DiscoveryEvent]:
        """An advertisement was withdrawn (goodbye) or expired."""
        self._seen.pop(instance, None)
        self._heard.pop(instance, None)
        return self._unmatch(instance)

    def expire(self) -> list[DiscoveryEvent]:
        """Drop advertisements not heard for `max_silence` (a peer gone without goodbye)."""
        limit = self._live_clock() - self.max_silence
        events: list[DiscoveryEvent] = []
        for instance in [i for i, t in self._heard.items() if t < limit]:
            events += self.removed(instance)
        return events

    def rekey(self, epoch_key: EpochKey) -> list[DiscoveryEvent]:
        """Our epoch key changed: re-evaluate everything we have seen."""
        _check_key(epoch_key)
        self._key = epoch_key
        return self.tick()

    def tick(self) -> list[DiscoveryEvent]:
        """Re-evaluate after the clock moved (tags from old windows lapse, silent peers go)."""
        events = self.expire()
        for instance in list(self._seen):
            events += self._evaluate(instance, report=False)
        return events


def _check_key(epoch_key: bytes) -> None:
    if len(epoch_key) != KEY_LEN:
        raise ValueError("epoch key must be 32 bytes")


# ---------------------------------------------------------------------------
# advertising


@dataclass(frozen=True, slots=True)
class Advert:
    """One published advertisement (all fields are what goes on the wire)."""

    instance: str  # full service name: "<random>._circle._tcp.local."
    server: str  # "<random>.local."
    port: int
    addresses: tuple[str, ...]
    properties: dict[str, str]
    window: int


class Registrar(Protocol):
    """What the advertiser needs from an mDNS responder (zeroconf, or a fake)."""

    async def register(self, advert: Advert) -> None: ...

    async def unregister(self, advert: Advert) -> None: ...

    async def announce(self, advert: Advert) -> None:
        """Send the advertisement's records once more, unasked (a heartbeat)."""


class Advertiser:
    """Publishes our advertisement and replaces it when the window rotates.

    Replacement registers a brand-new advertisement (new random instance and
    host label, new tag) *before* withdrawing the old one, so browsers never
    see a gap and nothing links the two windows but IP/MAC.
    """

    def __init__(
        self,
        registrar: Registrar,
        epoch_key: EpochKey,
        port: int,
        addresses: Sequence[str],
        clock: Callable[[], float] = time.time,
        on_publish: Callable[[Advert], None] | None = None,
    ) -> None:
        _check_key(epoch_key)
        self._registrar = registrar
        self._key = epoch_key
        self._port = port
        self._addresses = tuple(addresses)
        self._clock = clock
        self._on_publish = on_publish
        self.current: Advert | None = None
        self._lock = asyncio.Lock()

    def _make(self, window: int) -> Advert:
        label = random_label()
        return Advert(
            instance=f"{label}.{SERVICE_TYPE}",
            server=f"{random_label()}.local.",
            port=self._port,
            addresses=self._addresses,
            properties=advert_properties(self._key, window, self._port, self._addresses),
            window=window,
        )

    async def _replace(self, window: int) -> None:
        old = self.current
        new = self._make(window)
        await self._registrar.register(new)
        self.current = new
        if self._on_publish is not None:
            self._on_publish(new)
        if old is not None:
            await self._registrar.unregister(old)

    async def start(self) -> None:
        async with self._lock:
            if self.current is None:
                await self._replace(window_for(self._clock()))

    async def refresh(self) -> bool:
        """Re-advertise if the window changed; returns True if it did."""
        async with self._lock:
            w = window_for(self._clock())
            if self.current is None or self.current.window == w:
                return False
            await self._replace(w)
            return True

    async def rekey(self, epoch_key: EpochKey) -> None:
        _check_key(epoch_key)
        async with self._lock:
            self._key = epoch_key
            if self.current is not None:
                await self._replace(window_for(self._clock()))

    async def heartbeat(self) -> None:
        """Re-announce the current advertisement unchanged (others' liveness check)."""
        async with self._lock:
            if self.current is not None:
                await self._registrar.announce(self.current)

    async def stop(self) -> None:
        async with self._lock:
            if self.current is not None:
                old, self.current = self.current, None
                await self._registrar.unregister(old)


# ---------------------------------------------------------------------------
# the zeroconf driver


def local_addresses(port: int) -> list[str]:
    """Non-loopback IPv4 `host:port` of this machine, for invite codes and the
    app's "listening on" line (read locally, nothing is sent)."""
    return [f"{i.ip}:{port}" for i in _local_networks() if not i.ip.is_loopback][:6]


def _local_networks() -> list[ipaddress.IPv4Interface]:
    """Every local IPv4 address with its prefix (via ifaddr, zeroconf's dependency)."""
    import ifaddr

    out: list[ipaddress.IPv4Interface] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                out.append(ipaddress.IPv4Interface(f"{ip.ip}/{ip.network_prefix}"))
    return out


def _local_addresses(interfaces: Interfaces) -> list[str]:
    """The addresses we advertise: exactly the interfaces we bind to."""
    if isinstance(interfaces, _AllInterfaces):
        return sorted({str(i.ip) for i in _local_networks() if not i.ip.is_loopback})
    return [str(ipaddress.ip_address(a)) for a in interfaces]


class _ZeroconfRegistrar:
    def __init__(self, azc: Any) -> None:
        self._azc = azc
        self._background: set[Any] = set()

    def _info(self, advert: Advert) -> Any:
        from zeroconf.asyncio import AsyncServiceInfo

        return AsyncServiceInfo(
            SERVICE_TYPE,
            advert.instance,
            port=advert.port,
            properties=dict(advert.properties),
            server=advert.server,
            host_ttl=RECORD_TTL,
            other_ttl=RECORD_TTL,
            parsed_addresses=list(advert.addresses),
        )

    async def register(self, advert: Advert) -> None:
        # No probing for name conflicts (RFC 6762 s8.1): the 64-bit random
        # labels never collide, and probing cost every start ~1.3 s. The
        # three announcements go out in the background.
        task = await self._azc.async_register_service(self._info(advert), cooperating_responders=True)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def unregister(self, advert: Advert) -> None:
        await (await self._azc.async_unregister_service(self._info(advert)))

    async def announce(self, advert: Advert) -> None:
        zc = self._azc.zeroconf
        zc.async_send(zc.generate_service_broadcast(self._info(advert), None))


def _heard_listener(on_heard: Callable[[str], None]) -> Any:
    """A zeroconf record listener: every SRV/TXT/PTR received for one of the
    service's instances counts as hearing from that advertisement."""
    from zeroconf import RecordUpdateListener

    suffix = "." + SERVICE_TYPE

    class Heard(RecordUpdateListener):
        def async_update_records(self, zc: Any, now: float, records: list[Any]) -> None:
            for update in records:
                rec = update.new
                if rec.ttl == 0:  # a goodbye: the browser reports the removal
                    continue
                if rec.type == _DNS_TYPE_PTR:
                    name = str(getattr(rec, "alias", "")) if rec.name.lower() == SERVICE_TYPE else ""
                else:
                    name = rec.name
                if name.lower().endswith(suffix):
                    on_heard(name)

        def async_update_records_complete(self) -> None:
            pass

    return Heard()


class Discovery:
    """Advertise this device and browse for circle peers on the LAN.

    Usage::

        async with Discovery(epoch_key, listen_port, interfaces=["10.0.0.5"]) as d:
            async for event in d.events():
                ...  # PeerFound / PeerLost

    or pass ``on_event=callback`` (called in the event loop). ``interfaces`` is
    required: a list of local IPs, or :data:`ALL_INTERFACES` for zeroconf's
    default (all non-loopback IPv4 interfaces).
    """

    def __init__(
        self,
        epoch_key: EpochKey,
        port: int,
        *,
        interfaces: Interfaces,
        manual_peers: Iterable[str] = (),
        advertise: bool = True,
        browse: bool = True,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 10.0,
        skew_windows: int = 1,
        on_event: Callable[[DiscoveryEvent], None] | None = None,
        on_publish: Callable[[Advert], None] | None = None,
        report_adverts: bool = False,
        lost_grace: float = 3.0,
        heartbeat: float = HEARTBEAT_S,
        max_silence: float = MAX_SILENCE_S,
    ) -> None:
        if isinstance(interfaces, str):
            raise TypeError("interfaces must be a list of IP addresses or ALL_INTERFACES")
        if isinstance(interfaces, _AllInterfaces) and os.environ.get(FORBID_ALL_ENV) == "1":
            raise RuntimeError(f"discovery on all interfaces is forbidden here ({FORBID_ALL_ENV}=1)")
        if not isinstance(interfaces, _AllInterfaces) and not interfaces:
            raise ValueError("interfaces is empty; pass ALL_INTERFACES to use zeroconf's default")
        if not 0 < port < 65536:
            raise ValueError("port out of range")
        self._interfaces = interfaces
        self._manual = [parse_manual_peer(p) for p in manual_peers]
        self._advertise = advertise
        self._browse = browse
        self._clock = clock
        self._poll = poll_interval
        self._on_event = on_event
        self._on_publish = on_publish
        self._key = epoch_key
        self._port = port
        self._grace = lost_grace
        self._heartbeat = heartbeat
        self._last_beat = time.monotonic()
        self._reported: set[tuple[str, int]] = set()
        self._resolving: set[str] = set()
        self._listener: Any = None
        self.table = PeerTable(
            epoch_key, clock, skew_windows=skew_windows, report_adverts=report_adverts,
            max_silence=max_silence,
        )
        self._queue: asyncio.Queue[DiscoveryEvent] = asyncio.Queue()
        self._azc: Any = None
        self._browser: Any = None
        self._advertiser: Advertiser | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._networks: list[ipaddress.IPv4Network] | None = None

    # -- public API --------------------------------------------------------

    @property
    def peers(self) -> frozenset[tuple[str, int]]:
        """Endpoints reported found via mDNS and not (yet) lost; manual ones excluded."""
        return frozenset(self._reported)

    @property
    def advert(self) -> Advert | None:
        """What we currently publish (None if not advertising)."""
        return None if self._advertiser is None else self._advertiser.current

    async def start(self) -> None:
        from zeroconf import InterfaceChoice, IPVersion
        from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

        for host, port in self._manual:
            self._emit([PeerFound(host, port, manual=True)])
        if not (self._advertise or self._browse):
            return
        if isinstance(self._interfaces, _AllInterfaces):
            self._azc = AsyncZeroconf(interfaces=InterfaceChoice.All)
        else:
            ips = [str(ipaddress.ip_address(a)) for a in self._interfaces]
            v6 = [":" in a for a in ips]
            version = IPVersion.V6Only if all(v6) else IPVersion.All if any(v6) else IPVersion.V4Only
            self._azc = AsyncZeroconf(interfaces=ips, ip_version=version)
        if self._advertise:
            self._advertiser = Advertiser(
                _ZeroconfRegistrar(self._azc),
                self._key,
                self._port,
                _local_addresses(self._interfaces),
                self._clock,
                self._on_advert,
            )
            await self._advertiser.start()
        if self._browse:
            self._listener = _heard_listener(self._on_heard)
            self._azc.zeroconf.async_add_listener(self._listener, None)
            self._browser = AsyncServiceBrowser(
                self._azc.zeroconf, [SERVICE_TYPE], handlers=[self._on_service_change]
            )
        self._last_beat = time.monotonic()
        self._spawn(self._poll_loop())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._listener is not None:
            self._azc.zeroconf.async_remove_listener(self._listener)
        if self._browser is not None:
            await self._browser.async_cancel()
        if self._advertiser is not None:
            with contextlib.suppress(Exception):
                await self._advertiser.stop()
        if self._azc is not None:
            await self._azc.async_close()

    async def __aenter__(self) -> Discovery:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def events(self) -> AsyncIterator[DiscoveryEvent]:
        """Yield events as they happen (until the task is cancelled)."""
        while True:
            yield await self._queue.get()

    async def refresh(self) -> None:
        """Check the clock now: rotate or re-announce the advert, lapse old tags
        and drop advertisements gone silent."""
        if self._advertiser is not None:
            rotated = await self._advertiser.refresh()
            if rotated:
                self._last_beat = time.monotonic()
            elif time.monotonic() - self._last_beat >= self._heartbeat:
                self._last_beat = time.monotonic()
                await self._advertiser.heartbeat()
        self._emit(self.table.tick())

    async def set_epoch_key(self, epoch_key: EpochKey) -> None:
        """A new epoch began: re-advertise under it and re-check known peers."""
        self._key = epoch_key
        self._emit(self.table.rekey(epoch_key))
        if self._advertiser is not None:
            await self._advertiser.rekey(epoch_key)

    # -- internals ---------------------------------------------------------

    def _emit(self, events: Iterable[DiscoveryEvent]) -> None:
        """Report events; a loss is confirmed only after ``lost_grace`` seconds.

        A peer rotating its advertisement withdraws the old one while the new
        one may still be resolving; the grace period keeps that from showing
        up as PeerLost + PeerFound.
        """
        for event in events:
            if isinstance(event, PeerFound) and not event.manual:
                ep = (event.address, event.port)
                if ep in self._reported:
                    continue
                self._reported.add(ep)
            elif isinstance(event, PeerLost):
                if self._grace > 0 and not self._closed:
                    self._spawn(self._confirm_lost(event))
                    continue
                if (event.address, event.port) in self.table.peers:
                    continue
                self._reported.discard((event.address, event.port))
            self._deliver(event)

    async def _confirm_lost(self, event: PeerLost) -> None:
        await asyncio.sleep(self._grace)
        ep = (event.address, event.port)
        if ep in self._reported and ep not in self.table.peers:
            self._reported.discard(ep)
            self._deliver(event)

    def _deliver(self, event: DiscoveryEvent) -> None:
        self._queue.put_nowait(event)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("discovery event callback failed")

    def _on_advert(self, advert: Advert) -> None:
        self.table.own_instances.add(advert.instance)
        if self._on_publish is not None:
            self._on_publish(advert)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self._poll)
            try:
                await self.refresh()
            except Exception:
                log.exception("discovery refresh failed")

    def _on_heard(self, name: str) -> None:
        if self._closed:
            return
        if self.table.knows(name):
            self.table.heard(name)
        elif name not in self._resolving:
            # Expired earlier (or evicted) and alive again: the browser will not
            # report it a second time while zeroconf still caches its PTR.
            self._spawn(self._resolve(name))

    def _on_service_change(self, **kwargs: Any) -> None:
        from zeroconf import ServiceStateChange

        name = str(kwargs["name"])
        state = kwargs["state_change"]
        if self._closed:
            return
        if state is ServiceStateChange.Removed:
            self._emit(self.table.removed(name))
        else:  # Added / Updated
            self._spawn(self._resolve(name))

    async def _resolve(self, name: str) -> None:
        from zeroconf import IPVersion
        from zeroconf.asyncio import AsyncServiceInfo

        if name in self.table.own_instances or name in self._resolving:
            return
        self._resolving.add(name)
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        try:
            if not await info.async_request(self._azc.zeroconf, RESOLVE_TIMEOUT_MS):
                return
        except asyncio.CancelledError:
            raise
        except Exception:  # a malformed or vanished advert must not kill discovery
            log.debug("could not resolve %s", name, exc_info=True)
            return
        finally:
            self._resolving.discard(name)
        props = {
            k: v for k, v in info.decoded_properties.items() if isinstance(v, str)
        }
        addrs = info.parsed_addresses(IPVersion.V4Only) or info.parsed_addresses()
        address = self._pick_address(addrs)
        if not self._closed:
            self._emit(self.table.resolved(name, props, address, info.port, info.parsed_addresses()))

    def _pick_address(self, addrs: list[str]) -> str | None:
        """Prefer an address on the same subnet as one of our interfaces."""
        if not addrs:
            return None
        if self._networks is None:
            try:
                nets = _local_networks()
            except Exception:  # pragma: no cover - ifaddr failure is not fatal
                nets = []
            if not isinstance(self._interfaces, _AllInterfaces):
                mine = set(self._interfaces)
                nets = [n for n in nets if str(n.ip) in mine]
            self._networks = [n.network for n in nets if not n.ip.is_loopback]
        for a in addrs:
            ip = ipaddress.ip_address(a)
            if any(ip in net for net in self._networks):
                return a
        return addrs[0]


__all__ = [
    "ALL_INTERFACES", "HEARTBEAT_S", "MAX_SILENCE_S", "SERVICE_TYPE", "PROTOCOL_VERSION",
    "WINDOW_SECONDS", "Advert",
    "AdvertIgnored", "AdvertMatched", "Advertiser", "Discovery", "DiscoveryEvent", "PeerFound", "PeerLost",
    "PeerTable", "Registrar", "advert_properties", "parse_manual_peer", "random_label",
    "tag_hex", "tag_matches", "window_for",
]
