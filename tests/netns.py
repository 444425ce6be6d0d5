"""Private LANs made of Linux network namespaces, for multi-host tests.

Nothing here touches the machine's real interfaces: every link is created
directly inside namespaces this module made (``ip link add ... netns A type
veth peer name ... netns B``), addresses are 10.77.0.x/24 inside them, and
everything is deleted on exit, even on failure.

Topology for ``Lan(n)``::

    <prefix>br : bridge "br0" with ports p1..pn     (the "switch")
    <prefix>h1 : eth0 10.77.0.1/24  <-veth->  p1
    ...
    <prefix>hn : eth0 10.77.0.n/24  <-veth->  pn

Each host has ``lo`` up and a 224.0.0.0/4 route on eth0 (mDNS works).

Typical use in a test::

    @pytest.fixture
    def lan3():
        reason = netns_unavailable_reason()
        if reason:
            pytest.skip(reason)
        with Lan(3) as lan:
            yield lan

    def test_x(lan3):
        proc = lan3.popen(lan3.hosts[0], [sys.executable, "-m", "something"])
        lan3.cut(lan3.hosts[2]); ...; lan3.restore(lan3.hosts[2])

Run as a script (``python netns.py sniff OUT``) it is a minimal AF_PACKET
capture used when tcpdump is not installed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

SUBNET = "10.77.0"
TESTS_DIR = Path(__file__).resolve().parent


def netns_unavailable_reason() -> str | None:
    """Why namespace tests cannot run here, or None if they can."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespace tests need root (CI runs them as root)"
    if shutil.which("ip") is None:
        return "iproute2 'ip' command not found (apt-get install iproute2)"
    name = f"cprobe{os.getpid()}{secrets.token_hex(2)}"
    probe = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"'ip netns add' failed: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _ip(*args: str) -> None:
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {res.stderr.strip()}")


@dataclass(frozen=True)
class Host:
    index: int  # 1-based
    ns: str  # namespace name
    ip: str  # 10.77.0.<index>
    port: str  # bridge-side veth name (in the bridge namespace)


