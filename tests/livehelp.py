"""In-process live sync between real homes over loopback TCP."""

from __future__ import annotations

from pathlib import Path

from circle.node.home import Home
from circle.node.live import LiveSync
from circle.node.service import CircleService


def open_service(path: Path) -> CircleService:
    return CircleService.open(Home.open(path, None))


async def sync_pair(a: CircleService, b: CircleService, timeout: float = 10.0) -> list[object]:
    """`b` dials `a` once (like `circle sync --peer`); returns b's reports."""
    server = LiveSync(a, listen=("127.0.0.1", 0), discovery=False)
    await server.start()
    assert server.bound is not None
    client = LiveSync(b, listen=None, discovery=False, manual_peers=[f"127.0.0.1:{server.bound[1]}"])
    await client.start(keep_connected=False)
    try:
        reports = await client.sync_round(timeout)
    finally:
        await client.close()
        await server.close()
    # the server applies the last changes on the loop: let it settle
    a.remote_changed() if a.doc.heads() != a._persisted else None
    return list(reports)
