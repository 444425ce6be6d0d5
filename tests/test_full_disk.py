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


@pytest.fixture
def two_mb_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mb"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(path: Path, leave: int) -> None:
    """Take every free byte of the file system but about `leave`."""
    st = os.statvfs(path.parent)
    free = st.f_bavail * st.f_frsize - leave
    with open(path, "wb") as fh:
        fh.write(b"\0" * max(0, free))
    try:
        with open(path.with_suffix(".more"), "wb") as fh:  # tmpfs rounds: top it up block by block
            while os.statvfs(path.parent).f_bavail * st.f_frsize > leave:
                fh.write(b"\0" * 4096)
                fh.flush()
    except OSError:
        pass


def test_edit_saved_but_compaction_failed_says_saved(two_mb_disk: Path) -> None:
    """Issue 16 case 1: the edit is in the store, only tidying failed: exit 0, and say so."""
    from clihelp import CLI

    home = two_mb_disk / "home"
    svc = CircleService.create(Home.create(home, None), "Tiny", "sam")
    from circle.node.service import COMPACT_MIN_LOG

    i = 0
    # Stop within one filler (~1.6 KB) below the threshold: the final edit (~2.6 KB) crosses it.
    while svc.store.log_size() < COMPACT_MIN_LOG - 2000:
        svc.board.add_need(f"filler {i}", details=os.urandom(1500).hex())  # incompressible
        i += 1
    _fill(two_mb_disk / "filler", leave=16 * 1024)
    cli = CLI(home)
    proc = cli.run("need", "add", "the one that fits", "--details", os.urandom(1950).hex(), check=False)
    assert proc.returncode == 0, proc.stderr  # was: exit 5 "nothing was changed" although it was saved
    assert "saved" in proc.stderr and "disk" in proc.stderr
    titles = [n.title for n in CircleService.open(Home.open(home, None)).board.needs()]
    assert titles.count("the one that fits") == 1
    for p in two_mb_disk.glob("filler*"):
        p.unlink()
    assert "the one that fits" in cli.run("need", "list").stdout  # and the store still works


def test_peer_that_could_not_save_is_not_counted_as_in_sync(two_mb_disk: Path, tmp_path: Path) -> None:
    """B's `circle serve` runs on a full disk; A's `circle sync` must not say B has everything."""
    import sys

    from clihelp import CLI
    from factories import member_homes

    homes = member_homes(tmp_path, ["ana", "bo"])
    bo_home = two_mb_disk / "bo"
    shutil.copytree(homes[1], bo_home)
    a, b = CLI(homes[0]), CLI(bo_home)
    for i in range(4):  # more than the slack in the last page of bo's log
        a.run("need", "add", f"too big for bo's disk {i}", "--details", os.urandom(1950).hex())
    _fill(two_mb_disk / "filler", leave=1024)
    server = subprocess.Popen([sys.executable, "-m", "circle", "serve", "--no-discovery", "--listen",
                               "127.0.0.1:0"], env=b.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = server.stdout.readline().split("Listening on ")[1].split(";")[0].rsplit(":", 1)[1]
        proc = a.run("sync", "--no-discovery", "--listen", "127.0.0.1:0", "--peer", f"127.0.0.1:{port}",
                     "--timeout", "15", "--json", check=False)
    finally:
        server.terminate()
        server.communicate(timeout=20)
    for p in two_mb_disk.glob("filler*"):
        p.unlink()
    assert "too big for bo's disk 3" not in b.run("need", "list").stdout  # bo's disk really was full
    assert proc.returncode != 0, proc.stdout  # never "in sync" for an edit bo does not have
    assert "could not save our changes" in proc.stdout and "is full" in proc.stdout, proc.stdout
    status = a.run("status").stdout
    assert "has all our changes" not in status and "bo could not save our changes" in status, status
    # Room again: bo saves what the next session brings, and only then is it in sync.
    server = subprocess.Popen([sys.executable, "-m", "circle", "serve", "--no-discovery", "--listen",
                               "127.0.0.1:0"], env=b.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = server.stdout.readline().split("Listening on ")[1].split(";")[0].rsplit(":", 1)[1]
        proc = a.run("sync", "--no-discovery", "--listen", "127.0.0.1:0", "--peer", f"127.0.0.1:{port}",
                     "--timeout", "15", "--json", check=False)
    finally:
        server.terminate()
        server.communicate(timeout=20)
    assert proc.returncode == 0, proc.stdout
    assert "too big for bo's disk 3" in b.run("need", "list").stdout
    assert "bo has all our changes" not in status and "has all our changes" in a.run("status").stdout
