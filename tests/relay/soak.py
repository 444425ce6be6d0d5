"""Relay soak: hostile clients and two honest members on one real relay.

Used by tests/relay/test_relay_soak.py (short) and bench/bench_relay_soak.py
(60 s, prints the edit-to-visible figures). Three kinds of process:

- the relay (`python -m circle.relay.server`, SQLite, on 127.0.0.1);
- the attackers: `python tests/relay/soak.py hostile PORT SECONDS` runs, in
  threads on plain sockets from addresses 127.0.2.x - 127.0.9.x:
  subscribers that never read, a registration flood, pre-auth frames that
  announce 4 MiB, garbage (bytes, bad HTTP, text frames, bad messages) and a
  pipelined Fetch flood; it prints its counts as JSON when done;
- the honest members, in the caller's event loop: two `CircleService`s with
  `RelaySync`, as the app runs them; A adds needs one after another and the
  clock stops when B's board shows each.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
if __name__ == "__main__":  # run as a script: make `rawws` and `factories` importable
    sys.path[:0] = [str(HERE), str(HERE.parent)]

from circle.net import relay_protocol as P  # noqa: E402
from circle.net.envelope import Kind, seal  # noqa: E402
from circle.net.keys import DeviceIdentity, new_epoch_key  # noqa: E402

try:
    from .rawws import RawClient, frame
except ImportError:
    from rawws import RawClient, frame  # type: ignore[no-redef]


# --- the attackers (their own process) ----------------------------------------


def _auth(c: RawClient, token: bytes) -> bytes | None:
    """Authenticate (making a proof if asked); the reply, None if refused."""
    mailbox = P.mailbox_for_token(token)
    c.send(P.encode(P.Auth(mailbox, token)))
    _op, reply = c.recv_frame()
    msg = P.decode_server_message(reply)
    if isinstance(msg, P.Challenge):
        c.send(P.encode(P.Auth(mailbox, token, proof=P.make_proof(mailbox, msg.bits))))
        _op, reply = c.recv_frame()
        msg = P.decode_server_message(reply)
    return reply if isinstance(msg, P.AuthOk) else None


class Hostile:
    def __init__(self, port: int, seconds: float) -> None:
        self.port = port
        self.stop_at = time.monotonic() + seconds
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.token = os.urandom(32)  # the non-readers' own (full) mailbox

    def running(self) -> bool:
        return time.monotonic() < self.stop_at

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def client(self, source: str, **kw: object) -> RawClient:
        return RawClient(self.port, source=source, timeout=5, **kw)  # type: ignore[arg-type]

    def loop(self, name: str, body: object) -> None:
        while self.running():
            try:
                body()  # type: ignore[operator]
            except (OSError, ConnectionError, ValueError, P.RemoteProtocolError, struct.error):
                self.count(f"{name}_cut")
                time.sleep(0.05)

    def fill(self) -> None:
        key, me = new_epoch_key(), DeviceIdentity.generate()
        c = self.client("127.0.2.1")
        if _auth(c, self.token) is None:
            raise RuntimeError("attacker could not register its mailbox")
        for i in range(40):
            c.send(P.encode(P.Put(i + 1, seal(me, 1, key, Kind.CHANGES, [os.urandom(100_000)]))))
            c.recv_frame()
        c.close()

    def non_reader(self, n: int) -> None:
        c = self.client(f"127.0.3.{n}", rcvbuf=4096)
        try:
            c.send(P.encode(P.Auth(P.mailbox_for_token(self.token), self.token)))
            c.send(P.encode(P.Subscribe(0)))
            self.count("non_reader")
            t = time.monotonic() + 6
            while self.running() and time.monotonic() < t:
                time.sleep(0.2)
        finally:
            c.close()

    def register(self, n: int) -> None:
        # one thread from a single address (meets the per-address limit), one from many
        c = self.client("127.0.4.1" if n == 1 else f"127.0.4.{random.randint(2, 250)}")
        try:
            self.count("registered" if _auth(c, os.urandom(32)) is not None else "registration_refused")
        finally:
            c.close()

    def big_pre_auth(self, n: int) -> None:
        c = self.client(f"127.0.5.{n}")
        try:
            c.sock.sendall(frame(os.urandom(64 * 1024), length=4 * 1024 * 1024)[: 14 + 64 * 1024])
            self.count("pre_auth_closed_1009" if c.close_code() == 1009 else "pre_auth_other")
        finally:
            c.close()

    def garbage(self, n: int) -> None:
        kind = random.randrange(4)
        if kind == 0:  # not HTTP at all
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                s.sendall(os.urandom(2048) + b"\r\n\r\n")
                s.recv(1024)
        elif kind == 1:  # HTTP, but not for us
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
                s.recv(1024)
        else:  # a WebSocket speaking nonsense
            c = self.client(f"127.0.6.{n}")
            try:
                c.send(os.urandom(60)) if kind == 2 else c.send(b"hello", opcode=0x1)
                c.close_code()
            finally:
                c.close()
        self.count("garbage")

    def fetch_flood(self, n: int) -> None:
        c = self.client(f"127.0.7.{n}")
        try:
            if _auth(c, os.urandom(32)) is None:
                return
            req = 1
            while self.running():
                for _ in range(32):
                    c.send(P.encode(P.Fetch(req, 0, 1)))
                    req += 1
                for _ in range(32):
                    c.recv_frame()
                    self.count("flood_replies")
        finally:
            c.close()

    def run(self) -> dict[str, int]:
        self.fill()
        jobs = ([lambda n=n: self.non_reader(n) for n in range(1, 5)]  # type: ignore[misc]
                + [lambda n=n: self.register(n) for n in range(1, 3)]  # type: ignore[misc]
                + [lambda n=n: self.big_pre_auth(n) for n in range(1, 3)]  # type: ignore[misc]
                + [lambda n=n: self.garbage(n) for n in range(1, 3)]  # type: ignore[misc]
                + [lambda n=n: self.fetch_flood(n) for n in range(1, 3)])  # type: ignore[misc]
        threads = [threading.Thread(target=self.loop, args=(f"job{i}", job), daemon=True)
                   for i, job in enumerate(jobs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.1, self.stop_at - time.monotonic() + 10))
        return dict(self.counts)


def start_hostile(port: int, seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "hostile", str(port), str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))


# --- the honest members (the caller's loop) -----------------------------------------


@dataclass
class HonestResult:
    latencies_ms: list[float] = field(default_factory=list)
    late: int = 0  # edits not visible within the guard


async def honest_members(tmp: Path, url: str, seconds: float, guard: float = 15.0) -> HonestResult:
    from circle.net.relay_client import Backoff
    from circle.node.home import Home
    from circle.node.relays import RelaySync
    from circle.node.service import CircleService
    from factories import member_homes

    homes = member_homes(tmp, ["sam", "alex"])
    a = CircleService.open(Home.open(homes[0], None))
    b = CircleService.open(Home.open(homes[1], None))
    a.board.add_relay(url)
    b.board.add_relay(url)
    fast = Backoff(initial=0.05, maximum=0.5)
    rs_a, rs_b = RelaySync(a, backoff=fast), RelaySync(b, backoff=fast)
    out = HonestResult()
    await rs_a.start()
    await rs_b.start()
    try:
        while not (rs_a._ready and rs_b._ready):
            await asyncio.sleep(0.01)
        await rs_a.flush(guard)
        await rs_b.flush(guard)
        seen = asyncio.Event()
        want: list[str] = []

        def on_b(origin: str) -> None:
            if origin == "remote" and want and any(n.title == want[0] for n in b.board.needs("all")):
                seen.set()

        b.subscribe(on_b)
        stop = time.monotonic() + seconds
        i = 0
        while time.monotonic() < stop:
            seen.clear()
            want[:] = [f"need {i}"]
            t0 = time.perf_counter()
            a.board.add_need(f"need {i}")
            try:
                await asyncio.wait_for(seen.wait(), guard)
                out.latencies_ms.append((time.perf_counter() - t0) * 1000)
            except TimeoutError:
                out.late += 1
            i += 1
            await asyncio.sleep(0.05)
    finally:
        await rs_a.close()
        await rs_b.close()
    return out


SOAK_RELAY_ARGS = ("--send-timeout", "2", "--max-mailboxes", "300", "--log-interval", "1")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "hostile":
        raise SystemExit("usage: soak.py hostile PORT SECONDS")
    print(json.dumps(Hostile(int(sys.argv[2]), float(sys.argv[3])).run(), sort_keys=True), flush=True)
