"""scikit-image's embedded LFW crops as a face / non-face task: the CPU stand-in for ``lfw``.

``skimage.data.lfw_subset()`` holds 200 grey 25×25 crops, the first 100 faces and the last
100 background patches from the same photos; shipped with scikit-image, so no network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from skimage.data import lfw_subset
from skimage.util import img_as_float32

from pp_cluster.data.base import Dataset, Split
from pp_cluster.data.common import (
    build_dataset,
    check_bool,
    check_fraction,
    check_int,
    resize,
    stratified_split,
    take,
)

CLASSES = ("face", "non_face")
VALUE_RANGE = (-1.0, 1.0)  # same as lfw, so the face networks and decoders apply unchanged
OPTIONS: dict[str, Any] = {"size": 32, "color": False, "split_seed": 0, "test_fraction": 0.2}


def load(root: Path | None, opts: dict[str, Any]) -> Dataset:
    size = check_int("lfw-subset option size", opts["size"], 1)
    color = check_bool("lfw-subset option color", opts["color"])
    seed = check_int("lfw-subset option split_seed", opts["split_seed"], 0)
    test_fraction = check_fraction("lfw-subset option test_fraction", opts["test_fraction"])
    images = img_as_float32(lfw_subset())  # documented as uint8, some versions ship floats in [0, 1]
    n_faces = len(images) // 2
    x = resize(torch.from_numpy(images)[:, None], size)
    if color:
        x = x.repeat(1, 3, 1, 1)
    y = np.r_[np.zeros(n_faces), np.ones(len(images) - n_faces)].astype(np.int64)
    full = Split(x, torch.from_numpy(y))
    train, test = stratified_split(y, test_fraction, seed, "lfw-subset")
    meta = {
        "source": "skimage.data.lfw_subset() (100 faces, then 100 non-faces, 25x25 grey)",
        "options": {"size": size, "color": color, "split_seed": seed, "test_fraction": test_fraction},
    }
    return build_dataset("lfw-subset", take(full, train), take(full, test), CLASSES, VALUE_RANGE, meta)
