"""One error hierarchy for all of circle.

Every failure that a user can cause or meet is a `CircleError` carrying one
clear sentence. The CLI and the TUI turn it into a message exactly once, at
their edge; nothing below them prints.

As in h11, protocol errors are split by blame:
- `LocalProtocolError`: this side tried to do something the protocol forbids
  (a bug or a misuse of the API).
- `RemoteProtocolError`: the peer (or a file, or a relay) sent something
  invalid. The session ends; local data is untouched.
"""

from __future__ import annotations


class CircleError(Exception):
    """Base of every error circle raises on purpose."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# --- usage and domain -------------------------------------------------------


class UsageError(CircleError):
    """The request itself is invalid (bad value, unknown option)."""

    exit_code = 2


class NotFound(CircleError):
    """No record, circle or member matches the given id."""

    exit_code = 3


class AmbiguousId(NotFound):
    """An id prefix matches more than one record."""


class ActionRefused(CircleError):
    """The action is not allowed in the record's current state."""

    exit_code = 4


class NotAMember(ActionRefused):
    """This device is not (or no longer) an active member of the circle."""


class DocumentFull(ActionRefused):
    """A local edit would grow the document past what every path can carry."""


# --- storage ----------------------------------------------------------------


class StoreError(CircleError):
    """Local storage could not be read or written."""

    exit_code = 5


class StoreCorrupt(StoreError):
    """A file in the data directory is damaged or is not a circle file."""


class WrongPassphrase(StoreError):
    """The passphrase does not open this device's data."""


class PassphraseRequired(StoreError):
    """The data is encrypted and no passphrase was given."""


class SchemaTooNew(StoreError):
    """The document was written by a newer circle than this one."""


class CompactionFailed(StoreError):
    """Every change is saved; only rewriting the snapshot (tidying) failed."""


class StoreLocked(StoreError):
    """Another process holds the store lock for too long."""


class MalformedDocument(StoreError):
    """Automerge rejected bytes as a document or change."""


class ImportError_(CircleError):
    """An import file is malformed; the message names the record at fault."""

    exit_code = 2


# --- network ----------------------------------------------------------------


class NetworkError(CircleError):
    """Base for sync, relay and discovery failures."""

    exit_code = 6


class LocalProtocolError(NetworkError):
    """This side broke the protocol (a bug or API misuse)."""


class RemoteProtocolError(NetworkError):
    """The peer sent something invalid; the session ends, data stays intact."""


class HandshakeFailed(RemoteProtocolError):
    """The peer could not prove it belongs to this circle."""


class FrameTooLarge(RemoteProtocolError):
    """A frame's length prefix is above the cap (checked before allocating)."""


class DecryptionFailed(RemoteProtocolError):
    """Ciphertext failed authentication: tampered, replayed, reordered or foreign."""


class PeerUnavailable(NetworkError):
    """The peer or relay could not be reached or went away."""


class InviteError(CircleError):
    """An invite code is malformed, expired, used or for another circle."""

    exit_code = 7


# --- relays, envelopes and bundles ------------------------------------------


class EnvelopeRejected(RemoteProtocolError):
    """An envelope decrypted but its author is not an active member or its signature is bad."""


class UnknownEpoch(DecryptionFailed):
    """An envelope or bundle is sealed under an epoch key this device does not hold."""


class BundleCorrupt(RemoteProtocolError):
    """A bundle file is truncated, damaged or not a circle bundle."""


class PartRejected(RemoteProtocolError):
    """A part of a split snapshot (or its set) is inconsistent: refused, nothing of the set used."""


class RelayError(NetworkError):
    """A relay refused a request or answered with something invalid."""


class RelayAuthFailed(RelayError):
    """The relay refused the mailbox token (wrong circle key or a squatted mailbox)."""


class RelayQuotaExceeded(RelayError):
    """The relay's per-mailbox quota (or its total capacity) is used up."""


# --- live sessions (net/handshake.py) ---------------------------------------


class EpochMismatch(HandshakeFailed):
    """The two sides hold different circle-key epochs (one missed a key rotation)."""

    def __init__(self, message: str, offered_epoch: int, peer_epoch: int | None) -> None:
        super().__init__(message)
        self.offered_epoch = offered_epoch
        self.peer_epoch = peer_epoch


class PeerNotMember(HandshakeFailed):
    """The peer holds the circle key but its signing key is not an active member."""


class SelfConnection(HandshakeFailed):
    """The peer is this very device (e.g. found its own mDNS advertisement)."""
