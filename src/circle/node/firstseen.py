"""This device's first-seen times of records from implausible clocks.

The clock rule (crdt/clock.py) judges a record's deadlines against when this
device first saw it, when the writer's claimed time does not fit that. Those
times are local facts, never in the shared document: one small file per
circle (`seen`, JSON `{collection/id: ms}`), sealed with the home's data key
when the home has a passphrase, replaced atomically. Only records that
arrived from elsewhere with an implausible anchor get an entry, so the file
stays small (empty for a circle whose members' clocks are right).

A damaged or unreadable file is not fatal: the board then reads every time
as written (the behaviour before this rule), and the next arrival rewrites it.
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path

from circle.crdt.am import AmDoc
from circle.crdt.clock import ANCHORS, plausible, seen_key
from circle.crdt.model import Millis
from circle.crdt.store import atomic_write, read_regular
from circle.errors import CircleError
from circle.node.home import Home

FILE = "seen"


def load(home: Home, circle_dir: Path) -> dict[str, Millis]:
    try:
        raw = json.loads(home.unseal(read_regular(circle_dir / FILE, "first-seen times")))
    except FileNotFoundError:
        return {}
    except (CircleError, ValueError, UnicodeError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)}


def save(home: Home, circle_dir: Path, seen: dict[str, Millis]) -> None:
    atomic_write(circle_dir / FILE, home.seal(json.dumps(seen, sort_keys=True).encode()))


def arrivals(doc: AmDoc, before: list[bytes], now: Millis, *, history: bool = False) -> dict[str, Millis]:
    """Records created by changes after `before` whose anchor time is
    implausible now: {seen_key: now}. `history`: the first copy a device
    gets, where only a claim in the future is implausible."""
    spans = {actor: sorted(s) for actor, s in doc.op_spans(before).items()}
    if not spans:
        return {}
    changed = doc.changed_records(before, doc.heads()) if before else None
    out: dict[str, Millis] = {}
    for collection, anchor in ANCHORS.items():
        if changed is not None:
            creators = {rid: doc.record_writer(collection, rid) for rid in changed.get(collection, set())}
        else:  # everything (a first copy, or too many changes to list): every creator in one read
            creators = dict(doc.object_ids(collection)[1])
        for rid, who in creators.items():
            if who is None or not _within(spans.get(who[0]), who[1]):
                continue  # an edit of a record this device already had
            claimed = doc.record_field(collection, rid, anchor)
            if isinstance(claimed, int) and not isinstance(claimed, bool) \
                    and not plausible(claimed, now, history=history):
                out[seen_key(collection, rid)] = now
    return out


def _within(spans: list[tuple[int, int]] | None, op: int) -> bool:
    """Whether op counter `op` lies in one of these sorted (first, last) spans."""
    if not spans:
        return False
    i = bisect.bisect_right(spans, (op, 1 << 62)) - 1
    return i >= 0 and spans[i][0] <= op <= spans[i][1]
