"""What the TUI needs from the invite and join features (implemented elsewhere).

The app receives these in its constructor; when one is missing, the screens
that would use it say plainly that the feature is not available yet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from circle.crdt.model import Millis
from circle.node.home import Home
from circle.node.service import CircleService


@dataclass(frozen=True)
class InviteInfo:
    code: str  # what the newcomer types or scans (`circle join CODE`)
    fingerprint: str  # the inviter's fingerprint, compared in person
    expires_at: Millis | None = None
    short_code: str | None = None  # 12 digits to read aloud, for someone on the same network
    short_left: Callable[[], int] | None = None  # answers the short code may still get (0: it is dead)


class InviteProvider(Protocol):
    """Create a one-time invite for this circle. Called on the event-loop
    thread; may touch the service's document (it is the loop's)."""

    def create_invite(self) -> InviteInfo: ...


class JoinProvider(Protocol):
    """Join a circle with an invite code, on an already created/opened home.

    Runs on the event-loop thread as a coroutine (network I/O is awaited, the
    document stays on the loop). Raises `CircleError` with a sentence for
    the user on failure. Returns the new circle's service.
    """

    async def join(self, home: Home, code: str, handle: str, zone: str) -> CircleService: ...
