"""Fixtures for relay, envelope and bundle tests.

`relay_factory` spawns REAL relay processes (`python -m circle.relay.server`)
bound to 127.0.0.1 with an OS-chosen port; their stderr (the relay log) goes
to a file so tests can search it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from circle.net.keys import DeviceIdentity, EpochKey, new_epoch_key
from circle.net.relay_client import RelayCredentials


@dataclass
class Circle:
    """A toy circle: members' identities, an epoch key and a member list."""

    epoch: int
    key: EpochKey
    members: list[DeviceIdentity]
    removed: set[bytes] = field(default_factory=set)

    @classmethod
    def new(cls, n: int = 3, epoch: int = 1) -> Circle:
        return cls(epoch, new_epoch_key(), [DeviceIdentity.generate() for _ in range(n)])

    def is_active(self, verify_key: bytes) -> bool:
        return verify_key not in self.removed and any(m.verify_key == verify_key for m in self.members)

    @property
    def keys(self) -> dict[int, EpochKey]:
        return {self.epoch: self.key}

    @property
    def creds(self) -> RelayCredentials:
        return RelayCredentials.for_epoch(self.key)


@pytest.fixture
def circle() -> Circle:
    return Circle.new()


class RelayProcess:
    def __init__(self, data: Path, log: Path, args: list[str], store: str | None = None) -> None:
        self.data = data
        self.store = store  # e.g. a postgresql:// URL instead of the SQLite file in `data`
        self.log = log
        self.args = args
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "circle.relay.server", "--host", "127.0.0.1",
               "--port", str(self.port),
               *(["--store", self.store] if self.store else ["--data", str(self.data)]),
               "--log-interval", "0.5",
               *self.args]
        logf = open(self.log, "ab")  # noqa: SIM115 - owned by the child
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=logf, env=env)
        logf.close()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"relay did not start: {line!r} {self.log.read_text()[-2000:]}")
        self.port = int(line.rsplit(":", 1)[1].strip().rstrip("/"))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def wipe(self) -> None:
        """Stop, delete every file, start again on the same port."""
        self.stop()
        shutil.rmtree(self.data)
        self.data.mkdir()
        self.start()


@pytest.fixture
def relay_factory(tmp_path: Path) -> Iterator[Callable[..., RelayProcess]]:
    procs: list[RelayProcess] = []

    def make(*args: str) -> RelayProcess:
        n = len(procs)
        data = tmp_path / f"relay{n}"
        data.mkdir()
        rp = RelayProcess(data, tmp_path / f"relay{n}.log", list(args))
        rp.start()
        procs.append(rp)
        return rp

    yield make
    for p in procs:
        p.stop()


# --- a real PostgreSQL server (tests/pghelp.py), one per test session -----


@pytest.fixture(scope="session")
def pg_server() -> Iterator[object]:
    from pghelp import PgServer, require_postgres

    require_postgres()
    with PgServer() as server:
        yield server


@pytest.fixture
def pg_dsn(pg_server) -> str:  # type: ignore[no-untyped-def]
    """A fresh, empty database on the session's server (its URL)."""
    return str(pg_server.create_database())
