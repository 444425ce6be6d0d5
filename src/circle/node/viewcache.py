"""A cache of derived results (issue 16 case 8), so `status` on a large
circle does not load and parse the whole document in every process.

Rules:
- The cache is local derived data, never shared: one file per circle and
  kind (`cache-<kind>`), sealed with the home's data key when the home has
  a passphrase (like the document itself), replaced atomically.
- It is keyed by a *token* of every file the result depends on: the
  document store (snapshot, log, head), the signatures store, `circle.json`
  (settings, keys, peers, relay state) and the first-seen file
  (crdt/clock.py), each by inode, size and modification time, plus the code
  version. Any edit, sync, compaction, membership change (statements are in
  the document) or settings change rewrites one of them, so the token
  changes and the cache is ignored. The token is read *before* the result
  is computed: a write that lands meanwhile leaves a stale token, which only
  costs a recomputation.
- Derived states also change with the clock (a need expires, a loan becomes
  overdue): each entry carries the time it was computed and the earliest
  time any of its states can change; outside that window it is ignored.
- What is cached is the *filtered* result (verified authors, writes of
  removed devices dropped), exactly what the command printed.
- Anything odd (missing, damaged, foreign, unreadable) is a miss, never an
  error: the command computes the result as it would without a cache.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from circle import __version__
from circle.crdt.model import Millis
from circle.crdt.store import atomic_write, read_regular
from circle.errors import CircleError
from circle.node.home import Home

#: Files (relative to the circle's directory) whose state keys the cache.
DEPENDS_ON = ("doc/snapshot", "doc/log", "doc/head", "sigs/snapshot", "sigs/log", "sigs/head",
              "circle.json", "seen")
#: Longest a cached result is trusted even when nothing says it changes (a safety net).
MAX_AGE_MS: Millis = 24 * 3600 * 1000
FORMAT = 1


def token(home: Home, circle_id: str) -> str:
    base = home.circle_dir(circle_id)
    parts = [f"v{FORMAT}/{__version__}"]
    for name in DEPENDS_ON:
        try:
            st = os.stat(base / name)
            parts.append(f"{name}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{name}:-")
    return "|".join(parts)


def _path(home: Home, circle_id: str, kind: str) -> Path:
    return home.circle_dir(circle_id) / f"cache-{kind}"


def get(home: Home, circle_id: str, kind: str, key: str, now: Millis) -> Any:
    """The cached result for `key` at time `now`, or None."""
    try:
        raw = json.loads(home.unseal(read_regular(_path(home, circle_id, kind), "a cache")))
    except (OSError, CircleError, ValueError, UnicodeError):
        return None
    if not isinstance(raw, dict) or raw.get("token") != key:
        return None
    computed, until = raw.get("computed_at"), raw.get("valid_until")
    if not isinstance(computed, int) or not isinstance(until, int) or not computed <= now < until:
        return None
    return raw.get("data")


def put(home: Home, circle_id: str, kind: str, key: str, now: Millis, valid_until: Millis, data: Any) -> None:
    """Store a result (best effort: a full disk or read-only home just means no cache)."""
    record = {"token": key, "computed_at": now, "valid_until": min(valid_until, now + MAX_AGE_MS), "data": data}
    try:
        atomic_write(_path(home, circle_id, kind), home.seal(json.dumps(record).encode()))
    except (OSError, CircleError):
        pass


def drop(home: Home, circle_id: str) -> None:
    for path in home.circle_dir(circle_id).glob("cache-*"):
        try:
            path.unlink()
        except OSError:
            pass
