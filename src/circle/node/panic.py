"""Panic lock and wipe for this device's home.

Lock (`circle lock`, the app's lock key): writes a fresh random stamp to
HOME/lock.stamp. Every long-running circle process (`serve`, `alert watch`,
the app) noted the stamp when it opened the home and checks it every
LOCK_POLL_S; a new stamp means "forget your keys now": `serve` and `watch`
close their sessions and exit, the app drops its service and shows the
passphrase screen. Commands started after the lock run as usual (they ask
for the passphrase again). Python cannot scrub freed memory: the keys are
gone from the process once it drops them and exits, not overwritten.

Wipe (`circle wipe`): lock first, then overwrite every file under the home
with random bytes of the same length (fsync'd) and unlink it, the key files
(device.json, then each circle.json) first, and leave one plain marker file,
WIPED, that holds nothing but the date. Every command then fails with one
sentence (`DeviceWiped`). What it cannot promise is in WIPE_LIMITS and is
printed every time.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from circle.errors import StoreError

LOCK_FILE = "lock.stamp"
WIPED_FILE = "WIPED"
LOCK_POLL_S = 0.2
KEY_FILES = ("device.json", "circle.json")

WIPE_LIMITS = (
    "What wipe can promise: the keys in this home were overwritten and deleted, so the circle's data "
    "here can no longer be opened, even with the passphrase.\n"
    "What it cannot promise: SSDs, flash and journaling or copy-on-write file systems may keep old "
    "copies of overwritten blocks, and backups or swap may hold copies too. If this home had a "
    "passphrase, such a copy still needs the passphrase; if it had none, the document itself was "
    "readable all along. The other members still hold the circle: ask one of them to remove this "
    "device (circle member remove), which rotates the circle key."
)


class DeviceWiped(StoreError):
    """This home was wiped; nothing in it can be opened."""


def wiped_at(home: Path) -> str | None:
    marker = home / WIPED_FILE
    if not marker.exists():
        return None
    try:
        return marker.read_text("utf-8").strip()[:40] or "?"
    except OSError:
        return "?"


def check_not_wiped(home: Path) -> None:
    when = wiped_at(home)
    if when is not None:
        raise DeviceWiped(
            f"this device's circle data was wiped ({when}); nothing here can be opened - "
            f"to start again, delete {home} and run `circle init` or `circle join`"
        )


# --- lock ------------------------------------------------------------------------


def lock_stamp(home: Path) -> str | None:
    try:
        return (home / LOCK_FILE).read_text("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def lock(home: Path) -> None:
    """Tell every circle process on this home to forget its keys."""
    if not home.exists():
        return
    path = home / LOCK_FILE
    tmp = path.with_name(LOCK_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (secrets.token_hex(16) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class LockWatch:
    """Notes the lock stamp at start; `tripped()` is True once it changes."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._start = lock_stamp(home)

    def tripped(self) -> bool:
        return lock_stamp(self.home) != self._start or (self.home / WIPED_FILE).exists()

    def rearm(self) -> None:
        """After unlocking (the passphrase was given again)."""
        self._start = lock_stamp(self.home)

    async def wait(self) -> None:
        while not self.tripped():
            await asyncio.sleep(LOCK_POLL_S)


# --- wipe ------------------------------------------------------------------------


@dataclass
class WipeReport:
    files: int
    bytes: int
    failed: list[str]


def _shred(path: Path) -> int:
    size = path.stat().st_size
    fd = os.open(path, os.O_WRONLY)
    try:
        left = size
        while left > 0:
            n = min(left, 1 << 20)
            os.write(fd, secrets.token_bytes(n))
            left -= n
        os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink()
    return size


def wipe(home: Path, settle: float = 1.0) -> WipeReport:
    """Destroy this home's keys and data (see the module docstring).

    Running processes are told to stop first (the lock) and given `settle`
    seconds, so none writes a file (peers, keys) back after the shredding; a
    second pass removes anything that still appeared."""
    check_not_wiped(home)
    lock(home)
    time.sleep(settle)
    report = WipeReport(0, 0, [])
    for _ in range(2):
        _shred_all(home, report)
        time.sleep(settle / 4)
    marker = home / WIPED_FILE
    marker.write_text(time.strftime("%Y-%m-%d %H:%M", time.localtime()) + "\n", "utf-8")
    dfd = os.open(home, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return report


def _shred_all(home: Path, report: WipeReport) -> None:
    files = [p for p in home.rglob("*") if p.is_file() and not p.is_symlink()]
    # Keys first: once they are gone nothing else can be opened, even if we are interrupted.
    files.sort(key=lambda p: (p.name not in KEY_FILES, p.name != "device.json", str(p)))
    for path in files:
        try:
            report.bytes += _shred(path)
            report.files += 1
        except FileNotFoundError:
            continue
        except OSError as exc:
            report.failed.append(f"{path}: {exc.strerror}")
    for link in [p for p in home.rglob("*") if p.is_symlink()]:
        link.unlink(missing_ok=True)
    for d in sorted((p for p in home.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        try:
            d.rmdir()
        except FileNotFoundError:
            continue
        except OSError as exc:
            report.failed.append(f"{d}: {exc.strerror}")


def has_passphrase(home: Path) -> bool:
    """Whether this home's data key is wrapped under a passphrase (reads no secret)."""
    try:
        import json

        return "wrapped_data_key" in json.loads((home / "device.json").read_text("utf-8"))
    except (OSError, ValueError, TypeError):
        return False
