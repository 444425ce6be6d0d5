from __future__ import annotations

from circle.cli import main

main()
