"""Sans-I/O mutual authentication for live sessions, then one secretstream per direction.

The pattern is Noise XXpsk0 with the static-key DHs replaced by Ed25519
signatures over the transcript hash (SIGMA style), because a member's
long-term identity in the document is an Ed25519 key. docs/handshake.md
sets it against Noise XXpsk0 line by line; tests/net/test_handshake.py keeps
a fixed-key transcript as a test vector.

    -> ver, e, AEAD(k1, "")                       psk (epoch key) mixed in first
    <- 0x01, e, ee, AEAD(vk_r || kid_r), AEAD(sig_r)   sig_r = Sign(sk_r, "responder" || h)
    -> AEAD(vk_i || kid_i), AEAD(sig_i)               sig_i = Sign(sk_i, "initiator" || h)
    split() -> k_initiator_to_responder, k_responder_to_initiator

`kid` names the sender's newest epoch key (`handshake_key_id`), encrypted and
covered by the signature; it is how two peers notice that a session is
running on an older key than both hold (a downgrade), see below.

State machine rules (each side: one handshake per object, never reused):
- Initiator: START --start()--> WAIT_2 --receive(msg2)--> DONE (returns msg3).
  Responder: WAIT_1 --receive(msg1)--> WAIT_3 (returns msg2)
             --receive(msg3)--> DONE (returns None).
  Any other call is a `LocalProtocolError`; any failure moves to FAILED and
  every later call raises `LocalProtocolError`.
- Nothing in clear names the circle or the key: message 1 is the protocol
  version byte, a fresh X25519 key and a 16-byte AEAD tag under a key from
  the session PSK (`derive(epoch_key, Purpose.SESSION_PSK)`) and that
  ephemeral. The responder tries the tag under *every* key in its keyring
  (the caller passes only the keys it accepts: the current one and, for a
  bounded grace, the previous one) without stopping at a match.
- A responder that accepts none of them answers exactly like one that does:
  a message 2 of the same length (its real ephemeral key, random bytes where
  the ciphertexts would be), after the same work (a DH and a signature), and
  then waits for message 3 like any responder, and fails on it. So a prober,
  or someone replaying a member's captured message 1 to other devices, gets
  the same bytes and the same behaviour from a member of that circle, of
  another circle, and a removed member's old key: no "same circle?" oracle,
  no epoch number, no key count. Only a holder of the PSK (and of the
  ephemeral secret) can tell a real message 2 from a decoy.
- The one unauthenticated reply left is the version reject (0x02, 0x01,
  our version), sent when message 1 has another version byte. It is the same
  for every circle node of a version, so it tells a prober nothing the
  advertisement (or the open port) did not. It never makes anyone retry an
  older version: an initiator reports it and stops.
- Message 2 (only producible with the PSK) reveals the responder's Ed25519
  key to the initiator only, encrypted under keys from the PSK and the
  ephemeral-ephemeral DH. The initiator verifies the signature over the
  transcript hash and checks `is_active_member(vk)` *before* it reveals its
  own identity in message 3; the responder checks the same on message 3.
- An initiator whose message 2 fails to decrypt raises `EpochMismatch`
  (peer_epoch None): the peer did not accept the key offered, or is no
  member. The driver (net/tcp.py) may then retry once with the previous key.
- No downgrade: after the signature and membership checks, each side looks
  the peer's `kid` up among its own keys. If the peer's newest key is one
  this side holds and it is newer than the session's key, the handshake
  fails with `EpochMismatch(peer_epoch=that epoch)` instead of completing:
  an attacker who breaks the first attempt (or forges any reply) cannot get
  two up-to-date members into a session under an older key.
- Forward secrecy: traffic keys depend on the ephemeral DH; the epoch key
  and identity keys alone cannot decrypt a recorded session.
- The secretstream keys are one per direction, so a frame reflected back to
  its sender fails; secretstream itself rejects replayed, reordered,
  truncated and modified frames. A TAG_FINAL frame marks a clean close; a
  stream that ends without one was truncated.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

import nacl.bindings as sodium
import nacl.encoding
import nacl.exceptions
import nacl.hash

from circle.errors import (
    DecryptionFailed,
    EpochMismatch,
    HandshakeFailed,
    LocalProtocolError,
    PeerNotMember,
    RemoteProtocolError,
    SelfConnection,
)
from circle.net.keys import (
    DeviceIdentity,
    EpochKey,
    MemberId,
    Purpose,
    constant_time_equal,
    derive,
    fingerprint,
    handshake_key_id,
    member_id_for,
    verify_signature,
)

PROTOCOL_VERSION = 2
PROTOCOL_NAME = b"circle/Noise_XXpsk0+sig_25519_XChaChaPoly_BLAKE2b/v2"
_PERSON = b"circle/hs".ljust(16, b"\0")
_DH_LEN = 32
_TAG_LEN = sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES
_VK_LEN = 32
_KID_LEN = 16
_SIG_LEN = 64
_ID_CT_LEN = _VK_LEN + _KID_LEN + _TAG_LEN
_SIG_CT_LEN = _SIG_LEN + _TAG_LEN

MSG1_LEN = 1 + _DH_LEN + _TAG_LEN
MSG2_LEN = 1 + _DH_LEN + _ID_CT_LEN + _SIG_CT_LEN
MSG3_LEN = _ID_CT_LEN + _SIG_CT_LEN
REJECT_LEN = 3
MAX_HANDSHAKE_MESSAGE = max(MSG1_LEN, MSG2_LEN, MSG3_LEN, REJECT_LEN)

_ACCEPT = 0x01
_REJECT = 0x02
REJECT_VERSION = 0x01

_SIG_LABEL_RESPONDER = b"circle/hs/v2/responder"
_SIG_LABEL_INITIATOR = b"circle/hs/v2/initiator"

MemberCheck = Callable[[bytes], bool]

NOT_ACCEPTED = (
    "the peer did not accept the circle key this device offered (it is not in this circle, "
    "was removed, or holds only other keys)"
)
DECOY_FAILED = (
    "the peer does not hold a circle key this device accepts (not a member of this circle, "
    "a removed member, or a key that was replaced too long ago)"
)


def _h(data: bytes, key: bytes = b"") -> bytes:
    return nacl.hash.blake2b(
        data, digest_size=32, key=key, person=_PERSON, encoder=nacl.encoding.RawEncoder
    )


def _hkdf(chaining_key: bytes, ikm: bytes, outputs: int) -> list[bytes]:
    """Noise HKDF with keyed BLAKE2b as the PRF."""
    temp = _h(ikm, key=chaining_key)
    out: list[bytes] = []
    prev = b""
    for i in range(1, outputs + 1):
        prev = _h(prev + bytes([i]), key=temp)
        out.append(prev)
    return out


def _dh(secret: bytes, public: bytes) -> bytes:
    try:
        return bytes(sodium.crypto_scalarmult(secret, public))
    except nacl.exceptions.CryptoError:
        # All-zero output: a low-order point. Never a real peer.
        raise HandshakeFailed("the peer sent an invalid ephemeral key") from None


class _Symmetric:
    """Noise SymmetricState (h, ck, k, n) over BLAKE2b and XChaCha20-Poly1305."""

    def __init__(self) -> None:
        self.h = _h(PROTOCOL_NAME)
        self.ck = self.h
        self.k: bytes | None = None
        self.n = 0

    def mix_hash(self, data: bytes) -> None:
        self.h = _h(self.h + data)

    def mix_key(self, ikm: bytes) -> None:
        self.ck, self.k = _hkdf(self.ck, ikm, 2)
        self.n = 0

    def mix_key_and_hash(self, ikm: bytes) -> None:
        self.ck, temp_h, self.k = _hkdf(self.ck, ikm, 3)
        self.mix_hash(temp_h)
        self.n = 0

    def _nonce(self) -> bytes:
        nonce = self.n.to_bytes(24, "little")
        self.n += 1
        return nonce

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        assert self.k is not None
        ct = bytes(
            sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, self.h, self._nonce(), self.k)
        )
        self.mix_hash(ct)
        return ct

    def try_decrypt_and_hash(self, ciphertext: bytes) -> bytes | None:
        """The plaintext, or None (state unchanged but for the nonce) if it fails."""
        assert self.k is not None
        try:
            pt = bytes(
                sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                    ciphertext, self.h, self._nonce(), self.k
                )
            )
        except nacl.exceptions.CryptoError:
            return None
        self.mix_hash(ciphertext)
        return pt

    def decrypt_and_hash(self, ciphertext: bytes, what: str) -> bytes:
        pt = self.try_decrypt_and_hash(ciphertext)
        if pt is None:
            raise HandshakeFailed(what)
        return pt

    def split(self) -> tuple[bytes, bytes]:
        first, second = _hkdf(self.ck, b"", 2)
        return first, second


def _opening(epoch_key: EpochKey, initiator_e: bytes) -> _Symmetric:
    """The symmetric state both sides share once message 1's key and e are mixed in."""
    sym = _Symmetric()
    sym.mix_hash(bytes([PROTOCOL_VERSION]))
    sym.mix_key_and_hash(derive(epoch_key, Purpose.SESSION_PSK))
    sym.mix_hash(initiator_e)
    sym.mix_key(initiator_e)
    return sym


