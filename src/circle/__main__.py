from __future__ import annotations

from circle.cli.main import main

main()
