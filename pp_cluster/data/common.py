"""What every loader shares: option checks, the on-disk image cache, value ranges, splits.

The cache exists because decoding thousands of JPEG/PNG files costs seconds per Ray
worker per trial, while reading one uint8 ``.npz`` costs milliseconds. It is keyed by the
files' content fingerprint (relative paths, sizes, mtimes) and the decoding options, lives
under ``$PP_CLUSTER_CACHE`` (default ``~/.cache/pp_cluster``; never next to the data, which
may be read-only), and is written atomically so concurrent workers never read half a file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from sklearn.model_selection import train_test_split
from torchvision.transforms.v2 import functional as TF

from pp_cluster.data.base import Dataset, Split

# Bump when decoding changes (resampling filter, layout), so old cache entries are not reused.
_CACHE_FORMAT = 2
# Corrupt files may be skipped (and counted) only while they stay this rare.
MAX_BAD_FRACTION = 0.01


# -- options ------------------------------------------------------------------------
def check_int(what: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{what} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_bool(what: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{what} must be True or False, got {value!r}")
    return bool(value)


def check_fraction(what: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"{what} must be a number in (0, 1), got {value!r}")
    return float(value)


# -- image decoding and the cache -----------------------------------------------------
def cache_dir() -> Path:
    """Read at every call so a test or worker can point it elsewhere with the env var."""
    return Path(os.environ.get("PP_CLUSTER_CACHE") or Path.home() / ".cache" / "pp_cluster")


@dataclass(frozen=True)
class Decoded:
    """Decoded images of ``files`` minus the corrupt ones: ``images[i]`` is ``files[kept[i]]``."""

    images: np.ndarray  # uint8 N×C×H×W
    kept: np.ndarray  # int64 indices into the requested files
    bad: tuple[str, ...]  # relative paths that failed to decode
    cache_key: str
    cache_hit: bool


def _decode(path: Path, size: int, color: bool) -> np.ndarray | None:
    try:
        with Image.open(path) as im:
            # JPEG only: let libjpeg scale down by 1/2..1/8 while decoding (never below
            # ``size``), about 1.5x faster for LFW's 250x250 -> 64x64; a no-op for PNG.
            im.draft("RGB" if color else "L", (size, size))
            im = im.convert("RGB" if color else "L")
            if im.size != (size, size):
                # PIL widens the bilinear kernel when shrinking, i.e. antialiased.
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            a = np.asarray(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    return a.transpose(2, 0, 1) if color else a[None]


def decode_images(kind: str, root: Path, files: Sequence[str], size: int, color: bool) -> Decoded:
    """Decode ``root/f`` for every relative path in ``files`` to ``size``×``size`` uint8,
    served from the cache when the same files (same sizes and mtimes) were decoded with the
    same options before. Corrupt files are dropped and listed; more than 1 % is an error."""
    stats = []
    base = str(root)
    for f in files:
        st = os.stat(os.path.join(base, f))  # not pathlib: ~3x faster for thousands of files
        stats.append((f, st.st_size, st.st_mtime_ns))
    blob = json.dumps({"format": _CACHE_FORMAT, "kind": kind, "size": size, "color": color, "files": stats})
    key = hashlib.sha256(blob.encode()).hexdigest()
    path = cache_dir() / f"{kind}-{key[:24]}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                return Decoded(z["images"], z["kept"], tuple(z["bad"].tolist()), key, True)
        except (OSError, KeyError, ValueError):
            pass  # unreadable entry (e.g. disk full earlier): decode again and overwrite it

    workers = min(32, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:  # PIL releases the GIL while decoding/resizing
        decoded = list(pool.map(lambda f: _decode(root / f, size, color), files, chunksize=64))
    kept = np.array([i for i, a in enumerate(decoded) if a is not None], dtype=np.int64)
    bad = tuple(files[i] for i, a in enumerate(decoded) if a is None)
    if len(bad) > MAX_BAD_FRACTION * len(files):
        shown = ", ".join(str(root / b) for b in bad[:5])
        raise ValueError(
            f"{len(bad)} of {len(files)} images under {root} could not be decoded "
            f"(more than {MAX_BAD_FRACTION:.0%}; not skipping that many): {shown}"
        )
    channels = 3 if color else 1
    images = (
        np.stack([decoded[i] for i in kept]) if len(kept) else np.zeros((0, channels, size, size), np.uint8)
    )

    try:
        _write_atomic(path, images=images, kept=kept, bad=np.array(bad, dtype=np.str_))
    except OSError as e:  # a full or read-only cache must not fail the trial, only slow the next one
        warnings.warn(
            f"could not write the image cache {path} ({e}); set PP_CLUSTER_CACHE to a writable folder",
            RuntimeWarning,
            stacklevel=2,
        )
    return Decoded(images, kept, bad, key, False)


def _write_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Write to a dot-temp file in the same folder, then rename: concurrent Ray workers see
    either no entry or a whole one, never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a shared cluster cache is read by every user
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- tensors --------------------------------------------------------------------------
def to_value_range(x: np.ndarray | torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    """uint8 (0..255) or float in [0, 1] -> a new float32 tensor in ``value_range``.

    NumPy, not torch: torch's intra-op threads spin when Ray workers share the cores, which
    made this 3x slower than single-threaded NumPy in a loaded 2-core measurement."""
    a = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    lo, hi = value_range
    scale = (hi - lo) / 255 if a.dtype == np.uint8 else hi - lo
    out = np.multiply(a, np.float32(scale), dtype=np.float32)  # always a fresh array
    out += np.float32(lo)
    return torch.from_numpy(out)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear, antialiased when shrinking: a convex combination, so [0, 1] stays [0, 1]."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return TF.resize(x, [size, size], antialias=True)


# -- splits ---------------------------------------------------------------------------
def take(split: Split, idx: np.ndarray | torch.Tensor) -> Split:
    """Rows ``idx`` of every (CPU) tensor, indexed through NumPy (see :func:`to_value_range`:
    10-40x faster than torch's threaded indexing on busy cores)."""
    idx = np.asarray(idx, dtype=np.int64)

    def pick(t: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(t.numpy()[idx])

    return Split(pick(split.x), pick(split.y), {k: pick(v) for k, v in split.attrs.items()})


def stratified_split(
    y: np.ndarray, test_fraction: float, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train/test indices with every class in both (sklearn's stratified split);
    says which option to change when the classes are too small for that."""
    y = np.asarray(y)
    classes, counts = np.unique(y, return_counts=True)
    n, n_test, smallest = len(y), math.ceil(test_fraction * len(y)), int(counts.min()) if len(counts) else 0
    if smallest < 2 or n_test < len(classes) or n - n_test < len(classes):
        raise ValueError(
            f"{what}: cannot split {n} images of {len(classes)} classes (smallest has "
            f"{smallest}) with test_fraction={test_fraction} so that every class "
            "is in both splits; every class needs >= 2 images and each split >= 1 per class"
        )
    train, test = train_test_split(np.arange(n), test_size=test_fraction, stratify=y, random_state=seed)
    return np.sort(train), np.sort(test)


def build_dataset(
    name: str,
    train: Split,
    test: Split,
    classes: Sequence[str],
    value_range: tuple[float, float],
    meta: dict[str, Any],
    disjoint: Split | None = None,
) -> Dataset:
    """The one place that converts images (uint8, or float in [0, 1]) to ``value_range``
    (after splitting, so the uint8 copy is the one indexed) and fills the counts."""
    train, test = (Split(to_value_range(s.x, value_range), s.y, s.attrs) for s in (train, test))
    if disjoint is not None:
        disjoint = Split(to_value_range(disjoint.x, value_range), disjoint.y, disjoint.attrs)
    meta = {
        "cache_key": None,
        "n_bad": 0,
        "bad": [],
        "n_skipped": 0,
        **meta,
        "n_train": len(train),
        "n_test": len(test),
        "n_classes": len(classes),
        "n_disjoint": None if disjoint is None else len(disjoint),
    }
    return Dataset(
        name=name,
        train=train,
        test=test,
        classes=tuple(classes),
        image_shape=tuple(int(s) for s in train.x.shape[1:]),
        value_range=value_range,
        meta=meta,
        disjoint=disjoint,
    )