# --- the channel ---------------------------------------------------------------

_SS_HEADER = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
_SS_ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
_TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
_TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
CHANNEL_OVERHEAD = _SS_ABYTES
FIRST_FRAME_OVERHEAD = _SS_HEADER + _SS_ABYTES


class SecureChannel:
    """One secretstream per direction.

    The first sealed frame in each direction carries the 24-byte stream
    header in front of its ciphertext. `seal_final` sends TAG_FINAL (clean
    close); after it nothing more can be sealed. `open` raises
    `DecryptionFailed` for anything tampered, replayed, reordered or foreign,
    and `RemoteProtocolError` for data after the peer's final frame. After any
    failure the channel refuses everything (the session is over).
    """

    def __init__(self, send_key: bytes, recv_key: bytes) -> None:
        self._send_key: bytes | None = send_key
        self._recv_key: bytes | None = recv_key
        self._push = sodium.crypto_secretstream_xchacha20poly1305_state()
        self._pull = sodium.crypto_secretstream_xchacha20poly1305_state()
        self._push_started = False
        self._pull_started = False
        self.sent_final = False
        self.received_final = False
        self._broken = False

    def _seal(self, plaintext: bytes, tag: int) -> bytes:
        if self.sent_final:
            raise LocalProtocolError("the channel was already closed by this side")
        prefix = b""
        if not self._push_started:
            assert self._send_key is not None
            prefix = bytes(sodium.crypto_secretstream_xchacha20poly1305_init_push(self._push, self._send_key))
            self._send_key = None
            self._push_started = True
        return prefix + bytes(sodium.crypto_secretstream_xchacha20poly1305_push(self._push, plaintext, None, tag))

    def seal(self, plaintext: bytes) -> bytes:
        return self._seal(plaintext, _TAG_MESSAGE)

    def seal_final(self, plaintext: bytes = b"") -> bytes:
        out = self._seal(plaintext, _TAG_FINAL)
        self.sent_final = True
        return out

    def open(self, ciphertext: bytes) -> bytes:
        if self._broken:
            raise DecryptionFailed("the channel already failed")
        if self.received_final:
            self._broken = True
            raise RemoteProtocolError("the peer sent data after closing the channel")
        data = ciphertext
        if not self._pull_started:
            if len(data) < _SS_HEADER + _SS_ABYTES:
                self._broken = True
                raise DecryptionFailed("the first encrypted frame is too short")
            assert self._recv_key is not None
            try:
                sodium.crypto_secretstream_xchacha20poly1305_init_pull(
                    self._pull, data[:_SS_HEADER], self._recv_key
                )
            except nacl.exceptions.CryptoError:
                self._broken = True
                raise DecryptionFailed("invalid secretstream header") from None
            self._recv_key = None
            self._pull_started = True
            data = data[_SS_HEADER:]
        if len(data) < _SS_ABYTES:
            self._broken = True
            raise DecryptionFailed("encrypted frame is too short")
        try:
            plaintext, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(self._pull, data, None)
        except nacl.exceptions.CryptoError:
            self._broken = True
            raise DecryptionFailed(
                "an encrypted frame failed authentication (tampered, replayed, reordered or foreign)"
            ) from None
        if tag == _TAG_FINAL:
            self.received_final = True
        elif tag != _TAG_MESSAGE:
            self._broken = True
            raise RemoteProtocolError(f"unexpected secretstream tag {tag}")
        return bytes(plaintext)


