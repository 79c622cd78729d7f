"""Data sets, one module each, behind one registry.

``load_dataset(name, root, **options)`` returns a :class:`Dataset` whose images are float32
N×C×H×W in ``value_range``: (0, 1) for ``mnist``/``digits``, (-1, 1) for ``lfw``,
``lfw-subset`` and ``cifar10`` (the paper's face and CIFAR decoders end in tanh).
``lfw-subset`` and ``digits`` are embedded (scikit-image / scikit-learn) and need no files.
A new data set registers with :func:`register_dataset` (README, "Extending").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from pp_cluster.data import cifar10, digits, lfw, lfw_subset, mnist
from pp_cluster.data.base import Dataset, Split
from pp_cluster.plugins import Registry

Loader = Callable[[Path | None, dict[str, Any]], Dataset]


class DataSource(NamedTuple):
    load: Loader  # (root or None, every option filled in) -> Dataset
    options: Mapping[str, Any]  # option -> default: the data set's dataset_options
    embedded: bool = False  # reads no files: root must be None


DATASET_REGISTRY: Registry[DataSource] = Registry("data set")


def register_dataset(
    name: str, load: Loader | None = None, *, options: Mapping[str, Any] | None = None, embedded: bool = False
):
    """Register data set ``name``: ``load(root, options) -> Dataset`` reads ``root`` (its
    standard layout; None when ``embedded``) with ``options`` = the defaults of ``options``
    updated by the caller's. Without ``load``, a decorator. A sweep also needs a training
    recipe for it (``privacy.recipes.RECIPES``)."""

    def add(fn: Loader) -> Loader:
        DATASET_REGISTRY.register(name, DataSource(fn, dict(options or {}), embedded))
        return fn

    return add if load is None else add(load)


register_dataset("lfw", lfw.load, options=lfw.OPTIONS)
register_dataset("lfw-subset", lfw_subset.load, options=lfw_subset.OPTIONS, embedded=True)
register_dataset("mnist", mnist.load, options=mnist.OPTIONS)
register_dataset("digits", digits.load, options=digits.OPTIONS, embedded=True)
register_dataset("cifar10", cifar10.load, options=cifar10.OPTIONS)
DATASETS = DATASET_REGISTRY.names()  # live
EMBEDDED = DATASET_REGISTRY.names(where=lambda d: d.embedded)

__all__ = ["DATASETS", "DATASET_REGISTRY", "EMBEDDED", "Dataset", "Split", "load_dataset", "register_dataset"]


def load_dataset(name: str, root: str | Path | None = None, **options: Any) -> Dataset:
    """Load ``name`` from ``root`` (its standard layout; None for the embedded sets).
    Options are checked against the data set's own before any file is read."""
    if name not in DATASET_REGISTRY:
        raise ValueError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    source = DATASET_REGISTRY[name]
    unknown = sorted(set(options) - set(source.options))
    if unknown:
        raise ValueError(
            f"{name}: unknown option(s) {', '.join(unknown)}; valid options: "
            + ", ".join(f"{k} (default {v!r})" for k, v in source.options.items())
        )
    if source.embedded and root is not None:
        raise ValueError(f"{name} is embedded and reads no files; got root={str(root)!r} (pass root=None)")
    return source.load(None if root is None else Path(root), {**source.options, **options})
