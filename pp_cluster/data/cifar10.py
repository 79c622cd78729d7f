"""CIFAR-10 from the standard python pickle batches or a PNG folder tree.

Layouts: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` (root may be
that folder or its parent), or ``<root>/{train,test}/<class>/*.png``. Many public copies
hold only the test split; then (``split_test``, the default in that case) its 10,000
images are split 80/20, stratified, and meta says so.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pp_cluster.data.base import Dataset, Split, require_folder
from pp_cluster.data.common import (
    build_dataset,
    check_bool,
    check_fraction,
    check_int,
    decode_images,
    stratified_split,
    take,
)

VALUE_RANGE = (-1.0, 1.0)
SIZE = 32
BATCH_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
LAYOUTS = (
    f"<root>/{BATCH_FOLDER}/{{data_batch_1..5, test_batch, batches.meta}} (root may be {BATCH_FOLDER} "
    "itself) or <root>/{train,test}/<class>/*.png"
)
# limit_train: keep at most this many training images (a stratified subsample, seed
# split_seed), for budgets that cannot afford the full split; None keeps them all.
OPTIONS: dict[str, Any] = {"split_test": None, "split_seed": 0, "test_fraction": 0.2, "limit_train": None}


def _unpickle(path: Path) -> dict[bytes, Any]:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError) as e:
        raise ValueError(f"{path} is not a CIFAR-10 python pickle batch ({e})") from e


def _read_batches(folder: Path) -> tuple[dict[str, Split], list[str], dict[str, Any]]:
    present = [b for b in TRAIN_BATCHES if (folder / b).is_file()]
    if present and len(present) != len(TRAIN_BATCHES):
        missing = sorted(set(TRAIN_BATCHES) - set(present))
        raise FileNotFoundError(
            f"{folder}: training batches {', '.join(missing)} are missing (expected {LAYOUTS})"
        )
    for name in ("test_batch", "batches.meta"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} is missing (expected {LAYOUTS})")
    classes = [c.decode() for c in _unpickle(folder / "batches.meta")[b"label_names"]]
    splits = {}
    for split, names in (("train", present), ("test", ["test_batch"])):
        if not names:
            continue
        batches = [_unpickle(folder / n) for n in names]
        x = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, SIZE, SIZE)
        y = np.concatenate([np.asarray(b[b"labels"], dtype=np.int64) for b in batches])
        splits[split] = Split(torch.from_numpy(x), torch.from_numpy(y))
    return splits, classes, {"layout": "pickle batches", "cache_key": None}


def _read_pngs(root: Path) -> tuple[dict[str, Split], list[str], dict[str, Any]]:
    split_dirs = {s: root / s for s in ("train", "test") if (root / s).is_dir()}
    class_lists = {s: sorted(p.name for p in d.iterdir() if p.is_dir()) for s, d in split_dirs.items()}
    classes = next(iter(class_lists.values()))
    if any(c != classes for c in class_lists.values()) or len(classes) < 2:
        raise ValueError(f"{root}: class folders differ between splits or are fewer than 2: {class_lists}")
    splits, meta = {}, {"layout": "png folders", "bad": [], "cache_key": {}}
    for split, d in split_dirs.items():
        files = [f"{c}/{p.name}" for c in classes for p in sorted((d / c).glob("*.png"))]
        if not files:
            raise ValueError(f"no PNG images under {d} (expected {LAYOUTS})")
        labels = np.array([classes.index(f.split("/", 1)[0]) for f in files], dtype=np.int64)
        dec = decode_images("cifar10", d, files, SIZE, color=True)
        splits[split] = Split(torch.from_numpy(dec.images), torch.from_numpy(labels[dec.kept]))
        meta["bad"] += [f"{split}/{b}" for b in dec.bad]
        meta["cache_key"][split] = dec.cache_key
        meta[f"cache_hit_{split}"] = dec.cache_hit
    return splits, classes, meta


def load(root: Path | None, opts: dict[str, Any]) -> Dataset:
    if root is None:
        raise ValueError(
            f"cifar10 needs root: {LAYOUTS}; `pp-farm data fetch cifar10 --root DIR` downloads it"
        )
    require_folder(root, "CIFAR-10", LAYOUTS)
    split_test = (
        None if opts["split_test"] is None else check_bool("cifar10 option split_test", opts["split_test"])
    )
    seed = check_int("cifar10 option split_seed", opts["split_seed"], 0)
    test_fraction = check_fraction("cifar10 option test_fraction", opts["test_fraction"])
    limit = (
        None
        if opts["limit_train"] is None
        else check_int("cifar10 option limit_train", opts["limit_train"], 10)
    )
    folder = root / BATCH_FOLDER if (root / BATCH_FOLDER).is_dir() else root
    if (folder / "test_batch").is_file() or (folder / TRAIN_BATCHES[0]).is_file():
        splits, classes, meta = _read_batches(folder)
    elif (folder / "test").is_dir() or (folder / "train").is_dir():
        splits, classes, meta = _read_pngs(folder)
    else:
        raise ValueError(f"{root} is not a CIFAR-10 folder: expected {LAYOUTS}")
    if "test" not in splits:
        raise FileNotFoundError(f"{folder}: no test split (expected {LAYOUTS})")

    if split_test is None:
        split_test = "train" not in splits
    if not split_test and "train" not in splits:
        raise ValueError(f"cifar10 option split_test=False, but {folder} has no training split")
    if split_test:
        full = splits["test"]
        train_idx, test_idx = stratified_split(
            full.y.numpy(), test_fraction, seed, f"cifar10 test split of {folder}"
        )
        train, test = take(full, train_idx), take(full, test_idx)
        meta["split"] = (
            f"the test split only, split {1 - test_fraction:.0%}/{test_fraction:.0%} "
            f"stratified (seed {seed}) into train/test"
        )
    else:
        train, test = splits["train"], splits["test"]
        meta["split"] = "the data set's own train/test splits"
    if limit is not None and limit < len(train):
        keep, _ = stratified_split(
            train.y.numpy(), 1 - limit / len(train), seed, "cifar10 option limit_train"
        )
        train = take(train, keep)
        meta["split"] += f"; training images limited to {len(train)} (stratified, seed {seed})"
    meta.update(
        source=str(folder),
        n_bad=len(meta.get("bad", [])),
        options={
            "split_test": split_test,
            "split_seed": seed,
            "test_fraction": test_fraction,
            "limit_train": limit,
        },
    )
    return build_dataset("cifar10", train, test, classes, VALUE_RANGE, meta)
