"""scikit-learn's embedded 8×8 digits, upsampled to MNIST's 28×28 so the MNIST networks
and decoders run unchanged on a laptop without the real MNIST files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from sklearn.datasets import load_digits

from pp_cluster.data.base import Dataset, Split
from pp_cluster.data.common import build_dataset, check_fraction, check_int, resize, stratified_split, take

CLASSES = tuple(str(d) for d in range(10))
VALUE_RANGE = (0.0, 1.0)
OPTIONS: dict[str, Any] = {"size": 28, "split_seed": 0, "test_fraction": 0.2}
_MAX_VALUE = 16.0  # load_digits counts set pixels in 4×4 blocks: 0..16


def load(root: Path | None, opts: dict[str, Any]) -> Dataset:
    size = check_int("digits option size", opts["size"], 1)
    seed = check_int("digits option split_seed", opts["split_seed"], 0)
    test_fraction = check_fraction("digits option test_fraction", opts["test_fraction"])
    bunch = load_digits()
    x = resize(torch.from_numpy(bunch.images).to(torch.float32)[:, None] / _MAX_VALUE, size)
    y = bunch.target.astype("int64")
    full = Split(x, torch.from_numpy(y))
    train, test = stratified_split(y, test_fraction, seed, "digits")
    meta = {
        "source": "sklearn.datasets.load_digits() (1797 images, 8x8, values 0..16)",
        "options": {"size": size, "split_seed": seed, "test_fraction": test_fraction},
    }
    return build_dataset("digits", take(full, train), take(full, test), CLASSES, VALUE_RANGE, meta)
