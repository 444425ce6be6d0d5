"""Child process for crash and multi-process tests.

usage: store_child.py HOME MODE [N]
  append:  add needs forever, printing each id once `add_need` returned (= saved)
  follow:  refresh every 50 ms; add N needs of its own while following; print
           every title it sees as JSON lines ("seen") until told to stop (stdin EOF)
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from circle.node.home import Home
from circle.node.service import CircleService


def main() -> None:
    home = Home.open(Path(sys.argv[1]), None)
    svc = CircleService.open(home)
    mode = sys.argv[2]
    if mode == "append":
        i = 0
        while True:
            rid = svc.board.add_need(f"crash need {i}", details="x" * (i % 300))
            print(rid, flush=True)
            i += 1
    elif mode == "follow":
        own = int(sys.argv[3])
        stop = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
        written = 0
        while not stop.is_set():
            svc.refresh()
            if written < own:
                svc.board.add_need(f"follower {written}")
                written += 1
            titles = sorted(n.title for n in svc.board.needs("all"))
            print(json.dumps({"t": time.time(), "titles": titles}), flush=True)
            time.sleep(0.05)


if __name__ == "__main__":
    main()
