"""MNIST from the original idx files (gzip or not), parsed directly.

torchvision's ``MNIST`` class is not used because it checks the md5 of the ``.gz`` files,
and a faithful copy rebuilt from lossless images (same pixels, other gzip bytes) fails it.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from pp_cluster.data.base import Dataset, Split, require_folder
from pp_cluster.data.common import build_dataset, check_int

CLASSES = tuple(str(d) for d in range(10))
VALUE_RANGE = (0.0, 1.0)
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
LAYOUT = "<root>/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"
OPTIONS: dict[str, Any] = {"limit_train": None, "limit_test": None}
_UBYTE = 0x08  # the idx type code of unsigned bytes, the only type MNIST uses


def _find(root: Path, stem: str) -> Path:
    for path in (root / stem, root / f"{stem}.gz"):
        if path.is_file():
            return path
    raise FileNotFoundError(f"MNIST file {root / stem}[.gz] is missing (expected layout {LAYOUT})")


def read_idx(path: Path) -> np.ndarray:
    """An idx array: 2 zero bytes, a type byte, the number of dimensions, big-endian int32 sizes."""
    with gzip.open(path) if path.suffix == ".gz" else open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _UBYTE:
        raise ValueError(f"{path} is not an unsigned-byte idx file (header {data[:4].hex()!r})")
    ndim = data[3]
    shape = tuple(np.frombuffer(data, ">i4", count=ndim, offset=4).tolist())
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise ValueError(
            f"{path}: header says {shape} = {int(np.prod(shape))} bytes, file has {len(data) - offset}"
        )
    return np.frombuffer(data, np.uint8, offset=offset).reshape(shape)


def _subset(y: np.ndarray, limit: int | None) -> np.ndarray:
    """A stratified sample of ``limit`` images (fixed seed 0): every digit in proportion, so
    a quick run still sees all classes."""
    if limit is None or limit >= len(y):
        return np.arange(len(y))
    idx, _ = train_test_split(np.arange(len(y)), train_size=limit, stratify=y, random_state=0)
    return np.sort(idx)


def load(root: Path | None, opts: dict[str, Any]) -> Dataset:
    if root is None:
        raise ValueError(
            f"mnist needs root: the folder with the idx files ({LAYOUT}); "
            "`pp-farm data fetch mnist --root DIR` downloads them"
        )
    require_folder(root, "MNIST", LAYOUT)
    limits = {
        split: None
        if opts[f"limit_{split}"] is None
        else check_int(f"mnist option limit_{split}", opts[f"limit_{split}"], len(CLASSES))
        for split in FILES
    }
    paths = {split: (_find(root, img), _find(root, lab)) for split, (img, lab) in FILES.items()}
    splits, sources = {}, {}
    for split, (img_path, lab_path) in paths.items():
        x, y = read_idx(img_path), read_idx(lab_path)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"{img_path} {x.shape} and {lab_path} {y.shape} are not N×28×28 images with N labels"
            )
        if y.max(initial=0) >= len(CLASSES):
            raise ValueError(f"{lab_path}: label {int(y.max())} is not a digit")
        idx = _subset(y, limits[split])
        splits[split] = Split(torch.from_numpy(x[idx, None]), torch.from_numpy(y[idx].astype(np.int64)))
        sources[split] = [str(img_path), str(lab_path)]
    meta = {
        "source": str(root),
        "files": sources,
        "options": {f"limit_{k}": v for k, v in limits.items()},
        "subset": "stratified sample (seed 0) when limit_train/limit_test is set",
    }
    return build_dataset("mnist", splits["train"], splits["test"], CLASSES, VALUE_RANGE, meta)
