"""Short invite codes for the LAN: 12 digits, read aloud in three groups of four.

A short code stands for a long invite code (net/invite.py) that the inviter
made at the same time. The joiner trades the short code for the long one in
a PAKE exchange, then joins with the long code exactly as if it had been typed.

    4821-0937-5512
    nnnn pppp pppc      n = nameplate (4 digits, public: finds the invite)
                        p = password (7 digits, 10^7 values, never on the wire)
                        c = Damm check digit over the other 11 (catches any one
                            wrong digit and any swap of neighbours, offline)

Exchange (joiner = A, inviter = B), CPace over the Ed25519 prime-order group:

    G  = from_uniform(BLAKE2b(DSI | nameplate | password))   a generator nobody
                                                             knows a logarithm of
    -> OPEN   0xc5 | ver | nameplate (2) | Ya                 Ya = ya*G
    <- REPLY  0x01 | attempts_left | Yb | AEAD(k, long code)  Yb = yb*G
              k = BLAKE2b(yb*Ya = ya*Yb, DSI | nameplate | Ya | Yb); AD = header | Ya
    <- REFUSE 0x02 | reason                                   no open invite / used up / expired

Rules (why a short code may be short):
- Ya and Yb are uniformly random group elements whatever the password is
  (G generates the whole group, ya and yb are uniform), so a recording of
  OPEN and REPLY is consistent with every password: an eavesdropper has
  nothing to test guesses against offline. Checking a guess w' against k
  needs ya*yb*G_w' from ya*G_w and yb*G_w: a Diffie-Hellman problem.
- An active stranger who sends OPEN for a guessed password learns whether
  that one guess was right (the AEAD opens or not), nothing about any other:
  one online guess per REPLY. The inviter counts every REPLY it sends,
  before it sends it, and answers at most MAX_ATTEMPTS per short code (then
  REFUSE "used up", for everyone, for good). A stranger's chance is at most
  MAX_ATTEMPTS / 10^7.
- A stranger posing as the inviter (answering the joiner's OPEN) gets the
  same single guess, and the joiner's later handshake names the inviter
  (the long code carries its member id) and ends in the safety-number check.
- Replaying a recorded OPEN gets a fresh Yb: the reply is under a key that
  needs ya, which was never on the wire (and it costs the inviter one of
  its attempts, which is the denial of service anyone on the LAN can do).
- Every received point is checked to be a canonical, non-identity element of
  the prime-order subgroup before use; a shared point of the identity fails.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import nacl.bindings as sodium
import nacl.encoding
import nacl.exceptions
import nacl.hash

from circle.errors import InviteError, LocalProtocolError, RemoteProtocolError
from circle.net.keys import EpochKey

SHORT_VERSION = 1
MAX_ATTEMPTS = 3
NAMEPLATE_DIGITS = 4
PASSWORD_DIGITS = 7
CODE_DIGITS = NAMEPLATE_DIGITS + PASSWORD_DIGITS + 1
_OPEN = 0xC5
_REPLY = 0x01
_REFUSE = 0x02
_POINT = 32
OPEN_LEN = 1 + 1 + 2 + _POINT
MAX_SHORT_MESSAGE = 1024  # a reply carries one long code (<= ~600 bytes with 8 addresses and relays)
_DSI = b"circle/cpace/ed25519/v1"
_PERSON_G = b"circle/cpace-g".ljust(16, b"\0")
_PERSON_K = b"circle/cpace-k".ljust(16, b"\0")
_PERSON_L = b"circle/lookup".ljust(16, b"\0")
_NONCE = bytes(24)  # every key encrypts exactly one message

# Damm's totally anti-symmetric quasigroup of order 10.
_DAMM = (
    (0, 3, 1, 7, 5, 9, 8, 6, 4, 2), (7, 0, 9, 2, 1, 5, 4, 8, 6, 3), (4, 2, 0, 6, 8, 7, 1, 3, 5, 9),
    (1, 7, 5, 0, 9, 8, 3, 4, 2, 6), (6, 1, 2, 3, 0, 4, 5, 9, 7, 8), (3, 6, 7, 4, 2, 0, 9, 5, 8, 1),
    (5, 8, 6, 9, 7, 2, 0, 1, 3, 4), (8, 9, 4, 5, 3, 6, 2, 0, 1, 7), (9, 4, 3, 8, 6, 1, 7, 2, 0, 5),
    (2, 5, 8, 1, 4, 3, 6, 7, 9, 0),
)


def damm(digits: str) -> int:
    interim = 0
    for ch in digits:
        interim = _DAMM[interim][int(ch)]
    return interim


class Refusal(Enum):
    NOT_OPEN = 1
    USED_UP = 2
    EXPIRED = 3


REFUSAL_TEXT = {
    Refusal.NOT_OPEN: "the inviter has no open invite with this short code (it was used, cancelled, "
                      "or made on another device); ask for a new invite",
    Refusal.USED_UP: f"this short code was tried {MAX_ATTEMPTS} times with wrong digits and no longer works; "
                     "ask the inviter to make a new invite",
    Refusal.EXPIRED: "this short code has expired; ask the inviter to make a new invite",
}

_SHORT_RE = re.compile(r"^[0-9][0-9 \-]*$")


@dataclass(frozen=True)
class ShortCode:
    nameplate: str  # 4 digits
    password: str  # 7 digits

    @classmethod
    def new(cls) -> ShortCode:
        return cls(f"{secrets.randbelow(10**NAMEPLATE_DIGITS):0{NAMEPLATE_DIGITS}d}",
                   f"{secrets.randbelow(10**PASSWORD_DIGITS):0{PASSWORD_DIGITS}d}")

    @property
    def digits(self) -> str:
        body = self.nameplate + self.password
        return body + str(damm(body))

    @property
    def text(self) -> str:
        d = self.digits
        return "-".join(d[i : i + 4] for i in range(0, CODE_DIGITS, 4))

    @staticmethod
    def looks_short(text: str) -> bool:
        """Digits with optional spaces and dashes (a long code starts with "circle:")."""
        return bool(_SHORT_RE.match(text.strip()))

    @classmethod
    def parse(cls, text: str) -> ShortCode:
        """Decode a typed short code; a mistyped one fails here, before any traffic."""
        if not cls.looks_short(text):
            raise InviteError("a short code has only digits (like 4821-0937-5512)")
        digits = "".join(ch for ch in text if ch.isdigit())
        if len(digits) != CODE_DIGITS:
            raise InviteError(f"a short code has {CODE_DIGITS} digits; this one has {len(digits)}")
        if damm(digits) != 0:
            raise InviteError("this short code is mistyped (its last digit does not check); read it again")
        return cls(digits[:NAMEPLATE_DIGITS], digits[NAMEPLATE_DIGITS:-1])

    @property
    def lookup_key(self) -> EpochKey:
        """The key the inviter's mDNS advert is tagged with. It depends on the
        public nameplate only, never on the password, so anyone may compute it."""
        return lookup_key(self.nameplate)


def lookup_key(nameplate: str) -> EpochKey:
    return EpochKey(_hash(_DSI + b"|lookup|" + nameplate.encode(), _PERSON_L))


def _hash(data: bytes, person: bytes, key: bytes = b"") -> bytes:
    return nacl.hash.blake2b(data, digest_size=32, key=key, person=person, encoder=nacl.encoding.RawEncoder)


def _generator(code: ShortCode) -> bytes:
    uniform = _hash(_DSI + b"|" + code.nameplate.encode() + b"|" + code.password.encode(), _PERSON_G)
    point = bytes(sodium.crypto_core_ed25519_from_uniform(uniform))
    if not sodium.crypto_core_ed25519_is_valid_point(point):  # the identity: a hash of 0, never in practice
        raise LocalProtocolError("this short code maps to no usable key; make another")
    return point


def _scalar(rng: Callable[[int], bytes]) -> bytes:
    while True:
        y = bytes(sodium.crypto_core_ed25519_scalar_reduce(rng(64)))
        if any(y):
            return y


def _check_point(point: bytes) -> bytes:
    if len(point) != _POINT or not sodium.crypto_core_ed25519_is_valid_point(point):
        raise RemoteProtocolError("the other side sent an invalid key in the short-code exchange")
    return point


def _session_key(y: bytes, other: bytes, nameplate: str, ya: bytes, yb: bytes) -> bytes:
    try:
        shared = bytes(sodium.crypto_scalarmult_ed25519_noclamp(y, _check_point(other)))
    except (nacl.exceptions.CryptoError, RuntimeError):
        raise RemoteProtocolError("the other side sent an invalid key in the short-code exchange") from None
    return _hash(_DSI + b"|" + nameplate.encode() + b"|" + ya + yb, _PERSON_K, key=shared)


def reply_ad(reply: bytes, ya: bytes) -> bytes:
    """What the REPLY's AEAD authenticates besides the long code: its header
    (type, attempts left, Yb) and the Ya it answers."""
    return reply[: 2 + _POINT] + ya


# --- joiner ---------------------------------------------------------------------------


class ShortJoiner:
    """The joiner's side: `open_message()`, then `receive(reply)` -> the long code's text."""

    def __init__(self, code: ShortCode, rng: Callable[[int], bytes] = os.urandom) -> None:
        self.code = code
        self._y = _scalar(rng)
        self.ya = bytes(sodium.crypto_scalarmult_ed25519_noclamp(self._y, _generator(code)))

    def open_message(self) -> bytes:
        return bytes([_OPEN, SHORT_VERSION]) + int(self.code.nameplate).to_bytes(2, "big") + self.ya

    def receive(self, reply: bytes) -> str:
        if len(reply) == 2 and reply[0] == _REFUSE:
            try:
                raise InviteError(REFUSAL_TEXT[Refusal(reply[1])])
            except ValueError:
                raise RemoteProtocolError("the inviter refused the short code for an unknown reason") from None
        if len(reply) < 2 + _POINT + sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES or reply[0] != _REPLY:
            raise RemoteProtocolError("the inviter's answer to the short code is not valid")
        left, yb, sealed = reply[1], reply[2 : 2 + _POINT], reply[2 + _POINT :]
        key = _session_key(self._y, yb, self.code.nameplate, self.ya, yb)
        try:
            plain = bytes(sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, reply_ad(reply, self.ya), _NONCE, key))
        except nacl.exceptions.CryptoError:
            tries = f"{left} more {'try' if left == 1 else 'tries'}" if left else "no more tries"
            raise InviteError(
                "the short code does not match the inviter's (a wrong digit, or someone else's invite); "
                f"{tries} before it stops working") from None
        try:
            return plain.decode("ascii")
        except UnicodeDecodeError:
            raise RemoteProtocolError("the inviter sent a malformed invite code") from None


# --- inviter --------------------------------------------------------------------------


def parse_open(message: bytes) -> tuple[str, bytes] | None:
    """(nameplate, Ya) of an OPEN message, or None if `message` is not one
    (then it is the first frame of an ordinary join handshake)."""
    if len(message) != OPEN_LEN or message[0] != _OPEN:
        return None
    if message[1] != SHORT_VERSION:
        raise RemoteProtocolError("the joiner speaks another version of the short-code exchange")
    return f"{int.from_bytes(message[2:4], 'big'):0{NAMEPLATE_DIGITS}d}", message[4:]


def refuse(reason: Refusal) -> bytes:
    return bytes([_REFUSE, reason.value])


@dataclass
class ShortInvite:
    """One open short code on the inviter's side and the long code it stands for."""

    code: ShortCode
    long_code: str
    expires_at: float
    attempts_left: int = MAX_ATTEMPTS

    def answer(self, ya: bytes, now: float, rng: Callable[[int], bytes] = os.urandom) -> bytes:
        """The reply to one OPEN. Counts the attempt before anything depends on the password."""
        if now >= self.expires_at:
            return refuse(Refusal.EXPIRED)
        if self.attempts_left <= 0:
            return refuse(Refusal.USED_UP)
        _check_point(ya)
        self.attempts_left -= 1
        y = _scalar(rng)
        yb = bytes(sodium.crypto_scalarmult_ed25519_noclamp(y, _generator(self.code)))
        key = _session_key(y, ya, self.code.nameplate, ya, yb)
        head = bytes([_REPLY, self.attempts_left]) + yb
        sealed = bytes(sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
            self.long_code.encode("ascii"), head + ya, _NONCE, key))
        return head + sealed
