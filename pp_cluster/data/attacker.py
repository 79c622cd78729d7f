"""What the attacker trains on and is evaluated on (the paper's threat models, Section V).

``train``: a fraction of the model's own training images, the strong attacker who knows
the training distribution exactly. ``disjoint``: a fraction of images of people the model
never saw as classes, the realistic attacker with their own photos. Either way the
reconstructions are scored on the model's test split, images no attacker trained on.
"""

from __future__ import annotations

import torch

from pp_cluster.data.base import Dataset, Split
from pp_cluster.data.common import take

MODES = ("train", "disjoint")


def attacker_data(
    ds: Dataset, mode: str = "train", fraction: float = 1.0, seed: int = 0
) -> tuple[Split, Split]:
    """(attacker training images, evaluation images); a fraction < 1 is a seeded random subset."""
    if mode not in MODES:
        raise ValueError(f"attacker data mode {mode!r}; choose from {', '.join(MODES)}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"attacker data fraction must be in (0, 1], got {fraction!r}")
    if mode == "disjoint" and ds.disjoint is None:
        raise ValueError(
            f"attacker data mode 'disjoint' needs {ds.name} loaded with a disjoint split "
            "(lfw: dataset option disjoint=True)"
        )
    pool = ds.train if mode == "train" else ds.disjoint
    if fraction < 1:
        n = max(1, round(fraction * len(pool)))
        idx = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        pool = take(pool, idx)
    return pool, ds.test
