"""The embedded data sets (no files, no network), the registry's option checks, and
attacker_data's two threat models."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from skimage.data import lfw_subset
from sklearn.datasets import load_digits

from pp_cluster.data import DATASETS, Dataset, Split, load_dataset
from pp_cluster.data.attacker import attacker_data


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access forbidden in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def _check_splits(ds: Dataset, n_total: int) -> None:
    assert ds.train.x.dtype == torch.float32 and ds.train.y.dtype == torch.int64
    assert len(ds.train) + len(ds.test) == n_total
    assert ds.meta["n_train"] == len(ds.train) and ds.meta["n_test"] == len(ds.test)
    assert tuple(ds.train.x.shape[1:]) == ds.image_shape == tuple(ds.test.x.shape[1:])
    lo, hi = ds.value_range
    for s in (ds.train, ds.test):
        assert s.x.min() >= lo and s.x.max() <= hi
        assert set(s.y.tolist()) == set(range(ds.num_classes))  # stratified: every class in both


def test_registry_names():
    assert set(DATASETS) == {"lfw", "lfw-subset", "mnist", "digits", "cifar10"}


def test_lfw_subset_offline(no_network):
    ds = load_dataset("lfw-subset")
    _check_splits(ds, 200)
    assert ds.classes == ("face", "non_face") and ds.image_shape == (1, 32, 32)
    assert ds.value_range == (-1.0, 1.0)
    assert (len(ds.test), ds.test.y.bincount().tolist()) == (40, [20, 20])
    assert ds.train.x.min() < -0.9 and ds.train.x.max() > 0.9  # uses the range, not a sliver of it
    # The face class really is skimage's first 100 images: the mean face is brighter than
    # a degenerate constant, and equals the resized source mean to within resampling error.
    src = lfw_subset().astype(np.float32)
    src = src / 255.0 if src.max() > 1 else src
    x = torch.cat([ds.train.x, ds.test.x])
    y = torch.cat([ds.train.y, ds.test.y])
    face_mean = (x[y == 0].mean() + 1) / 2
    assert abs(face_mean.item() - src[:100].mean()) < 0.01


def test_lfw_subset_options_and_seed(no_network):
    ds = load_dataset("lfw-subset", size=25, color=True, split_seed=3)
    assert ds.image_shape == (3, 25, 25)
    assert torch.equal(ds.train.x[:, 0], ds.train.x[:, 2])  # grey repeated to 3 channels
    other = load_dataset("lfw-subset", size=25, split_seed=4)
    assert not torch.equal(ds.test.x[:, :1], other.test.x)


def test_digits_offline(no_network):
    ds = load_dataset("digits")
    _check_splits(ds, 1797)
    assert ds.image_shape == (1, 28, 28) and ds.value_range == (0.0, 1.0) and ds.num_classes == 10
    assert ds.train.x.max() == pytest.approx(1.0, abs=0.02)
    small = load_dataset("digits", size=8)
    bunch = load_digits()
    # At the native size the pixels are load_digits' values / 16, label for label.
    first = small.train.x[0, 0].numpy()
    matches = np.all(np.isclose(bunch.images / 16.0, first, atol=1e-6), axis=(1, 2))
    assert matches.any() and bunch.target[matches][0] == small.train.y[0].item()


@pytest.mark.parametrize(
    "name, options, match",
    [
        ("digits", {"sizes": 28}, "valid options: size"),
        ("lfw", {"min_face": 3}, "min_faces"),
        ("mnist", {"limit": 5}, "limit_train"),
        ("digits", {"size": 0}, "size"),
        ("digits", {"test_fraction": 1.5}, "test_fraction"),
        ("lfw-subset", {"color": "yes"}, "color"),
    ],
)
def test_bad_options(name, options, match):
    with pytest.raises(ValueError, match=match):
        load_dataset(name, **options)


def test_unknown_name_and_root_for_embedded(tmp_path):
    with pytest.raises(ValueError, match="choose from"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="embedded"):
        load_dataset("digits", tmp_path)


def _toy(n_train: int = 40, n_test: int = 10, disjoint: bool = False) -> Dataset:
    def split(n: int, offset: int, y=None) -> Split:
        ids = torch.arange(offset, offset + n, dtype=torch.float32)
        return Split(ids.view(n, 1, 1, 1), torch.arange(n) % 2 if y is None else torch.full((n,), y))

    return Dataset(
        "toy",
        split(n_train, 0),
        split(n_test, 1000),
        ("a", "b"),
        (1, 1, 1),
        (0.0, 1.0),
        {},
        split(30, 2000, -1) if disjoint else None,
    )


def test_attacker_data_train():
    ds = _toy()
    train, evaluation = attacker_data(ds)
    assert train is ds.train and evaluation is ds.test
    quarter, _ = attacker_data(ds, "train", 0.25, seed=1)
    ids = quarter.x.flatten()
    assert len(quarter) == 10 and set(ids.tolist()) <= set(range(40)) and len(set(ids.tolist())) == 10
    again, _ = attacker_data(ds, "train", 0.25, seed=1)
    other, _ = attacker_data(ds, "train", 0.25, seed=2)
    assert torch.equal(again.x, quarter.x) and not torch.equal(other.x, quarter.x)


def test_attacker_data_disjoint():
    ds = _toy(disjoint=True)
    train, evaluation = attacker_data(ds, "disjoint", 0.5)
    assert len(train) == 15 and (train.x >= 2000).all() and (train.y == -1).all()
    assert evaluation is ds.test
    with pytest.raises(ValueError, match="disjoint=True"):
        attacker_data(_toy(), "disjoint")


@pytest.mark.parametrize("mode, fraction", [("public", 1.0), ("train", 0.0), ("train", 1.5), ("train", True)])
def test_attacker_data_validation(mode, fraction):
    with pytest.raises(ValueError, match="mode|fraction"):
        attacker_data(_toy(), mode, fraction)
