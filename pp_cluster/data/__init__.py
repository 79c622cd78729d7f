"""Data sets, one module each, behind one registry.

``load_dataset(name, root, **options)`` returns a :class:`Dataset` whose images are float32
N×C×H×W in ``value_range``: (0, 1) for ``mnist``/``digits``, (-1, 1) for ``lfw``,
``lfw-subset`` and ``cifar10`` (the paper's face and CIFAR decoders end in tanh).
``lfw-subset`` and ``digits`` are embedded (scikit-image / scikit-learn) and need no files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pp_cluster.data import cifar10, digits, lfw, lfw_subset, mnist
from pp_cluster.data.base import Dataset, Split

_MODULES = {"lfw": lfw, "lfw-subset": lfw_subset, "mnist": mnist, "digits": digits, "cifar10": cifar10}
DATASETS: tuple[str, ...] = tuple(_MODULES)
EMBEDDED: tuple[str, ...] = ("lfw-subset", "digits")

__all__ = ["DATASETS", "EMBEDDED", "Dataset", "Split", "load_dataset"]


def load_dataset(name: str, root: str | Path | None = None, **options: Any) -> Dataset:
    """Load ``name`` from ``root`` (its standard layout; None for the embedded sets).
    Options are checked against the data set's own before any file is read."""
    if name not in _MODULES:
        raise ValueError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    module = _MODULES[name]
    unknown = sorted(set(options) - set(module.OPTIONS))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {', '.join(unknown)}; valid options: "
                         + ", ".join(f"{k} (default {v!r})" for k, v in module.OPTIONS.items()))
    if name in EMBEDDED and root is not None:
        raise ValueError(f"{name} is embedded and reads no files; got root={str(root)!r} (pass root=None)")
    return module.load(None if root is None else Path(root), {**module.OPTIONS, **options})
