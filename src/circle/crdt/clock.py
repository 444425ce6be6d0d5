"""Clock rules: how far a writer's clock is trusted (issue 16 case 7).

Every time in the document (`created_at`, `out_at`, `expires_at`, ...) is
the *writer's* claim, read off its own clock. A laptop whose clock is a day
slow, or a modified client, must not decide anything for the others. The
rules, and why each is shaped so:

1. **Hold queues use causal order first** (`order_holds`). A hold whose
   creating change causally follows another hold of the same tool (its
   writer had already seen that hold) queues behind it, whatever either
   timestamp says. Only holds that are truly concurrent (neither device had
   seen the other's) fall back to `created_at`, then member id, then id.
   This depends on the document alone, so two members holding the same
   changes compute the same queue, whatever order the changes arrived in:
   the queue decides who may borrow, and two devices that disagreed would
   let both (or neither) borrow. Trade-off: between concurrent holds a slow
   clock still wins; no device can tell who asked first there, and a rule
   based on when *this* device first saw each hold would make views diverge.

2. **Deadlines (need and offer expiry, loan due dates) are judged against
   when this device first saw the record** (`effective_shift`). A record's
   anchor time (`created_at`, a loan's `out_at`) is clamped into
   `[first_seen - LATE_TOLERANCE_MS, first_seen + FUTURE_SKEW_MS]`, and
   every derived time of the record (expiry, due date, a need's or offer's
   sort time) moves by the same amount. A loan's `out_at` itself stays as
   written: it decides which of concurrent loans is current, and that must
   be the same on every device (like the hold queue). So a need posted with a clock 15 days slow is not
   expired on arrival, one posted a year ahead does not stay open a year,
   and a loan written 10 days in the past is not overdue at once.
   First-seen times are local facts (the service keeps them in the circle's
   directory, sealed like the rest of the home), recorded only for records
   that arrive from elsewhere with an implausible anchor; every other
   record is read as written. Deadlines are each device's judgement against
   its own clock anyway, so a per-device rule costs no agreement the
   document ever had. Trade-offs: a record that honestly took longer than
   `LATE_TOLERANCE_MS` to arrive (a member offline for a week) is credited
   only that much age here, so it expires later here than on its writer's
   device; the first copy a device gets (joining) is history, read as
   written except for anchors beyond `FUTURE_SKEW_MS` in the future; the
   shift is fixed per record, so a later edit of its deadline by a writer
   whose clock was fixed in between moves by the old shift too.

3. **Invites**: the inviter decides expiry on its own clock; a joiner only
   gives up on its own beyond a stated skew (`node/invites.py`).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeVar

from circle.crdt.model import Millis

#: How long a change may honestly take to reach this device and still be
#: credited its full age (offline members, bundles carried by hand).
LATE_TOLERANCE_MS: Millis = 3 * 24 * 60 * 60 * 1000
#: How far ahead of this device's clock a writer's clock may plausibly be.
FUTURE_SKEW_MS: Millis = 10 * 60 * 1000

#: Collections whose records carry an anchor time, and its field.
ANCHORS = {"needs": "created_at", "offers": "created_at", "loans": "out_at"}


def seen_key(collection: str, record_id: str) -> str:
    return f"{collection}/{record_id}"


def plausible(claimed: int, first_seen: Millis, *, history: bool = False) -> bool:
    """Whether a record's anchor time fits when this device first saw it.

    For history (the first copy a device gets) only a future claim is
    implausible: an old record in it is simply old."""
    if claimed > first_seen + FUTURE_SKEW_MS:
        return False
    return history or claimed >= first_seen - LATE_TOLERANCE_MS


def effective_shift(claimed: int, first_seen: Millis | None) -> Millis:
    """How far to move a record's derived times: 0 unless this device
    recorded when it first saw the record (its anchor was implausible)."""
    if first_seen is None:
        return 0
    clamped = min(max(claimed, first_seen - LATE_TOLERANCE_MS), first_seen + FUTURE_SKEW_MS)
    return clamped - claimed


class _Queued(Protocol):
    @property
    def order_key(self) -> tuple[int, str, str]: ...


Q = TypeVar("Q", bound=_Queued)


def order_holds(holds: Sequence[Q], precedes: Callable[[Q, Q], bool]) -> list[Q]:
    """A queue in causal order: `precedes(a, b)` says `b`'s writer had seen
    `a` when it wrote `b`. Among holds none of which precedes another, the
    smallest `order_key` goes first (a deterministic topological sort, so
    every device with the same changes gets the same queue)."""
    if len(holds) < 2:
        return list(holds)
    n = len(holds)
    after: list[list[int]] = [[] for _ in range(n)]
    waiting_on = [0] * n
    for i in range(n):
        for j in range(n):
            if i != j and precedes(holds[i], holds[j]):
                after[i].append(j)
                waiting_on[j] += 1
    ready = [(holds[i].order_key, i) for i in range(n) if waiting_on[i] == 0]
    heapq.heapify(ready)
    out: list[Q] = []
    while ready:
        _key, i = heapq.heappop(ready)
        out.append(holds[i])
        for j in after[i]:
            waiting_on[j] -= 1
            if waiting_on[j] == 0:
                heapq.heappush(ready, (holds[j].order_key, j))
    if len(out) < n:  # a cycle cannot happen in a causal history; never drop a hold if it did
        out += sorted((h for h in holds if h not in out), key=lambda h: h.order_key)
    return out


def first_seen_of(seen: Mapping[str, Millis], collection: str, record_id: str) -> Millis | None:
    return seen.get(seen_key(collection, record_id))
