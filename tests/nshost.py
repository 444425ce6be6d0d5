"""A circle host for multi-namespace tests: run it *inside* a network namespace.

    CIRCLE_NSHOST_CONFIG=/path/config.json ip netns exec NS python tests/nshost.py

It refuses to run in the machine's own network namespace (so mDNS can never
reach a real interface by accident).

Config (JSON):
    epoch_key      hex, 32 bytes (required)
    interfaces     list of local IPs to bind mDNS to (required)
    port           TCP port to advertise (default 7420)
    manual_peers   list of "host:port" (default [])
    clock_file     optional path; its content (a float, seconds) is added to
                   time.time() on every read -- lets a test move this host's
                   clock to make tag windows rotate
    poll_interval  seconds between window checks (default 0.5)
    heartbeat / max_silence   liveness timings (default: the Discovery defaults)
    advertise / browse   booleans (default true)
    # identity-ish fields a full node would hold; never put on the wire:
    circle_name, handle, identity_secret (hex)

Output: one JSON object per line on stdout:
    {"event": "advertising", "instance": ..., "server": ..., "tag": ..., "nonce": ..., "window": ...}
    {"event": "ready"}
    {"event": "found", "address": ..., "port": ..., "manual": ...}
    {"event": "lost", "address": ..., "port": ...}
    {"event": "ignored", "instance": ...}   (an advert not under our key)
    {"event": "matched", "instance": ...}   (an advert newly accepted as a member's)
    {"event": "stopped"}
SIGTERM/SIGINT stop it cleanly (goodbye packets are sent).

The lead extends this to run a whole node (store + TCP sync) per namespace;
keep the event vocabulary append-only.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from circle.net.discovery import (
    Advert,
    AdvertIgnored,
    AdvertMatched,
    Discovery,
    DiscoveryEvent,
    PeerFound,
    PeerLost,
)
from circle.net.keys import EpochKey


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def in_own_netns() -> bool:
    """True only inside a named namespace (``ip netns``) or a loopback-only one.

    (PID 1's namespace is not readable on every machine, so we look for our
    namespace among the named ones instead.)
    """
    try:
        mine = os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return False
    run = Path("/var/run/netns")
    if run.is_dir():
        for entry in run.iterdir():
            try:
                if entry.stat().st_ino == mine:
                    return True
            except OSError:
                continue
    import ifaddr  # zeroconf's dependency

    return all(a.name == "lo" for a in ifaddr.get_adapters())  # e.g. `unshare -n`


def make_clock(clock_file: str | None) -> Callable[[], float]:
    if not clock_file:
        return time.time
    path = Path(clock_file)

    def clock() -> float:
        try:
            offset = float(path.read_text().strip() or 0)
        except (OSError, ValueError):
            offset = 0.0
        return time.time() + offset

    return clock


def on_event(event: DiscoveryEvent) -> None:
    if isinstance(event, PeerFound):
        emit({"event": "found", "address": event.address, "port": event.port,
              "manual": event.manual})
    elif isinstance(event, PeerLost):
        emit({"event": "lost", "address": event.address, "port": event.port})
    elif isinstance(event, AdvertIgnored):
        emit({"event": "ignored", "instance": event.instance})
    elif isinstance(event, AdvertMatched):
        emit({"event": "matched", "instance": event.instance})


def on_publish(advert: Advert) -> None:
    emit({"event": "advertising", "instance": advert.instance, "server": advert.server,
          "tag": advert.properties["t"], "nonce": advert.properties["n"], "window": advert.window,
          "port": advert.port, "addresses": list(advert.addresses)})


async def run(cfg: dict[str, Any]) -> None:
    key = EpochKey(bytes.fromhex(cfg["epoch_key"]))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    disc = Discovery(
        key,
        int(cfg.get("port", 7420)),
        interfaces=list(cfg["interfaces"]),
        manual_peers=cfg.get("manual_peers", []),
        advertise=bool(cfg.get("advertise", True)),
        browse=bool(cfg.get("browse", True)),
        clock=make_clock(cfg.get("clock_file")),
        poll_interval=float(cfg.get("poll_interval", 0.5)),
        on_event=on_event,
        on_publish=on_publish,
        report_adverts=True,
        **{k: float(cfg[k]) for k in ("heartbeat", "max_silence") if k in cfg},
    )
    await disc.start()
    emit({"event": "ready"})
    try:
        await stop.wait()
    finally:
        await disc.close()
        emit({"event": "stopped"})


def main() -> None:
    if not in_own_netns():
        sys.exit("nshost: refusing to run in the machine's own network namespace")
    cfg_path = os.environ.get("CIRCLE_NSHOST_CONFIG")
    if not cfg_path:
        sys.exit("nshost: set CIRCLE_NSHOST_CONFIG to a JSON config file")
    cfg = json.loads(Path(cfg_path).read_text())
    if not cfg.get("interfaces"):
        sys.exit("nshost: config must list interfaces explicitly")
    asyncio.run(run(cfg))


if __name__ == "__main__":
    main()
