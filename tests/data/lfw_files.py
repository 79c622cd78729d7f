"""Small LFW-layout folders of real JPEG files, written with PIL, for the loader tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def person_color(i: int) -> tuple[int, int, int]:
    """Each person's images share a colour, so a test can tell identities from pixels."""
    return (40 + 50 * (i % 4), 40 + 60 * (i // 4 % 4), 200 - 30 * (i // 16))


def write_lfw(root: Path, counts: dict[str, int], side: int = 24) -> Path:
    """``root/<Person>/<Person>_NNNN.jpg``: person i's images are flat ``person_color(i)``
    with a small grey square at an image-specific place."""
    rng = np.random.default_rng(0)
    for i, (person, n) in enumerate(sorted(counts.items())):
        (root / person).mkdir(parents=True)
        for k in range(1, n + 1):
            a = np.empty((side, side, 3), np.uint8)
            a[:] = person_color(i)
            r, c = rng.integers(0, side - 4, size=2)
            a[r:r + 4, c:c + 4] = 128
            Image.fromarray(a).save(root / person / f"{person}_{k:04d}.jpg", quality=95)
    return root
