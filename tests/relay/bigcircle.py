"""The issue 16 case 3 circle: 1,500 needs with long details, a 4.6 MB document.

Built once per test module in-process (1,500 CLI calls would take minutes),
then copied for each test: `sam` holds the big document, `alex` is a member
who joined before any of it was written (a fresh member)."""

from __future__ import annotations

import random
import shutil
import string
from pathlib import Path

from circle.node.home import Home
from circle.node.service import CircleService
from factories import member_homes

NEEDS = 1500
MIN_SAVED = 4_580_000


def build(root: Path) -> tuple[Path, Path]:
    sam, alex = member_homes(root, ["sam", "alex"])
    svc = CircleService.open(Home.open(sam, None))
    rng = random.Random(16)
    alphabet = string.ascii_letters + string.digits + string.punctuation + " "
    svc.board.on_commit = None  # build in memory, save once
    for i in range(NEEDS):  # details within the CLI's 4,000-character limit
        svc.board.add_need(f"need {i:04d}", details="".join(rng.choices(alphabet, k=3650)))
    svc.persist()
    assert len(svc.doc.save()) >= MIN_SAVED, len(svc.doc.save())
    return sam, alex


def copy(built: tuple[Path, Path], dest: Path) -> tuple[Path, Path]:
    out = []
    for home in built:
        target = dest / home.name
        shutil.copytree(home, target, symlinks=True)
        out.append(target)
    return out[0], out[1]
