"""Carry the join protocol through a relay, for when the inviter is not on the
joiner's LAN.

The join protocol (net/invite.py) produces a byte stream each way. Through a
relay each chunk of that stream travels in an envelope sealed under the
invite key (so the relay sees only ciphertext, in the mailbox derived from
the invite key), prefixed by:

    attempt id (8 random bytes, chosen by the joiner) | direction (1 byte)

so several attempts, or leftovers of an earlier one, never mix. The relay
keeps per-mailbox order, which is all a byte stream needs. Everything else —
proof of the secret, the inviter check, one use — is the same sans-I/O core
as on the LAN.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

from circle.errors import CircleError, PeerUnavailable
from circle.net.envelope import Kind, open_envelope, seal
from circle.net.invite import InviteCode, InviterConnection
from circle.net.keys import DeviceIdentity
from circle.net.relay_client import RelayConnection, RelayCredentials

TO_INVITER, TO_JOINER = 1, 2
CHUNK = 48 * 1024


def _credentials(code: InviteCode, url: str) -> RelayCredentials:
    """A token (and mailbox) of its own on every relay the code lists, as for the
    circle's mailboxes: one relay's operator cannot use what it saw at another,
    nor link the invite across relays by its mailbox id."""
    return RelayCredentials.for_relay(code.key, url)


def _seal_chunks(identity: DeviceIdentity, code: InviteCode, attempt: bytes, direction: int,
                 data: bytes) -> list[bytes]:
    return [seal(identity, code.epoch, code.key, Kind.CHANGES, [attempt + bytes([direction]) + data[i : i + CHUNK]])
            for i in range(0, len(data), CHUNK)]


def _open(data: bytes, code: InviteCode) -> tuple[bytes, int, bytes] | None:
    """(attempt, direction, chunk) of an envelope in the invite mailbox, or None if foreign."""
    try:
        opened = open_envelope(data, {code.epoch: code.key}, lambda _vk: True)
    except CircleError:
        return None
    if len(opened.payloads) != 1 or len(opened.payloads[0]) < 9:
        return None
    body = opened.payloads[0]
    return body[:8], body[8], body[9:]


class RelayJoinerPipe:
    """The joiner's end: `send` bytes to the inviter, `receive` its bytes."""

    def __init__(self, conn: RelayConnection, identity: DeviceIdentity, code: InviteCode) -> None:
        self.conn, self.identity, self.code = conn, identity, code
        self.attempt = os.urandom(8)
        self._incoming = self._chunks()

    @classmethod
    async def open(cls, url: str, identity: DeviceIdentity, code: InviteCode) -> RelayJoinerPipe:
        conn = await RelayConnection.open(url, _credentials(code, url))
        await conn.subscribe(conn.head)  # only what is posted from now on
        return cls(conn, identity, code)

    async def send(self, data: bytes) -> None:
        for envelope in _seal_chunks(self.identity, self.code, self.attempt, TO_INVITER, data):
            await self.conn.push(envelope)

    async def _chunks(self):  # type: ignore[no-untyped-def]
        async for _cursor, envelope in self.conn.pushed():
            opened = _open(envelope, self.code)
            if opened is not None and opened[0] == self.attempt and opened[1] == TO_JOINER:
                yield opened[2]

    async def receive(self) -> bytes:
        try:
            return bytes(await self._incoming.__anext__())
        except (StopAsyncIteration, PeerUnavailable):
            return b""

    async def close(self) -> None:
        await self.conn.close()


async def serve_invite_on_relay(
    url: str, identity: DeviceIdentity, code: InviteCode,
    process: Callable[[InviterConnection], Callable[[], None] | None],
) -> None:
    """The inviter's end for one relay: answer every attempt posted for `code`
    until cancelled. `process` makes the same decisions as on the LAN (accept
    or refuse) and may return a callback to run once the answer is sent."""
    conns: dict[bytes, InviterConnection] = {}
    while True:
        try:
            conn = await RelayConnection.open(url, _credentials(code, url))
        except CircleError:
            await asyncio.sleep(2.0)
            continue
        try:
            await conn.subscribe(conn.head)
            async for _cursor, envelope in conn.pushed():
                opened = _open(envelope, code)
                if opened is None or opened[1] != TO_INVITER:
                    continue
                attempt, _, chunk = opened
                inviter = conns.get(attempt)
                if inviter is None:
                    if len(conns) > 16:
                        continue  # a flood of attempts: the honest one is among the first
                    inviter = conns[attempt] = InviterConnection(identity, [code])
                inviter.receive_data(chunk)
                after = process(inviter)
                out = inviter.data_to_send()
                for sealed in _seal_chunks(identity, code, attempt, TO_JOINER, out) if out else []:
                    await conn.push(sealed)
                if after is not None:
                    after()
        except CircleError:
            await asyncio.sleep(1.0)
        finally:
            with contextlib.suppress(Exception):
                await conn.close()
