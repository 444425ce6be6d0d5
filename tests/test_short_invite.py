"""Short invite codes (net/shortcode.py): attacks first, over real loopback TCP.

A stranger on the LAN must not be able to use a 12-digit code as a weak
secret: online guesses are few and counted, and a recording of an honest
exchange gives nothing to test guesses against offline."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import nacl.bindings as sodium
import nacl.exceptions
import pytest

from circle.errors import InviteError
from circle.net.framing import FrameDecoder, encode_frame
from circle.net.shortcode import (
    MAX_ATTEMPTS,
    MAX_SHORT_MESSAGE,
    ShortCode,
    ShortInvite,
    ShortJoiner,
    damm,
    parse_open,
    reply_ad,
)
from circle.node.home import Home
from circle.node.invites import InviteHost, JoinedEvent, join, redeem_short
from circle.node.service import CircleService


@pytest.fixture
def founder(tmp_path: Path) -> CircleService:
    home = Home.create(tmp_path / "ana", None)
    svc = CircleService.create(home, "Tenants", "ana")
    svc.board.add_need("Fix the boiler", category="housing")
    return svc


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def _host(svc: CircleService, clock: Clock | None = None) -> tuple[InviteHost, list[JoinedEvent], str]:
    joined: list[JoinedEvent] = []
    host = InviteHost(svc, on_joined=joined.append)
    if clock is not None:
        host.clock = clock
    bound = await host.start("127.0.0.1", 0)
    return host, joined, f"127.0.0.1:{bound[1]}"


def _wrong(short: ShortCode, n: int) -> ShortCode:
    """A well-formed code for the same nameplate with another password."""
    password = f"{(int(short.password) + 1 + n * 7919) % 10**7:07d}"
    return ShortCode(short.nameplate, password)


async def _exchange(address: str, message: bytes) -> bytes:
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(encode_frame(message, MAX_SHORT_MESSAGE))
    await writer.drain()
    decoder = FrameDecoder(MAX_SHORT_MESSAGE)
    try:
        while True:
            data = await reader.read(4096)
            assert data, "the inviter hung up without answering"
            frames = decoder.feed(data)
            if frames:
                return frames[0]
    finally:
        writer.close()


# --- the code itself ----------------------------------------------------------------


def test_code_form_and_offline_typo_check() -> None:
    for _ in range(200):
        code = ShortCode.new()
        text = code.text
        assert len(text) == 14 and [len(g) for g in text.split("-")] == [4, 4, 4]
        assert ShortCode.parse(text) == code
        assert ShortCode.parse(text.replace("-", " ")) == code
        assert ShortCode.parse(text.replace("-", "")) == code
    digits = ShortCode.new().digits
    for i in range(12):  # every single wrong digit is caught before any traffic
        for d in "0123456789":
            if d != digits[i]:
                with pytest.raises(InviteError, match="mistyped"):
                    ShortCode.parse(digits[:i] + d + digits[i + 1 :])
    for i in range(11):  # every swap of two different neighbours too
        if digits[i] != digits[i + 1]:
            swapped = digits[:i] + digits[i + 1] + digits[i] + digits[i + 2 :]
            assert damm(swapped) != 0
    with pytest.raises(InviteError, match="12 digits"):
        ShortCode.parse("4821-0937-551")
    assert not ShortCode.looks_short("circle:abcd-efgh")


# --- attacks: online guessing -----------------------------------------------------------


async def test_wrong_guesses_are_refused_and_the_limit_kills_the_short_code(
        founder: CircleService, tmp_path: Path) -> None:
    host, joined, address = await _host(founder)
    try:
        long_code, short = host.create_short(10, (address,))
        for n in range(MAX_ATTEMPTS):
            left = MAX_ATTEMPTS - 1 - n
            with pytest.raises(InviteError, match=f"does not match.*{left if left else 'no'} more"):
                await redeem_short(_wrong(short, n), [address])
        assert host.short_attempts_left(short.nameplate) == 0
        # The real member, with the right code, is now told to ask for a new invite.
        with pytest.raises(InviteError, match=f"tried {MAX_ATTEMPTS} times.*new invite"):
            await redeem_short(short, [address])
        # Even the right code, sent raw, gets a refusal with nothing sealed in it.
        reply = await _exchange(address, ShortJoiner(short).open_message())
        assert len(reply) == 2
        assert joined == [] and len(founder.board.members()) == 1
        # The long code was never on the wire: it still works (relay invites need it).
        result = await join(Home.create(tmp_path / "bo", None), long_code, "bo")
        assert result.service.board.member("bo").active
    finally:
        await host.close()


async def test_parallel_guesses_cannot_exceed_the_limit(founder: CircleService) -> None:
    """Opening many connections at once does not buy more answers."""
    host, _, address = await _host(founder)
    try:
        _, short = host.create_short(10, (address,))
        joiners = [ShortJoiner(_wrong(short, n)) for n in range(10)]
        replies = await asyncio.gather(*(_exchange(address, j.open_message()) for j in joiners))
        answered = [r for r in replies if len(r) > 2]
        assert len(answered) == MAX_ATTEMPTS
        assert host.short_attempts_left(short.nameplate) == 0
    finally:
        await host.close()


async def test_expired_short_code_is_refused(founder: CircleService) -> None:
    clock = Clock()
    host, _, address = await _host(founder, clock)
    try:
        _, short = host.create_short(10, (address,))
        clock.now += 10 * 60 + 1
        with pytest.raises(InviteError, match="expired.*new invite"):
            await redeem_short(short, [address])
        assert host.short_attempts_left(short.nameplate) == MAX_ATTEMPTS  # no answer was given
    finally:
        await host.close()


async def test_short_code_dies_with_its_long_code(founder: CircleService, tmp_path: Path) -> None:
    host, _, address = await _host(founder)
    try:
        long_code, short = host.create_short(10, (address,))
        await join(Home.create(tmp_path / "bo", None), long_code, "bo")
        with pytest.raises(InviteError, match="no open invite with this short code"):
            await redeem_short(short, [address])
    finally:
        await host.close()


# --- attacks: a recorded exchange -------------------------------------------------------


def _record(short: ShortCode, long_text: str) -> tuple[bytes, bytes, bytes]:
    """An honest exchange: (OPEN, REPLY, the session key only the two sides know)."""
    from circle.net import shortcode as sc

    invite = ShortInvite(short, long_text, expires_at=2e9)
    joiner = ShortJoiner(short)
    opening = joiner.open_message()
    nameplate, ya = parse_open(opening) or ("", b"")
    reply = invite.answer(ya, now=0)
    assert joiner.receive(reply) == long_text  # the honest run works
    key = sc._session_key(joiner._y, reply[2:34], nameplate, ya, reply[2:34])
    return opening, reply, key


def _offline_candidates(opening: bytes, reply: bytes, password: str) -> list[bytes]:
    """Every key an eavesdropper can compute from the transcript and one guess."""
    import nacl.encoding
    import nacl.hash

    from circle.net import shortcode as sc

    nameplate, ya = parse_open(opening) or ("", b"")
    yb = reply[2:34]
    guess = ShortCode(nameplate, password)
    g = sc._generator(guess)
    points = [g, ya, yb, sodium.crypto_core_ed25519_add(ya, yb), sodium.crypto_core_ed25519_sub(ya, g),
              sodium.crypto_core_ed25519_sub(yb, g), sodium.crypto_core_ed25519_add(ya, g)]
    keys = [sc._hash(sc._DSI + b"|" + nameplate.encode() + b"|" + ya + yb, sc._PERSON_K, key=p) for p in points]
    keys.append(nacl.hash.blake2b((nameplate + password).encode(), digest_size=32,
                                  encoder=nacl.encoding.RawEncoder))
    return keys


def _opens(reply: bytes, ya: bytes, key: bytes) -> bool:
    try:
        sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(reply[34:], reply_ad(reply, ya), bytes(24), key)
        return True
    except nacl.exceptions.CryptoError:
        return False


def test_a_recorded_exchange_gives_nothing_to_test_guesses_against() -> None:
    short = ShortCode.new()
    opening, reply, session_key = _record(short, "circle:long-code")
    _, ya = parse_open(opening) or ("", b"")
    assert _opens(reply, ya, session_key)  # the check below is real: the session key does open it
    true_pw = int(short.password)
    guesses = [f"{(true_pw + d) % 10**7:07d}" for d in range(-200, 201)]  # the true one is among them
    hits = [pw for pw in guesses for key in _offline_candidates(opening, reply, pw) if _opens(reply, ya, key)]
    assert hits == []  # not even the right password can be confirmed from the recording

    # Control: the same search breaks a design that keys the reply from the code
    # directly (what the long code's PSK does, fine at 128 bits, fatal at 23).
    naive_key = _offline_candidates(opening, reply, short.password)[-1]
    naive = reply[:34] + sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        b"circle:long-code", reply_ad(reply, ya), bytes(24), naive_key)
    found = {pw for pw in guesses for key in _offline_candidates(opening, naive, pw) if _opens(naive, ya, key)}
    assert found == {short.password}


def test_messages_are_fresh_group_elements_for_every_code() -> None:
    """Ya is y*G_code with a fresh uniform y: a valid group element that never repeats
    and carries no code-dependent tag; with y fixed it moves with the code only
    through the unknown generator (no function of the code alone maps one to the other)."""
    short = ShortCode.new()
    seen = {ShortJoiner(short).ya for _ in range(50)}
    assert len(seen) == 50 and all(sodium.crypto_core_ed25519_is_valid_point(p) for p in seen)
    fixed = os.urandom(64)
    a = ShortJoiner(short, rng=lambda n: fixed).open_message()
    b = ShortJoiner(_wrong(short, 0), rng=lambda n: fixed).open_message()
    assert len(a) == len(b) and a[:4] == b[:4]  # same header, nameplate in clear (it is public)
    assert sodium.crypto_core_ed25519_is_valid_point(a[4:]) and sodium.crypto_core_ed25519_is_valid_point(b[4:])


async def test_replayed_opening_gets_a_reply_it_cannot_open(founder: CircleService, tmp_path: Path) -> None:
    host, _, address = await _host(founder)
    try:
        _, short = host.create_short(10, (address,))
        honest = ShortJoiner(short)
        first = await _exchange(address, honest.open_message())
        honest.receive(first)  # the honest joiner got the long code
        # An eavesdropper replays the honest OPEN: a fresh Yb, under a key that needs ya.
        replayed = await _exchange(address, honest.open_message())
        assert replayed[2:34] != first[2:34]
        from circle.net import shortcode as sc

        nameplate, ya = parse_open(honest.open_message()) or ("", b"")
        old_key = sc._session_key(honest._y, first[2:34], nameplate, ya, first[2:34])
        assert _opens(first, ya, old_key)
        # Even someone who learned the old session key, or guesses the password,
        # cannot open the answer to the replay.
        recorded_keys = [old_key, *_offline_candidates(honest.open_message(), replayed, short.password)]
        assert not any(_opens(replayed, ya, k) for k in recorded_keys)
        # And it cost the inviter an attempt: replays count like guesses.
        assert host.short_attempts_left(short.nameplate) == MAX_ATTEMPTS - 2
    finally:
        await host.close()


async def test_invalid_points_are_refused(founder: CircleService) -> None:
    host, _, address = await _host(founder)
    try:
        _, short = host.create_short(10, (address,))
        opening = ShortJoiner(short).open_message()
        for bad in (bytes(32), bytes([1]) + bytes(31), b"\xff" * 32):  # zero, identity, non-canonical
            host_, port = address.rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host_, int(port))
            writer.write(encode_frame(opening[:4] + bad, MAX_SHORT_MESSAGE))
            await writer.drain()
            assert await asyncio.wait_for(reader.read(100), 5) == b""  # hung up, nothing sealed
            writer.close()
        assert host.short_attempts_left(short.nameplate) == MAX_ATTEMPTS
    finally:
        await host.close()


async def test_honest_short_join_over_loopback(founder: CircleService, tmp_path: Path) -> None:
    host, joined, address = await _host(founder)
    try:
        long_code, short = host.create_short(10, (address,))
        code = await redeem_short(ShortCode.parse(short.text.replace("-", " ")), [address])
        assert code == long_code
        result = await join(Home.create(tmp_path / "bo", None), code, "bo")
        await asyncio.sleep(0.05)
        assert [e.handle for e in joined] == ["bo"]
        assert [n.title for n in result.service.board.needs()] == ["Fix the boiler"]
    finally:
        await host.close()


# --- the CLI, end to end: two real homes, two processes ----------------------------------


def test_cli_invite_short_then_join_with_the_digits(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from clihelp import CLI

    ana = CLI(tmp_path / "ana")
    ana.run("init", "--name", "Pantry Collective", "--handle", "ana", "--no-passphrase")
    inviter = subprocess.Popen(
        [sys.executable, "-m", "circle", "invite", "--short", "--listen", "127.0.0.1:0", "--json", "--no-qr"],
        env=ana.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert inviter.stdout is not None
        first = json.loads(inviter.stdout.readline())
        assert first["event"] == "invite" and first["short_attempts"] == MAX_ATTEMPTS
        digits = first["short_code"]
        assert ShortCode.parse(digits) and first["code"].startswith("circle:")
        assert first["announced"] is False  # loopback only: nothing was multicast
        bo = CLI(tmp_path / "bo")
        # A typo is caught offline and costs no attempt.
        typo = digits[:-1] + str((int(digits[-1]) + 1) % 10)
        bad = bo.run("join", typo, "--peer", first["addresses"][0], "--handle", "bo", "--json", check=False)
        assert bad.returncode != 0 and "mistyped" in json.loads(bad.stdout)["error"]
        groups = digits.split("-")  # read aloud as three words
        out = bo.run("join", *groups, "--peer", first["addresses"][0], "--handle", "bo", "--no-passphrase", "--json")
        joined_bo = json.loads(out.stdout)
        done = json.loads(inviter.stdout.readline())
        assert done["event"] == "joined" and done["handle"] == "bo"
        # The same "do they match?" numbers as with the long code, on both sides.
        assert joined_bo["inviter_safety_number"] == first["safety_number"]
        assert joined_bo["safety_number"] == done["safety_number"]
        assert inviter.wait(20) == 0
        assert {m["handle"] for m in bo.json("members")} == {"ana", "bo"}
    finally:
        if inviter.poll() is None:
            inviter.kill()
            inviter.wait()


def test_cli_guessing_stranger_burns_the_short_code_and_the_member_is_told(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from clihelp import CLI

    ana = CLI(tmp_path / "ana")
    ana.run("init", "--name", "Pantry Collective", "--handle", "ana", "--no-passphrase")
    inviter = subprocess.Popen(
        [sys.executable, "-m", "circle", "invite", "--short", "--listen", "127.0.0.1:0", "--json", "--no-qr"],
        env=ana.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert inviter.stdout is not None
        first = json.loads(inviter.stdout.readline())
        short, address = ShortCode.parse(first["short_code"]), first["addresses"][0]
        for n in range(MAX_ATTEMPTS):  # a stranger on the LAN, guessing
            with pytest.raises(InviteError, match="does not match"):
                asyncio.run(redeem_short(_wrong(short, n), [address]))
        assert json.loads(inviter.stdout.readline()) == {"event": "short_code_used_up"}
        bo = CLI(tmp_path / "bo")
        out = bo.run("join", first["short_code"], "--peer", address, "--handle", "bo", "--json", check=False)
        assert out.returncode != 0
        assert "new invite" in json.loads(out.stdout)["error"]
        assert not (tmp_path / "bo").exists()  # refused before this device made anything
        # The long code still works for the member.
        out = bo.run("join", first["code"], "--handle", "bo", "--no-passphrase", "--json")
        assert json.loads(inviter.stdout.readline())["event"] == "joined"
    finally:
        if inviter.poll() is None:
            inviter.kill()
        inviter.wait()
