"""A deliberately minimal WebSocket client on a plain socket, for hostile tests.

The websockets library reads in the background and refuses to send what a
hostile client would; this one does exactly what it is told: it can stop
reading (with a tiny receive buffer), send a frame header and then nothing,
or send garbage. Blocking sockets with timeouts; nothing here is for honest use.
"""

from __future__ import annotations

import base64
import os
import socket
import struct


def frame(payload: bytes, opcode: int = 0x2, length: int | None = None) -> bytes:
    """One masked client frame; `length` may lie about the payload's size."""
    n = len(payload) if length is None else length
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 2**16:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawClient:
    def __init__(self, port: int, *, source: str = "127.0.0.1", rcvbuf: int | None = None,
                 timeout: float = 5.0, path: str = "/") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # must be set before connect to shrink the TCP window
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("relay closed during the handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.status = int(head.split(b" ", 2)[1])

    def send(self, payload: bytes, opcode: int = 0x2) -> None:
        self.sock.sendall(frame(payload, opcode))

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame from the relay (unmasked)."""
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack(">H", self._read(2))
        elif n == 127:
            (n,) = struct.unpack(">Q", self._read(8))
        return b0 & 0x0F, self._read(n)

    def close_code(self) -> int | None:
        """Read until the relay's close frame; its code (None if the TCP
        connection ended without one)."""
        try:
            while True:
                op, payload = self.recv_frame()
                if op == 0x8:
                    return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
        except (ConnectionError, OSError):
            return None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
