"""Discovery logic without sockets: tag matching, peer bookkeeping, rotation.

Nothing here starts zeroconf; the multi-host tests are in
test_discovery_netns.py.
"""

from __future__ import annotations

import asyncio

import pytest

from circle.net.discovery import (
    ALL_INTERFACES,
    HEARTBEAT_S,
    MAX_SILENCE_S,
    SERVICE_TYPE,
    WINDOW_SECONDS,
    Advert,
    AdvertIgnored,
    Advertiser,
    AdvertMatched,
    Discovery,
    PeerFound,
    PeerLost,
    PeerTable,
    advert_properties,
    parse_manual_peer,
    tag_hex,
    tag_matches,
    window_for,
)
from circle.net.keys import EpochKey, new_epoch_key

T0 = 1_700_000_100.0  # 100 s into a window
W0 = window_for(T0)


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def props(key: EpochKey, window: int = W0, port: int = 7000, addr: str = "10.0.0.2") -> dict[str, str]:
    return advert_properties(key, window, port, [addr])


# -- tags --------------------------------------------------------------------


def test_window_is_five_minutes() -> None:
    assert WINDOW_SECONDS == 300
    assert window_for(T0) == int(T0) // 300
    assert window_for(T0 + 300) == W0 + 1


ADDRS = ["10.0.0.2"]


def test_txt_record_holds_only_version_nonce_and_tag() -> None:
    key = new_epoch_key()
    p = advert_properties(key, W0, 7000, ADDRS)
    assert set(p) == {"v", "n", "t"} and p["v"] == "2"
    assert p["t"] == tag_hex(key, bytes.fromhex(p["n"]), W0, 7000, ADDRS)
    assert len(p["t"]) == len(p["n"]) == 32


def test_every_advert_has_its_own_tag_even_for_one_key_and_window() -> None:
    # Issue 10: every member used to advertise the same tag in a window, and a
    # restart re-advertised it: strangers could group devices by circle.
    key = new_epoch_key()
    tags = {advert_properties(key, W0, 7420, ADDRS)["t"] for _ in range(50)}
    nonces = {advert_properties(key, W0, 7420, ADDRS)["n"] for _ in range(50)}
    assert len(tags) == 50 and len(nonces) == 50


def test_tag_accepts_neighbour_windows_only() -> None:
    key = new_epoch_key()
    for d in (-1, 0, 1):
        assert tag_matches(key, props(key, W0 + d), 7000, ADDRS, T0)
    for d in (-3, -2, 2, 3):
        assert not tag_matches(key, props(key, W0 + d), 7000, ADDRS, T0)
    assert not tag_matches(key, props(key, W0 - 1), 7000, ADDRS, T0, skew_windows=0)


def test_tag_rejects_other_key_and_garbage() -> None:
    key, other = new_epoch_key(), new_epoch_key()
    assert not tag_matches(key, props(other), 7000, ADDRS, T0)
    good = props(key)
    for bad in ({}, {"t": "zz", "n": good["n"]}, {"t": good["t"]}, {"t": good["t"], "n": "00" * 16},
                {"t": good["t"][:-2], "n": good["n"]}, {"t": good["t"], "n": good["n"][:-2]}):
        assert not tag_matches(key, bad, 7000, ADDRS, T0)
    assert tag_matches(key, good, 7000, ADDRS, T0)


def test_a_members_record_replayed_at_another_address_or_port_is_not_recognised() -> None:
    # A stranger copies a member's TXT into an advert of its own, to see which
    # devices dial it (that would tell it who belongs to the circle).
    key = new_epoch_key()
    record = props(key, addr="10.0.0.2", port=7000)
    t = PeerTable(key, Clock(), report_adverts=True)
    for name, addr, port, addrs in (("c1", "10.0.0.66", 7000, None), ("c2", "10.0.0.2", 7001, None),
                                    ("c3", "10.0.0.66", 7000, ["10.0.0.66", "10.0.0.2"])):
        assert t.resolved(name, record, addr, port, addrs) == [AdvertIgnored(name)]
    assert t.peers == frozenset()
    assert t.resolved("real", record, "10.0.0.2", 7000)[0] == PeerFound("10.0.0.2", 7000)


# -- peer table ----------------------------------------------------------------


def test_table_reports_members_and_ignores_others() -> None:
    key = new_epoch_key()
    t = PeerTable(key, Clock(), report_adverts=True)
    assert t.resolved("a." + SERVICE_TYPE, props(key), "10.0.0.2", 7000) == [
        PeerFound("10.0.0.2", 7000), AdvertMatched("a." + SERVICE_TYPE)
    ]
    assert t.resolved("b." + SERVICE_TYPE, props(new_epoch_key(), addr="10.0.0.3"), "10.0.0.3", 7000) == [
        AdvertIgnored("b." + SERVICE_TYPE)
    ]
    assert t.peers == {("10.0.0.2", 7000)}


