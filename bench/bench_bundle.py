"""Issue 16 case 3: bundles (and a relay) carrying a document bigger than one envelope.

Builds a circle of needs with long details (3,650 random characters each,
in-process, saved once) until the saved document reaches --mb megabytes,
then measures whole `circle` processes (wait4: wall, CPU = user+sys, peak
RSS; interpreter start-up included):

0. `circle --version` and `circle status` on the big home (the cost of
   starting, and of opening the document at all);
1. `circle bundle write` on the big home;
2. `circle bundle read` of that file on a fresh member's home;
3. with --relay: `circle sync` of the big home to a fresh relay (127.0.0.1),
   then `circle sync` of the fresh member from it.

Run: .venv/bin/python bench/bench_bundle.py [--mb 50] [--relay]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def run(args: list[str], env: dict[str, str]) -> dict[str, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "circle", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0 and proc.stderr is not None:
        sys.stderr.write(proc.stderr.read().decode()[-600:])
    return {"exit": code, "wall_s": round(time.perf_counter() - t0, 2),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def build(root: Path, megabytes: float) -> tuple[Path, Path, int]:
    from circle.node.home import Home
    from circle.node.service import CircleService
    from factories import member_homes

    sam, alex = member_homes(root, ["sam", "alex"])
    svc = CircleService.open(Home.open(sam, None))
    rng = random.Random(16)
    alphabet = string.ascii_letters + string.digits + string.punctuation + " "
    svc.board.on_commit = None
    n = 0
    per_mb = 250  # about 4 KB saved per need
    while True:
        for _ in range(int(per_mb * max(0.2, megabytes / 10))):
            svc.board.add_need(f"need {n:06d}", details="".join(rng.choices(alphabet, k=3650)))
            n += 1
        if len(svc.doc.save()) >= megabytes * 1e6:
            break
    svc.persist()
    return sam, alex, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=50.0)
    ap.add_argument("--relay", action="store_true")
    ap.add_argument("--build-into", default=None, help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.build_into:  # in a child: a child forked from a big parent would report the parent's RSS
        sam, alex, n = build(Path(opts.build_into), opts.mb)
        print(json.dumps([str(sam), str(alex), n]))
        return
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--mb", str(opts.mb), "--build-into", str(tmp)],
                             check=True, capture_output=True, text=True).stdout
        sam_s, alex_s, n = json.loads(out)
        sam, alex = Path(sam_s), Path(alex_s)
        results["needs"] = n
        results["build_s"] = round(time.perf_counter() - t0, 1)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CIRCLE_")}
        a, b = dict(env, CIRCLE_HOME=str(sam)), dict(env, CIRCLE_HOME=str(alex))
        results["version"] = run(["--version"], a)
        results["status_on_big_home"] = run(["status"], a)  # the cost of opening the document at all
        stick = tmp / "circle.bundle"
        results["bundle_write"] = run(["bundle", "write", str(stick)], a)
        results["bundle_mb"] = round(stick.stat().st_size / 1e6, 2)
        results["bundle_read"] = run(["bundle", "read", str(stick)], b)
        results["status_after_read"] = run(["status"], b)
        if opts.relay:
            relay = subprocess.Popen([sys.executable, "-m", "circle.relay.server", "--host", "127.0.0.1",
                                      "--port", "0", "--data", str(tmp), "--mailbox-quota-bytes",
                                      str(512 << 20), "--log-interval", "60",
                                      # the relay's per-client byte rate is not what is measured here
                                      "--bytes-per-second", str(1 << 30), "--byte-burst", str(1 << 30),
                                      "--address-bytes-per-second", str(1 << 30),
                                      "--address-byte-burst", str(1 << 30)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            try:
                assert relay.stdout is not None
                url = "ws://127.0.0.1:" + relay.stdout.readline().rsplit(":", 1)[1].strip().rstrip("/") + "/"
                sync = ["sync", "--no-discovery", "--listen", "127.0.0.1:0", "--timeout", "600"]
                for home in (b, a):
                    subprocess.run([sys.executable, "-m", "circle", "relay", "add", url], env=home, check=True,
                                   stdout=subprocess.DEVNULL)
                results["relay_sync_send"] = run(sync, a)
                results["relay_sync_receive"] = run(sync, b)
            finally:
                relay.terminate()
                relay.wait(20)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
