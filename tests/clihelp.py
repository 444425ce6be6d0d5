"""Run the real `circle` CLI in a subprocess against a temporary home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


class CLI:
    def __init__(self, home: Path, passphrase: str | None = None) -> None:
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CIRCLE_")}
        self.env["CIRCLE_HOME"] = str(home)
        if passphrase is not None:
            self.env["CIRCLE_PASSPHRASE"] = passphrase

    def run(self, *args: str, check: bool = True, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "circle", *args], env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"circle {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)