def test_table_rejects_wrong_version_and_missing_fields() -> None:
    key = new_epoch_key()
    t = PeerTable(key, Clock())
    p = props(key)
    assert t.resolved("a", {**p, "v": "1"}, "10.0.0.2", 7000) == []
    assert t.resolved("b", {"v": "2"}, "10.0.0.2", 7000) == []
    assert t.resolved("c", p, None, 7000) == []
    assert t.resolved("d", p, "10.0.0.2", 0) == []
    assert t.peers == frozenset()


def test_table_ignores_own_adverts() -> None:
    key = new_epoch_key()
    t = PeerTable(key, Clock())
    t.own_instances.add("me")
    assert t.resolved("me", props(key), "10.0.0.1", 7000) == []


def test_rotation_of_a_peer_does_not_flap() -> None:
    key = new_epoch_key()
    t = PeerTable(key, Clock())
    assert t.resolved("old", props(key), "10.0.0.2", 7000) == [PeerFound("10.0.0.2", 7000)]
    assert t.resolved("new", props(key, W0 + 1), "10.0.0.2", 7000) == []
    assert t.removed("old") == []
    assert t.removed("new") == [PeerLost("10.0.0.2", 7000)]
    assert t.removed("new") == []


def test_stale_tags_lapse_when_the_clock_moves() -> None:
    key = new_epoch_key()
    clock = Clock()
    t = PeerTable(key, clock)
    t.resolved("a", props(key), "10.0.0.2", 7000)
    clock.now += WINDOW_SECONDS
    assert t.tick() == []  # previous window still accepted
    clock.now += WINDOW_SECONDS
    assert t.tick() == [PeerLost("10.0.0.2", 7000)]


def test_rekey_drops_peers_on_the_old_key_and_finds_new_ones() -> None:
    old, new = new_epoch_key(), new_epoch_key()
    t = PeerTable(old, Clock())
    t.resolved("a", props(old), "10.0.0.2", 7000)
    t.resolved("b", props(new, addr="10.0.0.3"), "10.0.0.3", 7000)
    assert sorted(map(repr, t.rekey(new))) == sorted(
        map(repr, [PeerLost("10.0.0.2", 7000), PeerFound("10.0.0.3", 7000)])
    )


def test_table_memory_is_bounded() -> None:
    key = new_epoch_key()
    t = PeerTable(key, Clock(), max_tracked=10)
    t.resolved("member", props(key), "10.0.0.2", 7000)
    for i in range(100):
        t.resolved(f"junk{i}", props(new_epoch_key(), addr=f"10.0.1.{i}"), f"10.0.1.{i}", 7000)
    assert len(t._seen) == 10
    assert t.peers == frozenset()  # evicted along with the flood, not kept forever


# -- advertiser rotation (clock injected, fake responder) ------------------------


class FakeRegistrar:
    def __init__(self) -> None:
        self.live: dict[str, Advert] = {}
        self.log: list[tuple[str, str]] = []

    async def register(self, advert: Advert) -> None:
        assert advert.instance not in self.live
        self.live[advert.instance] = advert
        self.log.append(("register", advert.instance))

    async def unregister(self, advert: Advert) -> None:
        del self.live[advert.instance]
        self.log.append(("unregister", advert.instance))

    async def announce(self, advert: Advert) -> None:
        assert advert.instance in self.live
        self.log.append(("announce", advert.instance))


async def test_advertiser_rotates_tag_and_names_with_the_window() -> None:
    key = new_epoch_key()
    clock = Clock()
    reg = FakeRegistrar()
    adv = Advertiser(reg, key, 7420, ["10.77.0.1"], clock)
    await adv.start()
    first = adv.current
    assert first is not None and set(first.properties) == {"v", "n", "t"}
    assert tag_matches(key, first.properties, 7420, ["10.77.0.1"], T0)
    assert await adv.refresh() is False  # same window: nothing republished
    clock.now += WINDOW_SECONDS
    assert await adv.refresh() is True
    second = adv.current
    assert second is not None
    assert second.properties["t"] != first.properties["t"]
    assert second.properties["n"] != first.properties["n"]
    assert tag_matches(key, second.properties, 7420, ["10.77.0.1"], T0 + WINDOW_SECONDS, skew_windows=0)
    # nothing links the windows: new instance and host labels too
    assert second.instance != first.instance and second.server != first.server
    # make-before-break: the new one is registered before the old is withdrawn
    assert reg.log == [
        ("register", first.instance), ("register", second.instance),
        ("unregister", first.instance),
    ]
    assert list(reg.live) == [second.instance]
    await adv.stop()
    assert reg.live == {}


