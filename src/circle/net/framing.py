"""Sans-I/O length-prefixed framing.

Wire format: every frame is a 4-byte big-endian unsigned length followed by
exactly that many bytes of body.

Rules:
- The length prefix is checked against the cap as soon as its 4 bytes are
  in, *before* a single body byte is buffered or any buffer is sized from it:
  an oversized prefix raises `FrameTooLarge` and nothing more is read.
- The decoder is incremental: `feed()` accepts any split of the byte stream
  (one byte at a time, or many frames at once) and returns the frames it
  completed, in order.
- After an error the decoder is dead: every later `feed()` raises the same
  error again, so a driver cannot accidentally resume a poisoned stream.
- `at_boundary` tells whether the stream ended cleanly between frames (an EOF
  anywhere else is a truncated frame).
"""

from __future__ import annotations

from circle.errors import FrameTooLarge, LocalProtocolError, RemoteProtocolError

HEADER_LEN = 4
DEFAULT_MAX_FRAME = 1 << 20  # 1 MiB: snapshots are chunked well below this
ABSOLUTE_MAX_FRAME = (1 << 32) - 1


def encode_frame(body: bytes, max_size: int = DEFAULT_MAX_FRAME) -> bytes:
    """Prefix `body` with its length; refuse to build a frame the peer would reject."""
    if len(body) > max_size:
        raise LocalProtocolError(f"frame of {len(body)} bytes is above the {max_size}-byte cap")
    return len(body).to_bytes(HEADER_LEN, "big") + body


class FrameDecoder:
    """Incremental decoder: bytes in, complete frame bodies out."""

    def __init__(self, max_size: int = DEFAULT_MAX_FRAME) -> None:
        self._check_cap(max_size)
        self._max_size = max_size
        self._header = bytearray()
        self._body: bytearray | None = None
        self._need = 0
        self._error: RemoteProtocolError | None = None

    @staticmethod
    def _check_cap(value: int) -> None:
        if not 0 <= value <= ABSOLUTE_MAX_FRAME:
            raise LocalProtocolError("frame cap must fit in 32 bits")

    @property
    def max_size(self) -> int:
        return self._max_size

    @max_size.setter
    def max_size(self, value: int) -> None:
        """Change the cap (e.g. small during the handshake, larger after it)."""
        self._check_cap(value)
        self._max_size = value

    @property
    def at_boundary(self) -> bool:
        """True when no partial frame is buffered."""
        return not self._header and self._body is None

    @property
    def buffered(self) -> int:
        return len(self._header) + (len(self._body) if self._body is not None else 0)

    def feed(self, data: bytes) -> list[bytes]:
        return self.feed_some(data)[0]

    def feed_some(self, data: bytes, max_frames: int | None = None) -> tuple[list[bytes], int]:
        """Like `feed`, but stop after `max_frames` frames; also return bytes consumed.

        Lets a caller change the cap between frames (the handshake uses a
        tiny cap, the session a larger one) without over-reading.
        """
        if self._error is not None:
            raise self._error
        frames: list[bytes] = []
        view = memoryview(data)
        pos = 0
        end = len(view)
        while pos < end and (max_frames is None or len(frames) < max_frames):
            if self._body is None:
                take = min(HEADER_LEN - len(self._header), end - pos)
                self._header += view[pos : pos + take]
                pos += take
                if len(self._header) < HEADER_LEN:
                    break
                length = int.from_bytes(self._header, "big")
                self._header.clear()
                if length > self._max_size:
                    self._error = FrameTooLarge(
                        f"peer announced a {length}-byte frame; the cap is {self._max_size} bytes"
                    )
                    raise self._error
                if length == 0:
                    frames.append(b"")
                    continue
                self._body = bytearray()
                self._need = length
            take = min(self._need - len(self._body), end - pos)
            self._body += view[pos : pos + take]
            pos += take
            if len(self._body) == self._need:
                frames.append(bytes(self._body))
                self._body = None
                self._need = 0
        return frames, pos


__all__ = ["DEFAULT_MAX_FRAME", "FrameDecoder", "HEADER_LEN", "encode_frame"]
