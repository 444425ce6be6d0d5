"""A full disk: the edit fails with a clear error and the store stays intact.

Uses a tiny tmpfs mounted for the test (needs root; skips otherwise)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from circle.errors import StoreError
from circle.node.home import Home
from circle.node.service import CircleService


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tiny tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_refuses_the_edit_and_keeps_the_store(small_disk: Path) -> None:
    svc = CircleService.create(Home.create(small_disk / "home", None), "Tiny", "sam")
    saved = [svc.board.add_need(f"need {i}") for i in range(5)]
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # take every free byte
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    with pytest.raises(StoreError, match="disk is full"):
        for i in range(200):  # the log has some slack in its last block
            svc.board.add_need(f"does not fit {i}", details="x" * 3000)
    filler.unlink()
    reopened = CircleService.open(Home.open(small_disk / "home", None))
    assert set(saved) <= set(reopened.board.view().needs)  # nothing saved was lost
    reopened.board.add_need("room again")  # and the store still takes appends
    assert "room again" in {n.title for n in CircleService.open(Home.open(small_disk / "home", None)).board.needs()}
