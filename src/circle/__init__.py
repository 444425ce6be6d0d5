"""circle: a local-first, end-to-end encrypted mutual-aid board."""

from __future__ import annotations

__version__ = "0.1.0"
