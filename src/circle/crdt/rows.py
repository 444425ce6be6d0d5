"""Needs and offers as plain rows, for the persisted board view (node/viewstore.py).

A row holds a record's fields as the board derived them (verified author,
clock-shifted times, writes of removed devices masked) *except* its status,
which depends on the time it is read: `need_from_row(row, now)` derives it
again with the same rule the board uses (model.need_status). Rows are JSON
values (lists of str/int/bool/None and one dict), so a row store is readable
without Automerge and without unpickling anything.

A row that does not have the expected shape raises ValueError: the caller
treats the whole store as unusable (a miss), never a single row as absent.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypeVar

from circle.crdt.model import (
    Malformed,
    MemberId,
    Millis,
    Need,
    Offer,
    RecordId,
    Urgency,
    need_status,
    offer_status,
)

Row = list[Any]
T = TypeVar("T")


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("not an integer")
    return value


def _opt_int(value: object) -> int | None:
    return None if value is None else _int(value)


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("not text")
    return value


def _tags(value: object) -> frozenset[str]:
    if not isinstance(value, list):
        raise ValueError("tags are not a list")
    return frozenset(_str(t) for t in value)


def need_row(n: Need) -> Row:
    return [n.id, n.title, n.details, n.category, sorted(n.tags), n.urgency.value, n.zone, n.author,
            n.created_at, n.updated_at, n.expires_at, dict(n.claims), n.met_at, n.withdrawn_at]


def need_from_row(row: object, now: Millis) -> Need:
    # Type checks are written out (not helpers): 100k rows are read per command.
    if type(row) is not list or len(row) != 14:
        raise ValueError("a need row has the wrong shape")
    (rid, title, details, category, tags, urgency, zone, author,
     created, updated, expires, claims, met, withdrawn) = row
    if not (type(rid) is str and type(title) is str and type(details) is str and type(category) is str
            and type(zone) is str and type(author) is str and type(created) is int and type(updated) is int
            and type(expires) is int and (met is None or type(met) is int)
            and (withdrawn is None or type(withdrawn) is int) and type(claims) is dict and type(tags) is list):
        raise ValueError("a need row has a field of the wrong type")
    if claims and not all(type(k) is str and type(v) is int for k, v in claims.items()):
        raise ValueError("a need row has unreadable claims")
    if tags and not all(type(t) is str for t in tags):
        raise ValueError("a need row has unreadable tags")
    return _built(Need, (
        rid, title, details, category, frozenset(tags), Urgency(urgency), zone, author, created, updated,
        expires, claims, met, withdrawn,
        need_status(claims=claims, met_at=met, withdrawn_at=withdrawn, expires_at=expires, now=now)))


_FIELDS: dict[type, tuple[str, ...]] = {}


def _built(cls: type[T], values: tuple[object, ...]) -> T:
    """A frozen dataclass from values already checked above, without its
    generated __init__ (one `object.__setattr__` per field made reading
    100k rows cost more than parsing their JSON). Same object either way."""
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
    if len(names) != len(values):
        raise ValueError(f"{cls.__name__} has {len(names)} fields, not {len(values)}")
    obj = object.__new__(cls)
    obj.__dict__.update(zip(names, values, strict=True))
    return obj


def offer_row(o: Offer) -> Row:
    return [o.id, o.title, o.details, o.category, sorted(o.tags), o.zone, o.author, o.quantity,
            o.recurring, o.created_at, o.updated_at, o.expires_at, o.paused, o.closed_at]


def offer_from_row(row: object, now: Millis) -> Offer:
    if not isinstance(row, list) or len(row) != 14:
        raise ValueError("an offer row has the wrong shape")
    (rid, title, details, category, tags, zone, author, quantity, recurring,
     created, updated, expires, paused, closed) = row
    if not isinstance(recurring, bool) or not isinstance(paused, bool):
        raise ValueError("a flag is not a boolean")
    closed_at, expires_at = _opt_int(closed), _int(expires)
    return Offer(
        id=RecordId(_str(rid)), title=_str(title), details=_str(details), category=_str(category),
        tags=_tags(tags), zone=_str(zone), author=MemberId(_str(author)), quantity=_opt_int(quantity),
        recurring=recurring, created_at=_int(created), updated_at=_int(updated), expires_at=expires_at,
        paused=paused, closed_at=closed_at,
        status=offer_status(paused=paused, closed_at=closed_at, expires_at=expires_at, now=now),
    )


def malformed_row(m: Malformed) -> Row:
    return [m.collection, m.id, m.reason]


def malformed_from_row(row: object) -> Malformed:
    if not isinstance(row, list) or len(row) != 3:
        raise ValueError("a report row has the wrong shape")
    return Malformed(_str(row[0]), _str(row[1]), _str(row[2]))


# --- a persisted view of needs and offers -------------------------------------

#: The collections kept as rows (the ones a large circle has many of).
SEEDED = ("needs", "offers")


@dataclass
class ViewSeed:
    """Needs and offers as a board derived them at `heads` under `context`
    (Board.seed_context: what else the derivation depended on).

    A process that loads the document starts its first view from a seed and
    re-reads only the records that changed since `heads` (Board.view), so a
    100k-record circle is not parsed again in every process."""

    heads: list[bytes]
    context: str
    rows: dict[str, list[Row]]                       # collection -> rows (needs, offers)
    writers: dict[str, dict[str, str | None]]        # collection -> record id -> verified writer
    malformed: dict[str, list[Row]]                  # collection -> unreadable-field reports
    authorship: list[Row]                            # "says it is by X but was written by Y"

    def to_json(self) -> dict[str, Any]:
        return {"heads": [h.hex() for h in self.heads], "context": self.context, "rows": self.rows,
                "writers": self.writers, "malformed": self.malformed, "authorship": self.authorship}

    @classmethod
    def from_json(cls, raw: object) -> ViewSeed:
        """Shape-checked; anything odd raises ValueError (the seed is then not used)."""
        if not isinstance(raw, dict):
            raise ValueError("a view seed is not a map")
        heads, context = raw.get("heads"), raw.get("context")
        rows, writers, malformed, authorship = (raw.get(k) for k in ("rows", "writers", "malformed", "authorship"))
        if not isinstance(heads, list) or not isinstance(context, str):
            raise ValueError("a view seed has no heads or context")
        if not (isinstance(rows, dict) and isinstance(writers, dict) and isinstance(malformed, dict)
                and isinstance(authorship, list)):
            raise ValueError("a view seed has the wrong shape")
        for name in SEEDED:
            if not isinstance(rows.get(name), list) or not isinstance(malformed.get(name), list):
                raise ValueError(f"a view seed has no {name}")
            table = writers.get(name)
            if not isinstance(table, dict) or not all(
                    isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in table.items()):
                raise ValueError(f"a view seed has unreadable writers of {name}")
        return cls([bytes.fromhex(_str(h)) for h in heads], context,
                   {k: rows[k] for k in SEEDED}, {k: writers[k] for k in SEEDED},
                   {k: malformed[k] for k in SEEDED}, authorship)
