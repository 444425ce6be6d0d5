"""Shared fixtures: deterministic clocks and boards on fresh identities."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # make tests/ helpers (factories, netns) importable
# Never run mDNS on this machine's real interfaces from a test (net/discovery.py honours this).
os.environ["CIRCLE_DISCOVERY_FORBID_ALL"] = "1"

from factories import Clock, make_board  # noqa: E402


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def board(clock: Clock):  # type: ignore[no-untyped-def]
    return make_board(clock)
