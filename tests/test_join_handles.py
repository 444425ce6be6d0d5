"""Issue 11 item 10: every handle and zone the CLI accepts must join.

The join request used to be read under the handshake's 161-byte frame cap
(the joiner sends its last handshake message and its profile in one write),
so a handle in another script, JSON-escaped, made the inviter drop the
connection. These joins run over real loopback TCP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from circle.net.keys import fingerprint
from circle.node.home import Home
from circle.node.invites import InviteHost, JoinedEvent, join
from circle.node.service import CircleService

HANDLES = [
    ("Алексей", "Северный район"),  # Cyrillic
    ("محمد الأحمد", "حي الشمال"),  # Arabic
    ("王小明", "北区"),  # CJK
    ("🦊🌻✊🏽", "🏠"),  # emoji, one with a skin-tone modifier
    ("x" * 40, "z" * 60),  # the documented maximums
    ("Ω" * 40, "Ж" * 60),  # maximums in two-byte UTF-8
    ("😀" * 40, "北" * 60),  # maximums in four- and three-byte UTF-8
]


@pytest.mark.parametrize(("handle", "zone"), HANDLES,
                         ids=["cyrillic", "arabic", "cjk", "emoji", "max-ascii", "max-2byte", "max-4byte"])
async def test_non_latin_and_longest_handles_join(tmp_path: Path, handle: str, zone: str) -> None:
    founder = CircleService.create(Home.create(tmp_path / "ana", None), "Tenants", "ana")
    joined: list[JoinedEvent] = []
    host = InviteHost(founder, on_joined=joined.append)
    await host.start("127.0.0.1", 0)
    try:
        assert host.bound is not None
        code = host.create(10, (f"127.0.0.1:{host.bound[1]}",))
        result = await join(Home.create(tmp_path / "new", None), code, handle, zone)
        await asyncio.sleep(0.05)
    finally:
        await host.close()
    assert [e.handle for e in joined] == [handle]
    me = result.service.board.member(result.service.me)
    assert (me.handle, me.zone) == (handle, zone)
    theirs = founder.board.view().members[result.service.me]
    assert (theirs.handle, theirs.zone) == (handle, zone)
    # One safety number per member: both devices compute the same one.
    assert fingerprint(me.sign_key) == fingerprint(theirs.sign_key)
