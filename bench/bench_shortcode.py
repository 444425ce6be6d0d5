"""The short-code trade (net/shortcode.py): CPU per side, and one whole trade
over loopback TCP against a real InviteHost.

    .venv/bin/python bench/bench_shortcode.py [--runs 200]

What it shows: the PAKE adds milliseconds, not seconds, to a join; the
inviter's cost per OPEN is bounded (at most MAX_ATTEMPTS answers per code).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from circle.net.shortcode import ShortCode, ShortInvite, ShortJoiner, parse_open
from circle.node.home import Home
from circle.node.invites import InviteHost, redeem_short
from circle.node.service import CircleService


def cpu(runs: int) -> tuple[float, float, float]:
    short = ShortCode.new()
    joiner_open, inviter, joiner_finish = [], [], []
    for _ in range(runs):
        invite = ShortInvite(short, "circle:" + "abcd-" * 30, 2e9)
        t0 = time.process_time()
        j = ShortJoiner(short)
        opening = j.open_message()
        t1 = time.process_time()
        _, ya = parse_open(opening) or ("", b"")
        reply = invite.answer(ya, 0)
        t2 = time.process_time()
        j.receive(reply)
        t3 = time.process_time()
        joiner_open.append(t1 - t0)
        inviter.append(t2 - t1)
        joiner_finish.append(t3 - t2)
    return (statistics.median(joiner_open) * 1e3, statistics.median(inviter) * 1e3,
            statistics.median(joiner_finish) * 1e3)


async def loopback(runs: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        svc = CircleService.create(Home.create(Path(tmp) / "ana", None), "Bench", "ana")
        host = InviteHost(svc)
        bound = await host.start("127.0.0.1", 0)
        address = f"127.0.0.1:{bound[1]}"
        times = []
        try:
            for _ in range(runs):
                _, short = host.create_short(10, (address,))
                t0 = time.perf_counter()
                await redeem_short(short, [address])
                times.append(time.perf_counter() - t0)
        finally:
            await host.close()
        return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    a, b, c = cpu(args.runs)
    print(f"CPU median over {args.runs}: joiner OPEN {a:.2f} ms, inviter REPLY {b:.2f} ms, joiner open reply {c:.2f} ms")
    print(f"whole trade over loopback TCP, median of {min(args.runs, 50)}: {asyncio.run(loopback(min(args.runs, 50))):.2f} ms")


if __name__ == "__main__":
    main()
