"""`circle relay stats` on a real SQLite relay process (the PostgreSQL case,
with several processes, is in test_pg_relay.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from circle.errors import RelayError
from circle.net.envelope import Kind, seal
from circle.net.relay_client import RelayConnection, RelayCredentials

from .conftest import Circle, RelayProcess


def stats(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "circle", "relay", "stats", *args],
                          capture_output=True, text=True, timeout=60)


async def test_sqlite_relay_stats_count_and_reveal_nothing(relay_factory: Callable[..., RelayProcess],
                                                           circle: Circle) -> None:
    relay = relay_factory("--stats-interval", "0.3")
    conn = await RelayConnection.open(relay.url, circle.creds)
    for _ in range(3):
        await conn.push(seal(circle.members[0], circle.epoch, circle.key, Kind.CHANGES, [b"x"]))
    with pytest.raises(RelayError):
        await RelayConnection.open(relay.url, RelayCredentials(circle.creds.mailbox, b"w" * 32))
    await asyncio.sleep(1.0)
    proc = await asyncio.to_thread(stats, "--data", str(relay.data), "--json", "--stats-interval", "0.3")
    await conn.close()
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["processes"], report["mailboxes"], report["envelopes"]) == (1, 1, 3)
    assert report["counters"]["open_connections"] == 1
    assert report["counters"]["puts"] == 3 and report["counters"]["rejected_wrong_token"] == 1
    for secret in (circle.creds.mailbox, circle.creds.token):
        assert secret.hex()[:8] not in proc.stdout
    assert "127.0.0.1" not in proc.stdout

    relay.stop()  # a clean stop withdraws the process's counters
    after = json.loads((await asyncio.to_thread(stats, "--data", str(relay.data), "--json")).stdout)
    assert after["processes"] == 0 and after["envelopes"] == 3


def test_stats_on_a_missing_relay_is_one_sentence(tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = stats("--data", str(tmp_path / "nothing"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("circle: no relay database at")
    assert not (tmp_path / "nothing").exists()  # looking did not create one
