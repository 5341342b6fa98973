"""A check shared by the plot tests: a written figure is a whole PNG of a sensible size."""

from pathlib import Path

import matplotlib.image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png(path: Path) -> None:
    """``path`` is a PNG of 300-3000 px a side, alone in its folder (no temporary file left)."""
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    h, w = matplotlib.image.imread(path).shape[:2]
    assert 300 <= w <= 3000 and 300 <= h <= 3000
    assert [p.name for p in path.parent.iterdir()] == [path.name]