# --- the handshake -------------------------------------------------------------


class Role(Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class _State(Enum):
    START = "start"
    WAIT_MSG1 = "wait-msg1"
    WAIT_MSG2 = "wait-msg2"
    WAIT_MSG3 = "wait-msg3"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class HandshakeResult:
    channel: SecureChannel
    peer_verify_key: bytes
    peer_member_id: MemberId
    epoch: int
    handshake_hash: bytes
    fingerprint: str  # read-aloud digest of the transcript; equal on both sides


class Handshake:
    """One handshake, either side. See the module docstring for the rules.

    `keyring`: for an initiator, the keys it may offer (`epoch` picks one,
    default the newest) and recognise; for a responder, exactly the keys it
    accepts. `ephemeral_secret` is for test vectors only."""

    def __init__(
        self,
        role: Role,
        identity: DeviceIdentity,
        keyring: Mapping[int, EpochKey],
        is_active_member: MemberCheck,
        *,
        epoch: int | None = None,
        ephemeral_secret: bytes | None = None,
    ) -> None:
        if not keyring:
            raise LocalProtocolError("a handshake needs at least one epoch key")
        for number in keyring:
            if not 0 <= number < 2**32:
                raise LocalProtocolError("epoch numbers must fit in 32 bits")
        self.role = role
        self._identity = identity
        self._keyring = dict(keyring)
        self._is_member = is_active_member
        self.current_epoch = max(self._keyring)
        self.epoch = self.current_epoch if epoch is None else epoch
        if self.epoch not in self._keyring:
            raise LocalProtocolError(f"no key for epoch {self.epoch}")
        self._sym = _Symmetric()
        if ephemeral_secret is not None and len(ephemeral_secret) != 32:
            raise LocalProtocolError("an ephemeral secret is 32 bytes")
        self._e_secret = ephemeral_secret or os.urandom(32)
        self._e_public = bytes(sodium.crypto_scalarmult_base(self._e_secret))
        self._peer_e = b""
        self._peer_vk = b""
        self._doomed = False  # a responder that accepted no key: decoy, then fail
        self._result: HandshakeResult | None = None
        self.reject_reply: bytes | None = None
        self._state = _State.START if role is Role.INITIATOR else _State.WAIT_MSG1

    @classmethod
    def initiator(
        cls,
        identity: DeviceIdentity,
        keyring: Mapping[int, EpochKey],
        is_active_member: MemberCheck,
        *,
        epoch: int | None = None,
        ephemeral_secret: bytes | None = None,
    ) -> Handshake:
        return cls(Role.INITIATOR, identity, keyring, is_active_member, epoch=epoch,
                   ephemeral_secret=ephemeral_secret)

    @classmethod
    def responder(
        cls,
        identity: DeviceIdentity,
        keyring: Mapping[int, EpochKey],
        is_active_member: MemberCheck,
        *,
        ephemeral_secret: bytes | None = None,
    ) -> Handshake:
        return cls(Role.RESPONDER, identity, keyring, is_active_member, ephemeral_secret=ephemeral_secret)

    # --- public API ---------------------------------------------------------

    @property
    def complete(self) -> bool:
        return self._state is _State.DONE

    @property
    def failed(self) -> bool:
        return self._state is _State.FAILED

    @property
    def result(self) -> HandshakeResult:
        if self._result is None:
            raise LocalProtocolError("the handshake is not complete")
        return self._result

    def start(self) -> bytes:
        """Initiator only: message 1."""
        if self._state is not _State.START:
            raise LocalProtocolError("start() is only for a fresh initiator")
        self._sym = _opening(self._keyring[self.epoch], self._e_public)
        tag = self._sym.encrypt_and_hash(b"")
        self._state = _State.WAIT_MSG2
        return bytes([PROTOCOL_VERSION]) + self._e_public + tag

    def receive(self, message: bytes) -> bytes | None:
        """Process the peer's next handshake message; return our reply, if any."""
        state = self._state
        if state in (_State.DONE, _State.FAILED, _State.START):
            raise LocalProtocolError(f"no handshake message expected in state {state.value}")
        try:
            if state is _State.WAIT_MSG1:
                return self._on_msg1(message)
            if state is _State.WAIT_MSG2:
                return self._on_msg2(message)
            self._on_msg3(message)
            return None
        except BaseException:
            self._state = _State.FAILED
            raise

    # --- steps --------------------------------------------------------------

    def _newest_key_id(self) -> bytes:
        return handshake_key_id(self._keyring[self.current_epoch])

    def _on_msg1(self, msg: bytes) -> bytes:
        if len(msg) < 1:
            raise HandshakeFailed("empty handshake message")
        if msg[0] != PROTOCOL_VERSION:
            self.reject_reply = bytes([_REJECT, REJECT_VERSION, PROTOCOL_VERSION])
            raise HandshakeFailed(
                f"the peer speaks circle protocol version {msg[0]}; this device speaks {PROTOCOL_VERSION}"
            )
        if len(msg) != MSG1_LEN:
            raise HandshakeFailed("malformed first handshake message")
        peer_e, tag = msg[1 : 1 + _DH_LEN], msg[1 + _DH_LEN :]
        matched: tuple[int, _Symmetric] | None = None
        for number in sorted(self._keyring):  # every key, no early exit
            sym = _opening(self._keyring[number], peer_e)
            if sym.try_decrypt_and_hash(tag) is not None and matched is None:
                matched = (number, sym)
        self._peer_e = peer_e
        self._state = _State.WAIT_MSG3
        if matched is None:
            return self._decoy()
        self.epoch, sym = matched
        self._sym = sym
        sym.mix_hash(self._e_public)
        sym.mix_key(self._e_public)
        sym.mix_key(_dh(self._e_secret, peer_e))
        c_id = sym.encrypt_and_hash(self._identity.verify_key + self._newest_key_id())
        sig = self._identity.sign(_SIG_LABEL_RESPONDER + sym.h)
        c_sig = sym.encrypt_and_hash(sig)
        return bytes([_ACCEPT]) + self._e_public + c_id + c_sig

    def _decoy(self) -> bytes:
        """A message 2 for a key we do not accept: same length, same work, no meaning."""
        self._doomed = True
        with contextlib.suppress(HandshakeFailed):
            _dh(self._e_secret, self._peer_e)
        self._identity.sign(_SIG_LABEL_RESPONDER + os.urandom(32))
        return bytes([_ACCEPT]) + self._e_public + os.urandom(_ID_CT_LEN + _SIG_CT_LEN)

    def _on_msg2(self, msg: bytes) -> bytes:
        if len(msg) == REJECT_LEN and msg[0] == _REJECT:
            if msg[1] == REJECT_VERSION:
                raise HandshakeFailed(
                    f"the peer only speaks circle protocol version {msg[2]}; "
                    f"this device speaks {PROTOCOL_VERSION}"
                )
            raise HandshakeFailed("the peer refused the handshake")
        if len(msg) != MSG2_LEN or msg[0] != _ACCEPT:
            raise HandshakeFailed("malformed second handshake message")
        sym = self._sym
        pos = 1
        self._peer_e = msg[pos : pos + _DH_LEN]
        pos += _DH_LEN
        sym.mix_hash(self._peer_e)
        sym.mix_key(self._peer_e)
        sym.mix_key(_dh(self._e_secret, self._peer_e))
        plain = sym.try_decrypt_and_hash(msg[pos : pos + _ID_CT_LEN])
        if plain is None:
            raise EpochMismatch(NOT_ACCEPTED, offered_epoch=self.epoch, peer_epoch=None)
        pos += _ID_CT_LEN
        signed = _SIG_LABEL_RESPONDER + sym.h
        sig = sym.decrypt_and_hash(msg[pos:], "the peer's signature failed to decrypt")
        self._check_peer(plain[:_VK_LEN], signed, sig)
        self._check_downgrade(plain[_VK_LEN:])
        # Message 3.
        c_id = sym.encrypt_and_hash(self._identity.verify_key + self._newest_key_id())
        my_sig = self._identity.sign(_SIG_LABEL_INITIATOR + sym.h)
        c_sig = sym.encrypt_and_hash(my_sig)
        i2r, r2i = sym.split()
        self._finish(send_key=i2r, recv_key=r2i)
        return c_id + c_sig

    def _on_msg3(self, msg: bytes) -> None:
        if len(msg) != MSG3_LEN:
            raise HandshakeFailed("malformed third handshake message")
        if self._doomed:
            raise HandshakeFailed(DECOY_FAILED)
        sym = self._sym
        plain = sym.decrypt_and_hash(msg[:_ID_CT_LEN], "the peer's identity failed to decrypt")
        signed = _SIG_LABEL_INITIATOR + sym.h
        sig = sym.decrypt_and_hash(msg[_ID_CT_LEN:], "the peer's signature failed to decrypt")
        self._check_peer(plain[:_VK_LEN], signed, sig)
        self._check_downgrade(plain[_VK_LEN:])
        i2r, r2i = sym.split()
        self._finish(send_key=r2i, recv_key=i2r)

    def _check_peer(self, vk: bytes, signed: bytes, sig: bytes) -> None:
        if len(vk) != _VK_LEN or len(sig) != _SIG_LEN or not verify_signature(vk, signed, sig):
            raise HandshakeFailed("the peer's signature over the handshake is invalid")
        if vk == self._identity.verify_key:
            raise SelfConnection("connected to this same device")
        if not self._is_member(vk):
            raise PeerNotMember(
                f"the peer {member_id_for(vk)} holds the circle key but is not an active member"
            )
        self._peer_vk = vk

    def _check_downgrade(self, peer_newest: bytes) -> None:
        """Refuse a session on an older key than one both sides hold."""
        for number, key in self._keyring.items():
            if number > self.epoch and constant_time_equal(handshake_key_id(key), peer_newest):
                raise EpochMismatch(
                    "the peer holds a newer circle key than this session used; "
                    "a new session uses it",
                    offered_epoch=self.epoch, peer_epoch=number,
                )

    def _finish(self, send_key: bytes, recv_key: bytes) -> None:
        h = self._sym.h
        self._result = HandshakeResult(
            channel=SecureChannel(send_key, recv_key),
            peer_verify_key=self._peer_vk,
            peer_member_id=member_id_for(self._peer_vk),
            epoch=self.epoch,
            handshake_hash=h,
            fingerprint=fingerprint(h),
        )
        self._e_secret = b""
        self._sym = _Symmetric()  # drop ck/k
        self._state = _State.DONE


__all__ = [
    "CHANNEL_OVERHEAD", "FIRST_FRAME_OVERHEAD", "Handshake", "HandshakeResult",
    "MAX_HANDSHAKE_MESSAGE", "MSG1_LEN", "MSG2_LEN", "MSG3_LEN", "PROTOCOL_VERSION", "Role",
    "SecureChannel",
]
