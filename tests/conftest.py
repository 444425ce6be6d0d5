"""Shared fixtures: deterministic clocks and boards on fresh identities."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # make tests/ helpers (factories, netns) importable

from factories import Clock, make_board  # noqa: E402


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def board(clock: Clock):  # type: ignore[no-untyped-def]
    return make_board(clock)