@dataclass
class NsProcess:
    """A process running inside a namespace, with its stdout parsed as JSON lines."""

    host: Host
    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _stderr: list[str] = field(default_factory=list)
    _eof: bool = False

    def start_readers(self) -> None:
        def read_out() -> None:
            assert self.popen.stdout is not None
            for line in self.popen.stdout:
                with self._cond:
                    self.lines.append(line.rstrip("\n"))
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        obj = None
                    if isinstance(obj, dict):
                        self.events.append(obj)
                    self._cond.notify_all()
            with self._cond:
                self._eof = True
                self._cond.notify_all()

        def read_err() -> None:
            assert self.popen.stderr is not None
            for line in self.popen.stderr:
                self._stderr.append(line)

        threading.Thread(target=read_out, daemon=True).start()
        threading.Thread(target=read_err, daemon=True).start()

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float, what: str
    ) -> list[dict[str, Any]]:
        """Wait (bounded) until predicate(events) holds; fail with the output so far."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if predicate(self.events):
                    return list(self.events)
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    raise AssertionError(
                        f"{self.host.ns}: gave up after {timeout}s waiting for {what}; "
                        f"exit={self.popen.poll()}\nstdout:\n" + "\n".join(self.lines[-40:])
                        + f"\nstderr:\n{self.stderr[-4000:]}"
                    )
                self._cond.wait(min(left, 0.5))

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


class Lan:
    """``n`` hosts on one bridge, each in its own network namespace."""

    def __init__(self, n: int, prefix: str | None = None) -> None:
        if not 1 <= n <= 200:
            raise ValueError("1..200 hosts")
        # short, unique per run: interface/namespace names stay well under limits
        self.prefix = prefix or f"c{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.bridge_ns = f"{self.prefix}br"
        self.hosts = [
            Host(i, f"{self.prefix}h{i}", f"{SUBNET}.{i}", f"p{i}") for i in range(1, n + 1)
        ]
        self._made: list[str] = []
        self._procs: list[NsProcess] = []

    # -- lifecycle -----------------------------------------------------------

    def __enter__(self) -> Lan:
        try:
            self.setup()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.teardown()

    def setup(self) -> None:
        _ip("netns", "add", self.bridge_ns)
        self._made.append(self.bridge_ns)
        br = self.bridge_ns
        _ip("-n", br, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        _ip("-n", br, "link", "set", "br0", "up")
        _ip("-n", br, "link", "set", "lo", "up")
        for h in self.hosts:
            _ip("netns", "add", h.ns)
            self._made.append(h.ns)
            # both ends are born inside our namespaces: nothing in the root one
            _ip("link", "add", "eth0", "netns", h.ns, "type", "veth",
                "peer", "name", h.port, "netns", br)
            _ip("-n", br, "link", "set", h.port, "master", "br0")
            _ip("-n", br, "link", "set", h.port, "up")
            _ip("-n", h.ns, "link", "set", "lo", "up")
            _ip("-n", h.ns, "addr", "add", f"{h.ip}/24", "dev", "eth0")
            _ip("-n", h.ns, "link", "set", "eth0", "up")
            _ip("-n", h.ns, "route", "add", "224.0.0.0/4", "dev", "eth0")

    def teardown(self) -> None:
        for p in self._procs:
            try:
                p.stop(timeout=3.0)
            except Exception:
                pass
        self._procs.clear()
        for ns in reversed(self._made):
            # kill anything still inside (only our own namespaces' processes)
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for pid in pids.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._made.clear()

    # -- running things --------------------------------------------------------

    def _argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def popen(
        self, host: Host, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> NsProcess:
        """Start ``argv`` inside ``host``'s namespace; stdout is read as JSON lines."""
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        p = subprocess.Popen(
            self._argv(host.ns, argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, text=True, env=full_env,
        )
        proc = NsProcess(host, p)
        proc.start_readers()
        self._procs.append(proc)
        return proc

    def run(
        self, host: Host, argv: Sequence[str], timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``host``'s namespace to completion."""
        return subprocess.run(
            self._argv(host.ns, argv), capture_output=True, text=True, timeout=timeout
        )

    def run_python(
        self, host: Host, code: str, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a Python snippet (this interpreter) inside ``host``'s namespace."""
        return self.run(host, [sys.executable, "-c", code], timeout=timeout)

    def nshost(self, host: Host, config: dict[str, Any], workdir: Path) -> NsProcess:
        """Start tests/nshost.py in ``host`` with ``config`` (written to a JSON file)."""
        cfg = dict(config)
        cfg.setdefault("interfaces", [host.ip])
        path = workdir / f"{host.ns}-{secrets.token_hex(3)}.json"
        path.write_text(json.dumps(cfg))
        return self.popen(
            host, [sys.executable, str(TESTS_DIR / "nshost.py")],
            env={"CIRCLE_NSHOST_CONFIG": str(path)},
        )

    # -- partitions --------------------------------------------------------------

    def cut(self, host: Host) -> None:
        """Unplug ``host`` from the switch (its own addresses and routes stay)."""
        _ip("-n", self.bridge_ns, "link", "set", host.port, "down")

    def restore(self, host: Host) -> None:
        """Plug ``host`` back in."""
        _ip("-n", self.bridge_ns, "link", "set", host.port, "up")

    # -- capture -------------------------------------------------------------

    def capture(self, path: Path) -> Capture:
        """Capture every frame crossing the switch (all ports) into ``path``."""
        return Capture(self, path)


class Capture:
    """tcpdump on every interface of the bridge namespace, or an AF_PACKET fallback."""

    def __init__(self, lan: Lan, path: Path) -> None:
        self.lan = lan
        self.path = path
        # CIRCLE_TEST_CAPTURE=af_packet forces the fallback (to test it)
        forced = os.environ.get("CIRCLE_TEST_CAPTURE")
        self.tool = forced or ("tcpdump" if shutil.which("tcpdump") else "af_packet")
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Capture:
        if self.tool == "tcpdump":
            argv = ["tcpdump", "-i", "any", "-n", "-U", "-s", "0", "-w", str(self.path)]
            ready = b"listening on"
        else:
            argv = [sys.executable, str(TESTS_DIR / "netns.py"), "sniff", str(self.path)]
            ready = b"listening"
        self._proc = subprocess.Popen(
            self.lan._argv(self.lan.bridge_ns, argv),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )
        assert self._proc.stderr is not None
        seen = b""
        deadline = time.monotonic() + 10
        while ready not in seen:
            line = self._proc.stderr.readline()
            if not line or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"capture ({self.tool}) did not start: {seen!r}")
            seen += line
        # keep draining stderr so the capture never blocks on a full pipe
        stderr = self._proc.stderr
        threading.Thread(target=lambda: stderr.read(), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def data(self) -> bytes:
        return self.path.read_bytes() if self.path.exists() else b""

    def frames(self) -> list[tuple[int, bytes]]:
        """(link-layer header length, frame) for every captured frame."""
        return _frames(self.data(), self.tool)

    def udp_payloads(self, port: int = 5353) -> list[bytes]:
        """Payloads of IPv4 UDP datagrams from or to ``port`` (default: mDNS)."""
        out = []
        for link, frame in self.frames():
            ip = frame[link:]
            if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
                continue
            udp = ip[(ip[0] & 0x0F) * 4 :]
            if len(udp) < 8:
                continue
            sport, dport, length = (int.from_bytes(udp[i : i + 2], "big") for i in (0, 2, 4))
            if port in (sport, dport):
                out.append(udp[8:length])
        return out

    def tcp_payloads(self, port: int) -> list[bytes]:
        """Non-empty payloads of IPv4 TCP segments from or to ``port``."""
        out = []
        for link, frame in self.frames():
            ip = frame[link:]
            if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
                continue
            total = int.from_bytes(ip[2:4], "big")
            tcp = ip[(ip[0] & 0x0F) * 4 : total]
            if len(tcp) < 20:
                continue
            sport, dport = (int.from_bytes(tcp[i : i + 2], "big") for i in (0, 2))
            payload = tcp[(tcp[12] >> 4) * 4 :]
            if port in (sport, dport) and payload:
                out.append(payload)
        return out


_LINK_HEADER = {1: 14, 113: 16, 276: 20}  # Ethernet, Linux SLL, Linux SLL2


def _frames(data: bytes, tool: str) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    if tool == "af_packet":  # our own format: 4-byte length + Ethernet frame
        i = 0
        while i + 4 <= len(data):
            n = int.from_bytes(data[i : i + 4], "big")
            out.append((14, data[i + 4 : i + 4 + n]))
            i += 4 + n
        return out
    if len(data) < 24:
        return out
    magic = data[:4]
    order = "little" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else "big"
    linktype = int.from_bytes(data[20:24], order) & 0xFFFF
    link = _LINK_HEADER.get(linktype)
    if link is None:
        raise ValueError(f"unsupported pcap link type {linktype}")
    i = 24
    while i + 16 <= len(data):
        n = int.from_bytes(data[i + 8 : i + 12], order)
        out.append((link, data[i + 16 : i + 16 + n]))
        i += 16 + n
    return out


def lan(n: int) -> Iterator[Lan]:
    """Generator for fixtures: skip if unavailable, yield a set-up Lan, always tear down."""
    import pytest

    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    with Lan(n) as net:
        yield net


def _sniff(out: str) -> None:
    """Minimal capture: every frame on every interface of this namespace."""
    import socket

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
    s.settimeout(0.2)
    with open(out, "wb") as f:
        print("listening", file=sys.stderr, flush=True)
        while not stop.is_set():
            try:
                frame = s.recv(65535)
            except TimeoutError:
                continue
            f.write(len(frame).to_bytes(4, "big") + frame)
            f.flush()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "sniff":
        _sniff(sys.argv[2])
    else:
        sys.exit("usage: netns.py sniff OUTFILE")
