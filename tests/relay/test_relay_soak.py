"""The relay soak (issue 10): hostile clients hammer a real relay process
while two honest members keep syncing through it.

Bounded: RELAY_SOAK_SECONDS (default 20 s here for CI time; the bench,
bench/bench_relay_soak.py, runs 60 s and reports edit-to-visible figures).
Asserts that every honest edit arrived and that each attack really ran and
was dealt with; timing targets live in the bench, not here.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from .conftest import RelayProcess
from .soak import SOAK_RELAY_ARGS, honest_members, start_hostile

SECONDS = float(os.environ.get("RELAY_SOAK_SECONDS", "20"))


def last_summary(relay: RelayProcess) -> dict[str, int]:
    lines = [ln for ln in relay.log.read_text().splitlines() if "summary:" in ln or "stopped:" in ln]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", lines[-1])} if lines else {}


async def test_honest_members_keep_syncing_through_hostile_clients(
        relay_factory: Callable[..., RelayProcess], tmp_path: Path) -> None:
    relay = relay_factory(*SOAK_RELAY_ARGS)
    hostile = start_hostile(relay.port, SECONDS + 2)
    try:
        honest = await honest_members(tmp_path, relay.url, SECONDS)
        out, err = hostile.communicate(timeout=SECONDS + 60)
    finally:
        if hostile.poll() is None:
            hostile.kill()
            hostile.wait(10)
    assert hostile.returncode == 0, err.decode()[-2000:]
    attacks = json.loads(out.decode().strip().splitlines()[-1])
    assert relay.alive()
    relay.stop()
    stats = last_summary(relay)

    # the honest members: every edit arrived
    assert honest.late == 0
    assert len(honest.latencies_ms) >= 10

    # and the attacks really ran, and were dealt with
    assert attacks.get("non_reader", 0) >= 4 and stats["slow_readers"] >= 1
    assert attacks.get("registered", 0) >= 1 and attacks.get("registration_refused", 0) >= 1
    assert attacks.get("pre_auth_closed_1009", 0) >= 1 and attacks.get("pre_auth_other", 0) == 0
    assert attacks.get("garbage", 0) >= 1
    assert attacks.get("flood_replies", 0) >= 1
    assert stats["mailboxes"] <= 300