async def test_advertiser_rekey_republishes_under_new_key() -> None:
    key, new = new_epoch_key(), new_epoch_key()
    reg = FakeRegistrar()
    adv = Advertiser(reg, key, 7420, ["10.77.0.1"], Clock())
    await adv.start()
    first = adv.current
    await adv.rekey(new)
    assert adv.current is not None and first is not None
    assert tag_matches(new, adv.current.properties, 7420, ["10.77.0.1"], T0)
    assert not tag_matches(key, adv.current.properties, 7420, ["10.77.0.1"], T0)
    assert adv.current.instance != first.instance


def test_advert_names_are_random_and_carry_nothing_else() -> None:
    key = new_epoch_key()
    reg = FakeRegistrar()
    names = set()
    for _ in range(5):
        adv = Advertiser(reg, key, 7420, ["10.77.0.1"], Clock())
        asyncio.run(adv.start())
        a = adv.current
        assert a is not None
        label = a.instance.removesuffix("." + SERVICE_TYPE)
        host = a.server.removesuffix(".local.")
        assert len(label) == 16 and int(label, 16) >= 0
        assert len(host) == 16 and int(host, 16) >= 0
        names.add(label)
    assert len(names) == 5


# -- liveness without the zeroconf cache ------------------------------------------


class Mono:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_peer_gone_silent_is_lost_after_max_silence_and_found_when_heard_again() -> None:
    # zeroconf keeps a PTR for >= 1125 s whatever TTL is sent, so a peer that
    # vanished without a goodbye stayed listed for minutes (issue 10).
    key = new_epoch_key()
    mono = Mono()
    t = PeerTable(key, Clock(), liveness_clock=mono, max_silence=75)
    t.resolved("a", props(key), "10.0.0.2", 7000)
    mono.now += 60
    t.heard("a")  # a heartbeat
    mono.now += 60
    assert t.tick() == []  # 60 s since the last heartbeat: still there
    mono.now += 16
    assert t.tick() == [PeerLost("10.0.0.2", 7000)]
    assert not t.knows("a")
    t.heard("a")  # unknown now: the driver re-resolves it instead
    assert t.resolved("a", props(key), "10.0.0.2", 7000) == [PeerFound("10.0.0.2", 7000)]


def test_default_timings_drop_a_silent_peer_within_two_minutes() -> None:
    # worst case: heard just before it died, then max_silence, then one poll
    # interval (Discovery's default 10 s) and the lost-grace (3 s)
    assert MAX_SILENCE_S >= 2 * HEARTBEAT_S  # one lost heartbeat does not drop a peer
    assert MAX_SILENCE_S + 10.0 + 3.0 < 120.0


async def test_advertiser_heartbeat_reannounces_the_same_advert() -> None:
    key = new_epoch_key()
    reg = FakeRegistrar()
    adv = Advertiser(reg, key, 7420, ["10.77.0.1"], Clock())
    await adv.heartbeat()  # nothing published yet: nothing sent
    await adv.start()
    await adv.heartbeat()
    assert adv.current is not None
    assert reg.log[-1] == ("announce", adv.current.instance)


# -- driver-level guards (no zeroconf is started in these) ----------------------


def test_interfaces_argument_is_required_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    key = new_epoch_key()
    with pytest.raises(TypeError):
        Discovery(key, 7420)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        Discovery(key, 7420, interfaces=[])
    with pytest.raises(TypeError):
        Discovery(key, 7420, interfaces="10.0.0.1")
    monkeypatch.setenv("CIRCLE_DISCOVERY_FORBID_ALL", "1")
    with pytest.raises(RuntimeError, match="forbidden"):
        Discovery(key, 7420, interfaces=ALL_INTERFACES)


async def test_manual_peers_are_reported_without_mdns() -> None:
    got: list[object] = []
    d = Discovery(
        new_epoch_key(), 7420, interfaces=["192.0.2.1"],
        manual_peers=["192.0.2.7:7420", "[2001:db8::1]:9000", "peer.example:1"],
        advertise=False, browse=False, on_event=got.append,
    )
    async with d:
        assert got == [
            PeerFound("192.0.2.7", 7420, manual=True),
            PeerFound("2001:db8::1", 9000, manual=True),
            PeerFound("peer.example", 1, manual=True),
        ]
        assert d._azc is None  # no mDNS at all when neither advertising nor browsing


@pytest.mark.parametrize("bad", ["", "host", "host:", ":80", "h:0", "h:70000", "h:x", "::1:80", "[::1]80"])
def test_manual_peer_parse_errors(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_manual_peer(bad)
