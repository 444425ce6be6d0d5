"""Issue 16 case 3 on the USB path: a 4.6 MB circle in a bundle file.

Before: `circle bundle write` refused ("above the 4194204 byte limit"). Now
the snapshot is written as a set of signed parts, and the reader refuses any
file whose parts were dropped, duplicated, reordered or spliced from another
bundle (the attacker recomputes the unkeyed checksum and the header), a
truncated file, and a header that claims more than a bundle may hold —
each with one sentence, nothing imported."""

from __future__ import annotations

import hashlib
import struct
import tracemalloc
from pathlib import Path

import pytest

from circle.errors import BundleCorrupt
from circle.net.bundle import CHECKSUM_LEN, MAGIC, read_bundle
from circle.node.home import Home
from circle.node.service import CircleService
from clihelp import CLI

from . import bigcircle

_HEAD = struct.Struct(">8sHHIQ")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return bigcircle.build(tmp_path_factory.mktemp("bigbundle"))


@pytest.fixture
def homes(built: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    return bigcircle.copy(built, tmp_path / "homes")


def need_count(home: Path) -> int:
    return len(CircleService.open(Home.open(home, None)).board.needs(status="all"))


def records(path: Path) -> list[bytes]:
    raw = path.read_bytes()
    _m, version, _f, count, _body = _HEAD.unpack_from(raw)
    assert version == 2
    pos, out = _HEAD.size, []
    for _ in range(count):
        (n,) = struct.unpack_from(">I", raw, pos)
        out.append(raw[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def forge(path: Path, envs: list[bytes]) -> None:
    """What an attacker with the file can do: any records, a consistent header and checksum."""
    body = b"".join(struct.pack(">I", len(e)) + e for e in envs)
    head = _HEAD.pack(MAGIC, 2, 0, len(envs), len(body))
    inner = hashlib.blake2b(body, digest_size=CHECKSUM_LEN, person=b"circle/bundle").digest()
    check = hashlib.blake2b(head + inner, digest_size=CHECKSUM_LEN, person=b"circle/bundle").digest()
    path.write_bytes(head + body + check)


def one_sentence(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("circle: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_big_circle_bundles_and_reads_back_on_a_fresh_member(homes: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = CLI(homes[0]), CLI(homes[1])
    stick = tmp_path / "circle.bundle"
    wrote = a.run("bundle", "write", str(stick), "--json", check=False)
    assert wrote.returncode == 0, wrote.stderr  # was: "above the 4194204 byte limit"
    assert len(records(stick)) >= 5
    got = b.json("bundle", "read", str(stick))
    assert got["changed"] and got["parts"] >= 5 and got["snapshots"] == 1
    assert need_count(homes[1]) == bigcircle.NEEDS
    again = b.json("bundle", "read", str(stick))  # reading twice changes nothing
    assert not again["changed"]


@pytest.mark.parametrize("attack", ["drop", "swap", "duplicate", "splice", "truncate"])
def test_tampered_or_truncated_bundle_is_refused_and_nothing_imported(
        homes: tuple[Path, Path], tmp_path: Path, attack: str) -> None:
    a, b = CLI(homes[0]), CLI(homes[1])
    stick, other = tmp_path / "circle.bundle", tmp_path / "other.bundle"
    a.run("bundle", "write", str(stick))
    envs = records(stick)
    assert len(envs) >= 5
    if attack == "drop":
        forge(stick, envs[:2] + envs[3:])
    elif attack == "swap":
        forge(stick, [envs[0], envs[2], envs[1], *envs[3:]])
    elif attack == "duplicate":
        forge(stick, [*envs[:3], envs[2], *envs[3:]])
    elif attack == "splice":  # the same circle, same author, another bundle: another set
        a.run("bundle", "write", str(other))
        forge(stick, [*envs[:2], records(other)[2], *envs[3:]])
    else:
        raw = stick.read_bytes()
        stick.write_bytes(raw[: len(raw) // 2])
    proc = b.run("bundle", "read", str(stick), check=False)
    assert proc.returncode != 0
    line = one_sentence(proc.stderr)
    expected = {"drop": "out of order", "swap": "out of order", "duplicate": "twice",
                "splice": "another snapshot", "truncate": "truncated"}[attack]
    assert expected in line and ("nothing was read" in line or attack == "truncate"), line
    assert need_count(homes[1]) == 0  # nothing imported


def test_header_claiming_10_gib_is_refused_before_reading(tmp_path: Path, homes: tuple[Path, Path]) -> None:
    claim = tmp_path / "claim.bundle"
    claim.write_bytes(_HEAD.pack(MAGIC, 2, 0, 2560, 10 << 30) + bytes(4096))
    tracemalloc.start()
    with pytest.raises(BundleCorrupt, match="claims 10737 MB, above the 256 MiB"):
        read_bundle(claim)
    _cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1 << 20  # refused on the header: nothing the size of the claim was allocated
    sparse = tmp_path / "sparse.bundle"  # a version 1 file that really is 10 GiB (sparse: no disk used)
    with open(sparse, "wb") as f:
        f.write(MAGIC + struct.pack(">HHI", 1, 0, 2560))
        f.truncate(10 << 30)
    with pytest.raises(BundleCorrupt, match="above the 256 MiB"):
        read_bundle(sparse)
    proc = CLI(homes[1]).run("bundle", "read", str(claim), check=False)
    assert proc.returncode != 0 and "above the 256 MiB" in one_sentence(proc.stderr)
