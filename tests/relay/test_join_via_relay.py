"""Issue 4 through a relay: the joiner cannot reach the inviter directly, so
the join protocol travels as envelopes through a real relay process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from circle.errors import InviteError
from circle.node.home import Home
from circle.node.invites import InviteHost, JoinedEvent, join
from circle.node.service import CircleService


async def test_join_through_a_relay_and_relay_sees_only_ciphertext(relay_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    relay = relay_factory()
    founder = CircleService.create(Home.create(tmp_path / "ana", None), "Secret Tenants Union", "anahandle")
    founder.board.add_need("Lawyer for the eviction hearing")
    joined: list[JoinedEvent] = []
    host = InviteHost(founder, on_joined=joined.append)  # no TCP listener at all: relay only
    code = host.create(10, addresses=(), relays=(relay.url,))
    await asyncio.sleep(0.3)  # the host subscribes to the invite mailbox
    try:
        result = await asyncio.wait_for(join(Home.create(tmp_path / "bo", None), code, "bo-handle"), 30)
        for _ in range(50):
            if joined:
                break
            await asyncio.sleep(0.05)
        bo = result.service
        assert [e.handle for e in joined] == ["bo-handle"]
        assert joined[0].session_fingerprint == result.session_fingerprint
        assert {m.handle for m in bo.board.members()} == {"anahandle", "bo-handle"}
        assert [n.title for n in bo.board.needs()] == ["Lawyer for the eviction hearing"]

        # The code is spent: a second joiner through the same relay is refused, in words.
        with pytest.raises(InviteError, match="already used"):
            await asyncio.wait_for(join(Home.create(tmp_path / "eve", None), code, "eve"), 20)
    finally:
        await host.close()
    relay.stop()
    stored = b"".join(p.read_bytes() for p in Path(relay.data).rglob("*") if p.is_file())
    stored += relay.log.read_bytes()
    for secret in (b"Secret Tenants Union", b"Lawyer for the eviction", b"bo-handle", b"anahandle",
                   founder.me.encode(), code.secret, code.key):
        assert secret not in stored
    assert stored  # the relay did store something (the join went through it)



async def test_invite_mailbox_is_per_relay(relay_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An invite listing two relays uses a different token (and mailbox) on each,
    like the circle's own mailboxes: relay A's operator, who saw the token, can
    neither use it at relay B nor link the invite across the two by mailbox id."""
    from circle.net.relay_client import RelayConnection, RelayCredentials

    relay = relay_factory()
    founder = CircleService.create(Home.create(tmp_path / "ana", None), "Tenants", "ana")
    joined: list[JoinedEvent] = []
    host = InviteHost(founder, on_joined=joined.append)
    other_url = "wss://relay-b.example.org/"
    code = host.create(10, addresses=(), relays=(relay.url,))
    await asyncio.sleep(0.3)
    try:
        await asyncio.wait_for(join(Home.create(tmp_path / "bo", None), code, "bo"), 30)
    finally:
        await host.close()
    per_relay = RelayCredentials.for_relay(code.key, relay.url)
    assert per_relay.mailbox != RelayCredentials.for_relay(code.key, other_url).mailbox
    async with await RelayConnection.open(relay.url, per_relay) as conn:
        envelopes, _ = await conn.fetch_all(0)
    assert envelopes, "the join went through the relay's per-relay invite mailbox"
    async with await RelayConnection.open(relay.url, RelayCredentials.for_epoch(code.key)) as conn:
        shared, _ = await conn.fetch_all(0)
    assert shared == []  # nothing under the one-token-for-every-relay mailbox
    relay.stop()
