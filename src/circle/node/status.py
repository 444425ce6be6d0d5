"""`circle status`: computed with the document loaded, or read from the kept
board view (node/viewstore.py) when that fits the store as it is now; and
`keep`, which every process that derived needs and offers calls as it ends.

Here rather than in viewstore so the kept view's files and rules depend on
nothing above the store (the service, relays and snapshots depend on them).
"""

from __future__ import annotations

import bisect
from typing import Any

from circle.crdt.model import Millis
from circle.errors import CircleError
from circle.node import viewstore
from circle.node.home import Home
from circle.node.relays import STATE_KEY, undelivered
from circle.node.service import CircleService
from circle.node.snapshots import RelayParts


def _relay_state(settings: dict[str, Any]) -> str | None:
    raw = settings.get(STATE_KEY)
    return raw if isinstance(raw, str) else None


def _waiting(svc: CircleService) -> str | None:
    """What an incomplete split snapshot from a relay still waits for."""
    if not viewstore.parts_listing(svc.home, svc.config.circle_id):
        return None
    return RelayParts(svc).waiting(svc.doc)


def document_status(svc: CircleService) -> dict[str, Any]:
    """Everything `status` says, as computed with the document loaded."""
    data = svc.status()
    data["relays_undelivered_changes"] = undelivered(svc)
    data["relays_waiting"] = _waiting(svc)
    damage = svc.store.damage
    data["storage"]["damage"] = None if damage is None else {"kind": damage.kind, "message": damage.message}
    data["storage"]["from_kept_view"] = False
    return data


def kept_status(home: Home, circle_id: str, now: Millis) -> dict[str, Any] | None:
    """`status` from the kept view, or None (then the caller loads the document)."""
    got = viewstore.current(home, circle_id, now)
    if got is None:
        return None
    kept, store, config = got
    board = kept.board
    status, until = board.get("status"), board.get("valid_until")
    needs, offers = board.get("active_need_expiries"), board.get("open_offer_expiries")
    if not isinstance(status, dict) or not isinstance(until, int) or now >= until:
        return None
    if not isinstance(needs, list) or not isinstance(offers, list):
        return None
    if board.get("relay_state") != _relay_state(config.settings):
        return None  # what the relays acknowledged moved: the undelivered count would be stale
    if board.get("parts") != viewstore.parts_listing(home, circle_id):
        return None  # a part of a split snapshot arrived or was used
    try:
        status["counts"]["open_needs"] = len(needs) - bisect.bisect_right(needs, now)
        status["counts"]["open_offers"] = len(offers) - bisect.bisect_right(offers, now)
        # What comes from files other than the document is read now.
        status["circle"]["epoch"] = config.epoch
        status["peers"] = viewstore.peer_rows(config.settings)
        status["storage"].update(viewstore.storage_facts(home, store))
        status["storage"]["from_kept_view"] = True
    except (KeyError, TypeError, AttributeError):
        return None
    return status


def keep(svc: CircleService, status: dict[str, Any] | None = None) -> bool:
    """Keep this process's board view for later processes (best effort).
    True when the kept view is at this process's position afterwards."""
    try:
        if not viewstore.can_keep(svc):
            return False
        if viewstore.unchanged(svc):
            return True
        seed = svc.board.export_seed()
        if seed is None:  # needs and offers were not derived here, and deriving them costs too much
            return False
        if status is None:
            status = document_status(svc)
        return viewstore.save(svc, status, _relay_state(svc.config.settings), seed)
    except (CircleError, OSError):
        return False
