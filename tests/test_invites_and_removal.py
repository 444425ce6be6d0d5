"""Issue 4: invite and join over loopback TCP; removal with key rotation."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest

from circle.errors import InviteError, PeerUnavailable
from circle.net.invite import InviteCode
from circle.net.keys import key_check
from circle.node import membership
from circle.node.home import Home
from circle.node.invites import InviteHost, JoinedEvent, join
from circle.node.service import CircleService
from factories import member_homes
from livehelp import open_service, sync_pair


@pytest.fixture
def founder(tmp_path: Path) -> CircleService:
    home = Home.create(tmp_path / "ana", None)
    svc = CircleService.create(home, "Tenants", "ana")
    svc.board.add_need("Fix the boiler", category="housing")
    return svc


async def _host(svc: CircleService) -> tuple[InviteHost, list[JoinedEvent], list[int]]:
    joined: list[JoinedEvent] = []
    connections: list[int] = []
    host = InviteHost(svc, on_joined=joined.append)
    original = host._serve

    async def counting(reader, writer):  # type: ignore[no-untyped-def]
        connections.append(1)
        await original(reader, writer)

    host._serve = counting  # type: ignore[method-assign]
    await host.start("127.0.0.1", 0)
    return host, joined, connections


async def test_invite_and_join_over_loopback(founder: CircleService, tmp_path: Path) -> None:
    host, joined, _ = await _host(founder)
    assert host.bound is not None
    code = host.create(10, (f"127.0.0.1:{host.bound[1]}",))
    parsed = InviteCode.parse(code.encode())
    assert parsed == code and parsed.fingerprint == code.fingerprint
    result = await join(Home.create(tmp_path / "bo", None), parsed, "bo", "north")
    await asyncio.sleep(0.05)
    await host.close()
    bo = result.service
    assert [e.handle for e in joined] == ["bo"]
    assert joined[0].session_fingerprint == result.session_fingerprint  # same words on both screens
    assert {m.handle for m in bo.board.members()} == {"ana", "bo"}
    assert [n.title for n in bo.board.needs()] == ["Fix the boiler"]  # the whole circle in one step
    me = bo.board.member("bo")
    assert me.invited_by == founder.me and me.zone == "north"
    assert bo.config.epoch_key == founder.config.epoch_key
    # The new member can sync live with the inviter straight away.
    bo.board.add_need("Need from bo")
    await sync_pair(founder, bo)
    assert "Need from bo" in {n.title for n in founder.board.needs()}


async def test_used_expired_mistyped_foreign_and_guessed_codes_are_refused(founder: CircleService, tmp_path: Path) -> None:
    host, joined, connections = await _host(founder)
    assert host.bound is not None
    addr = (f"127.0.0.1:{host.bound[1]}",)
    code = host.create(10, addr)
    await join(Home.create(tmp_path / "bo", None), code, "bo")
    members_before = len(founder.board.members())

    # Used twice: the inviter no longer holds that invite's key.
    with pytest.raises(InviteError, match="already used|expired"):
        await join(Home.create(tmp_path / "eve1", None), code, "eve")

    # Expired on the inviter's side (the joiner's clock still thinks it is fine).
    code2 = host.create(10, addr)
    host.pending[code2.invite_id] = dataclasses.replace(code2, expires_at=int(time.time()) - 1)
    with pytest.raises((InviteError, PeerUnavailable)):
        await join(Home.create(tmp_path / "eve2", None), code2, "eve")
    # Expired on the joiner's side: refused before any traffic.
    before = len(connections)
    with pytest.raises(InviteError, match="expired"):
        await join(Home.create(tmp_path / "eve3", None), dataclasses.replace(code2, expires_at=1), "eve")
    assert len(connections) == before

    # One character changed: caught by the checksum, offline.
    code3 = host.create(10, addr)
    text = code3.encode()
    i = text.index("-", 20) + 1
    typo = text[:i] + ("a" if text[i] != "a" else "b") + text[i + 1 :]
    with pytest.raises(InviteError, match="mistyped"):
        InviteCode.parse(typo)

    # A code for another circle, pointed at this inviter.
    other_home = Home.create(tmp_path / "zed", None)
    other = CircleService.create(other_home, "Other", "zed")
    foreign = InviteCode.new(other.config.circle_id, other.me, int(time.time()) + 600, addr)
    with pytest.raises(InviteError):
        await join(Home.create(tmp_path / "eve4", None), foreign, "eve")

    # An attacker who knows the circle id and inviter but not the secret.
    guessed = InviteCode.new(founder.config.circle_id, founder.me, int(time.time()) + 600, addr)
    eve_home = Home.create(tmp_path / "eve5", None)
    with pytest.raises(InviteError):
        await join(eve_home, guessed, "eve")
    await host.close()

    assert len(founder.board.members()) == members_before  # nobody else got in
    assert eve_home.circle_ids() == []  # and learned nothing
    assert [e.handle for e in joined] == ["bo"]
    assert code3.invite_id in host.pending  # unused codes stay valid


async def test_removed_member_is_shut_out_and_others_rotate(tmp_path: Path) -> None:
    a_path, b_path, c_path = member_homes(tmp_path, ["ana", "bo", "cy"])
    a, b, c = (open_service(p) for p in (a_path, b_path, c_path))
    old_epoch, old_key = a.config.epoch, a.config.epoch_key
    removed, new_epoch = membership.remove(a, "cy")
    assert removed.handle == "cy" and new_epoch > old_epoch
    a.board.add_need("Written after the removal")

    # bo was offline during the removal; it catches up on its next sync.
    await sync_pair(a, b)
    assert b.config.epoch == new_epoch and b.config.epoch_key == a.config.epoch_key != old_key
    assert "Written after the removal" in {n.title for n in b.board.needs()}

    # cy keeps its old keys and old data, but every handshake fails now.
    assert c.config.epoch_key == old_key
    for peer in (a, b):
        reports = await sync_pair(peer, c, timeout=5)
        assert not reports[0].in_sync  # type: ignore[attr-defined]
    assert "Written after the removal" not in {n.title for n in c.board.needs("all")}
    assert new_epoch not in c.config.epoch_keys
    epoch = a.membership().current
    assert epoch is not None and set(epoch.grants) == {a.member_key, b.member_key}


async def test_concurrent_removals_converge_on_one_key(tmp_path: Path) -> None:
    paths = member_homes(tmp_path, ["ana", "bo", "cy", "dee"])
    a, b, c, d = (open_service(p) for p in paths)
    membership.remove(a, "cy")  # ana and bo are apart: each removes someone else
    membership.remove(b, "dee")
    await sync_pair(a, b)
    await sync_pair(a, b)  # the re-rotation made by reconcile travels back
    for svc in (a, b):
        svc.board.invalidate()
        membership.reconcile(svc)
    ea, eb = a.membership().current, b.membership().current
    assert ea is not None and eb is not None and ea.id == eb.id
    assert a.config.epoch == b.config.epoch == ea.number
    assert key_check(a.config.epoch_key) == key_check(b.config.epoch_key) == ea.check
    assert set(ea.grants) == {a.member_key, b.member_key}  # neither removed member holds the final key
    assert {m.handle for m in a.board.members() if m.active} == {"ana", "bo"}
    for outsider in (c, d):
        assert ea.number not in outsider.config.epoch_keys


async def test_a_joiner_whose_clock_is_an_hour_fast_can_join(founder: CircleService, tmp_path: Path) -> None:
    """Issue 16 case 7: expiry is the inviter's rule on the inviter's clock (fixed clock per device)."""
    host, joined, _ = await _host(founder)
    assert host.bound is not None
    code = host.create(10, (f"127.0.0.1:{host.bound[1]}",))
    fast = time.time() + 3600  # the joiner's clock: an hour ahead, frozen
    result = await join(Home.create(tmp_path / "bo", None), code, "bo", clock=lambda: fast)
    await host.close()
    assert [e.handle for e in joined] == ["bo"] and result.service.board.member("bo")
    far = time.time() + 7 * 3600  # beyond the stated skew: refused on this device, before any connection
    with pytest.raises(InviteError, match="expired"):
        await join(Home.create(tmp_path / "cy", None), code, "cy", clock=lambda: far)


async def test_the_join_command_on_a_laptop_an_hour_fast_can_join(founder: CircleService, tmp_path: Path) -> None:
    """Issue 16 case 7 through the real `circle join` process, whose clock is
    an hour fast (time.time patched in that process only): the command used
    to refuse a fresh 10-minute code itself ("has expired")."""
    import os
    import sys

    host, joined, _ = await _host(founder)
    assert host.bound is not None
    code = host.create(10, (f"127.0.0.1:{host.bound[1]}",))
    fast_clock = ("import time, sys; _real = time.time; time.time = lambda: _real() + {offset}; "
                  "sys.argv[0] = 'circle'; from circle.cli.main import main; main()")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIRCLE_")}

    async def run_join(home: str, offset: int) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", fast_clock.format(offset=offset), "--home", home, "join", code.encode(),
            "--handle", "bo", "--no-passphrase", "--timeout", "20", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, (out + err).decode()

    code_rc, text = await run_join(str(tmp_path / "bo"), 3600)
    assert code_rc == 0, text
    assert "expired" not in text and [e.handle for e in joined] == ["bo"]
    code_rc, text = await run_join(str(tmp_path / "cy"), 7 * 3600)  # beyond the stated skew: refused here
    await host.close()
    assert code_rc != 0 and "has expired" in text
