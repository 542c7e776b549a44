"""How every benchmark hands over its figures: printed one per line, and written as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def report(figures: dict[str, Any], path: Path, *, hide: tuple[str, ...] = ()) -> None:
    """Print ``figures`` (one ``key: value`` line each, but for the keys in ``hide``: those
    too long for a line, which a benchmark prints its own way) and write them all to
    ``path`` as JSON."""
    width = max((len(k) for k in figures), default=0)
    for key, value in figures.items():
        if key not in hide:
            print(f"{key:>{width}}: {value}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {path}")
