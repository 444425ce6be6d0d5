"""Times, zones and text for gatherings: instants in, the reader's zone out.

An event stores an instant (UTC milliseconds) and the author's zone name, so
a weekly series keeps its wall-clock time across clock changes and every
reader sees times in their own zone.
"""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from circle.crdt.gather_records import MAX_EVENT_MINUTES
from circle.crdt.model import Millis
from circle.errors import UsageError


def clean_text(value: str, what: str, limit: int, required: bool = False) -> str:
    text = value.strip()
    if required and not text:
        raise UsageError(f"{what} must not be empty")
    if len(text) > limit:
        raise UsageError(f"{what} is longer than {limit} characters")
    return text


def category(value: str) -> str:
    return value.strip().lower()[:60]


def check_minutes(minutes: int) -> int:
    if not 0 < minutes <= MAX_EVENT_MINUTES:
        raise UsageError("a duration must be more than 0 and at most 14 days")
    return minutes


_OFFSET = re.compile(r"^UTC([+-])(\d{2}):(\d{2})$")


def tz_of(name: str) -> tzinfo:
    """A zone name as stored: an IANA name, "UTC", or a fixed "UTC+01:00"."""
    m = _OFFSET.match(name)
    if m:
        delta = timedelta(hours=int(m[2]), minutes=int(m[3]))
        return timezone(-delta if m[1] == "-" else delta)
    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"unknown time zone {name!r} (use a name like Europe/Berlin)") from None


def local_zone_name() -> str:
    """This device's zone as a name other devices understand."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        candidates.append(Path("/etc/timezone").read_text("utf-8").strip())
    except OSError:
        pass
    try:
        link = os.readlink("/etc/localtime")
        candidates.append(link.split("zoneinfo/", 1)[1] if "zoneinfo/" in link else "")
    except OSError:
        pass
    for name in candidates:
        if name and not name.startswith("/"):
            try:
                ZoneInfo(name)
                return "UTC" if name in ("Etc/UTC", "UTC", "Etc/Universal", "Zulu") else name
            except (ZoneInfoNotFoundError, ValueError):
                continue
    offset = datetime.now().astimezone().utcoffset() or timedelta(0)
    total = int(offset.total_seconds() // 60)
    sign = "-" if total < 0 else "+"
    return "UTC" if total == 0 else f"UTC{sign}{abs(total) // 60:02d}:{abs(total) % 60:02d}"


def instant(local: datetime, zone: tzinfo) -> Millis:
    return int(local.replace(tzinfo=zone).timestamp() * 1000)


def parse_when(text: str, tz: str) -> Millis:
    """`2026-12-12T18:00` (in zone `tz`) or with an offset (`...+01:00`, `...Z`)."""
    raw = text.strip().replace(" ", "T", 1)
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise UsageError(f"not a date and time: {text!r} (write it like 2026-12-12T18:00)") from None
    if value.tzinfo is None:
        return instant(value, tz_of(tz))
    return int(value.timestamp() * 1000)


def parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"not a date: {text!r} (write it like 2026-12-31)") from None


_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m?)?$")


def parse_duration(text: str) -> int:
    """3h, 90m, 1h30m, 1h30, 2d -> minutes."""
    m = _DURATION.match(text.strip().lower().replace(" ", ""))
    if not m or not any(m.groups()):
        raise UsageError(f"not a duration: {text!r} (write it like 3h, 90m or 1h30m)")
    days, hours, minutes = (int(g) if g else 0 for g in m.groups())
    if m[3] and not m[2] and not m[1] and not text.strip().lower().endswith("m"):
        raise UsageError(f"say what {text!r} counts: 3h, 90m or 1h30m")
    return check_minutes(days * 1440 + hours * 60 + minutes)


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def show_time(ms: Millis, tz: str | None = None) -> str:
    """An instant in the reader's zone (or `tz`): 'Sat 2026-12-12 18:00'."""
    return _show_minute(ms // 60_000, tz)


@lru_cache(maxsize=65536)
def _show_minute(minute: int, tz: str | None) -> str:
    # Cached per minute and formatted by hand: strftime and astimezone cost
    # ~10 us each, which is 100 ms on a 10k-row list.
    if tz:
        dt = datetime.fromtimestamp(minute * 60, tz_of(tz))
        y, mo, d, h, mi, wd = dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.weekday()
    else:
        t = time.localtime(minute * 60)
        y, mo, d, h, mi, wd = t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_wday
    return f"{_DAYS[wd]} {y}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}"


def author_time(starts_at: Millis, tz: str) -> str:
    """The author's wall-clock time, when it differs from the reader's."""
    local = show_time(starts_at)
    theirs = show_time(starts_at, tz)
    return "" if theirs == local else f"{theirs[-5:]} {tz}"
