"""Issue 16 cases 5 and 6, issue 10 at rest: real `circle` processes on real files.

Damage is reported on every command until `circle doctor` repairs it; a
FIFO never hangs a command; filesystem failures are one sentence; another
circle's files are refused; with a passphrase nothing on disk names a
person, a place or a peer."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from circle.node.home import CircleConfig, Home
from clihelp import CLI


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    c = CLI(tmp_path / "home")
    c.run("init", "--name", "Tenants", "--handle", "ro", "--no-passphrase")
    for i in range(5):
        c.run("need", "add", f"need {i}")
    return c


def _cdir(cli: CLI) -> Path:
    return next((cli.home / "circles").iterdir())


def _one_sentence(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("circle: "), proc.stderr


def test_damaged_tail_is_reported_on_every_command_until_doctor(cli: CLI) -> None:
    log = _cdir(cli) / "doc" / "log"
    data = bytearray(log.read_bytes())
    data[-3] ^= 0x10  # a bit flip in the last saved record
    log.write_bytes(bytes(data))
    for args in (("status",), ("need", "list"), ("members",)):
        proc = cli.run(*args)
        assert "WARNING" in proc.stderr and "circle doctor" in proc.stderr, args
    assert cli.json("status")["storage"]["damage"]["kind"] == "tail"
    edit = cli.run("need", "add", "after damage", check=False)
    assert edit.returncode == 5 and "nothing was saved" in edit.stderr
    assert log.read_bytes() == bytes(data)  # the damaged bytes are never cut away silently
    check = cli.run("doctor", check=False)
    assert check.returncode == 5 and "--repair" in check.stdout
    fixed = cli.run("doctor", "--repair")
    assert "set" in fixed.stdout and "aside" in fixed.stdout
    aside = list((_cdir(cli) / "doc").glob("damaged-*"))
    assert len(aside) == 1 and bytes(data).endswith(aside[0].read_bytes())
    after = cli.run("need", "add", "after repair")
    assert "WARNING" not in after.stderr
    titles = {n["title"] for n in cli.json("need", "list")}
    assert {"need 0", "need 3", "after repair"} <= titles and "need 4" not in titles


@pytest.mark.parametrize("what", ["log", "circle.json"])
def test_another_circles_file_is_refused_without_a_passphrase(cli: CLI, tmp_path: Path, what: str) -> None:
    other = CLI(tmp_path / "other")
    other.run("init", "--name", "Other", "--handle", "zed", "--no-passphrase")
    other.run("need", "add", "their need")
    src = next((other.home / "circles").iterdir())
    rel = Path("doc/log") if what == "log" else Path("circle.json")
    shutil.copy(src / rel, _cdir(cli) / rel)
    proc = cli.run("need", "list", check=False)
    assert proc.returncode == 5 and "another circle" in proc.stderr
    _one_sentence(proc)


@pytest.mark.parametrize("name", ["device.json", "circle.json", "doc/snapshot", "doc/log"])
def test_a_fifo_in_place_of_a_file_never_hangs(cli: CLI, name: str) -> None:
    path = cli.home / name if name == "device.json" else _cdir(cli) / name
    path.unlink()
    os.mkfifo(path)
    proc = cli.run("status", check=False, timeout=30)  # would block forever on open() before
    assert proc.returncode == 5 and "not a regular file" in proc.stderr
    _one_sentence(proc)


def test_log_replaced_by_a_directory_is_one_sentence(cli: CLI) -> None:
    log = _cdir(cli) / "doc" / "log"
    log.unlink()
    log.mkdir()
    proc = cli.run("need", "list", check=False)
    assert proc.returncode == 5
    _one_sentence(proc)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_read_only_file_system_reads_work_and_writes_are_one_sentence(tmpfs: Path) -> None:
    c = CLI(tmpfs / "home")
    c.run("init", "--name", "Tenants", "--handle", "ro", "--no-passphrase")
    c.run("need", "add", "before read-only")
    lock = next((tmpfs / "home" / "circles").iterdir()) / "doc" / "lock"
    lock.unlink()  # a home copied without its lock file, then mounted read-only
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    for args in (("status",), ("need", "list"), ("members",)):
        proc = c.run(*args, check=False)
        assert proc.returncode == 0, proc.stderr
    assert "before read-only" in c.run("need", "list").stdout
    proc = c.run("need", "add", "cannot be saved", check=False)
    assert proc.returncode == 5 and "read-only" in proc.stderr
    _one_sentence(proc)


def test_passphrase_home_names_nobody_at_rest(tmp_path: Path) -> None:
    c = CLI(tmp_path / "home", passphrase="correct horse battery staple")
    c.run("init", "--name", "Tenants", "--handle", "rohandle", "--zone", "northzone")
    short = CLI(tmp_path / "short", passphrase="elevenchars")
    proc = short.run("init", "--name", "X", "--handle", "y", check=False)
    assert proc.returncode == 2 and "12 characters" in proc.stderr
    # What a live session records about peers (circle.json settings), written as LiveSync does.
    home = Home.open(tmp_path / "home", "correct horse battery staple")
    cid = home.circle_ids()[0]
    cfg = CircleConfig.load(home, cid)
    cfg.settings["peers"] = {"10.213.7.9:45499": {"member_id": "peermemberid", "handle": "bohandle",
                                                 "address": "10.213.7.9", "port": 45499, "last_seen": 1.0}}
    cfg.save(home)
    c.run("need", "add", "meet at the laundromat")
    for path in (tmp_path / "home").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in (b"rohandle", b"northzone", b"bohandle", b"peermemberid", b"10.213.7.9", b"45499",
                           b"Tenants", b"laundromat", home.identity.member_id.encode()):
                assert secret not in data, (path, secret)
    again = CircleConfig.load(Home.open(tmp_path / "home", "correct horse battery staple"), cid)
    assert again.settings["peers"]["10.213.7.9:45499"]["handle"] == "bohandle"
    status = c.json("status")
    assert status["storage"]["in_clear"], status["storage"]
