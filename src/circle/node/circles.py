"""Several circles on one device: list them, pick one by name prefix or id
prefix, remember a default, forget one.

Picking (`pick`), first match wins:
1. no selector: the only circle, else the remembered default, else an
   error that lists the circles by name;
2. a selector: an exact name (case-insensitive), then an id prefix, then a
   name prefix; several hits is an error naming them.

The default lives in HOME/default-circle (a circle id, not secret).
Forgetting (`forget`, `circle forget`) deletes this device's copy of the
circle (its document and keys); it does not take you out of the circle:
`circle leave` (node/membership.leave) signs your own removal first.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from circle.errors import AmbiguousId, NotFound, StoreCorrupt
from circle.node.home import CircleConfig, Home

DEFAULT_FILE = "default-circle"


@dataclass(frozen=True)
class CircleEntry:
    id: str
    name: str
    default: bool


def _default_path(home: Home | Path) -> Path:
    return (home.path if isinstance(home, Home) else home) / DEFAULT_FILE


def remembered(home: Home) -> str | None:
    try:
        text = _default_path(home).read_text("utf-8").strip()
    except OSError:
        return None
    return text if text in home.circle_ids() else None


def circles(home: Home) -> list[CircleEntry]:
    default = remembered(home)
    out = []
    for cid in home.circle_ids():
        try:
            name = CircleConfig.load(home, cid).name
        except StoreCorrupt:
            name = "(unreadable)"
        out.append(CircleEntry(cid, name, cid == default))
    out.sort(key=lambda c: (c.name.lower(), c.id))
    return out


def pick(home: Home, selector: str | None) -> str:
    entries = circles(home)
    if not entries:
        raise NotFound(f"no circle on this device yet (home {home.path}); run `circle init` or `circle join`")
    listing = ", ".join(f"'{c.name}'" for c in entries)
    if selector is None or not selector.strip():
        if len(entries) == 1:
            return entries[0].id
        default = remembered(home)
        if default is not None:
            return default
        raise AmbiguousId(f"this device has {len(entries)} circles ({listing}); pick one with --circle NAME "
                          "(a prefix is enough) or remember one with `circle use NAME`")
    want = selector.strip().lower()
    hits = ([c for c in entries if c.name.lower() == want] or [c for c in entries if c.id.startswith(want)]
            or [c for c in entries if c.name.lower().startswith(want)])
    if not hits:
        raise NotFound(f"no circle named or with id '{selector}' on this device (it has {listing})")
    if len(hits) > 1:
        raise AmbiguousId(f"'{selector}' matches several circles: " + ", ".join(f"'{c.name}'" for c in hits))
    return hits[0].id


def remember(home: Home, circle_id: str) -> None:
    if circle_id not in home.circle_ids():
        raise NotFound(f"no circle {circle_id} on this device")
    path = _default_path(home)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(circle_id + "\n", "utf-8")
    tmp.replace(path)


def forget(home: Home, circle_id: str) -> CircleEntry:
    """Delete this device's copy of a circle; returns what was deleted."""
    entry = next((c for c in circles(home) if c.id == circle_id), None)
    if entry is None:
        raise NotFound(f"no circle {circle_id} on this device")
    shutil.rmtree(home.circle_dir(circle_id))
    if remembered(home) is None:
        _default_path(home).unlink(missing_ok=True)
    return entry


# --- "since you last looked" ----------------------------------------------------------

LOOKED_FILE = "activity-seen.json"


def last_looked(home: Home, circle_id: str) -> int | None:
    """When this device last showed the circle's activity feed (ms)."""
    import json

    try:
        data = json.loads((home.path / LOOKED_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    value = data.get(circle_id) if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def mark_looked(home: Home, circle_id: str, at: int) -> None:
    import json

    path = home.path / LOOKED_FILE
    try:
        data = json.loads(path.read_text("utf-8"))
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data[circle_id] = at
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), "utf-8")
    tmp.replace(path)
