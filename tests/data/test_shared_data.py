"""The loaders on the real data in ../shared/data (skipped where it is absent): the counts
the paper's setup and the public data sets fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pp_cluster.data import common, lfw, load_dataset

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One cache for the module, so the real LFW is decoded once."""
    d = tmp_path_factory.mktemp("shared_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PP_CLUSTER_CACHE", str(d))
        yield d


@pytest.fixture(scope="module")
def real_lfw(shared_data, cache):
    """The paper's LFW task with the disjoint split, and the files each split was decoded from."""
    requested: dict[str, list[str]] = {}
    real_decode = lfw.decode_images

    def spy(kind, root, files, *args):
        requested[kind] = list(files)
        return real_decode(kind, root, files, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lfw, "decode_images", spy)
        ds = load_dataset("lfw", shared_data / "lfw", min_faces=30, size=64, disjoint=True, disjoint_max=600)
    return ds, requested


def test_real_lfw_counts(real_lfw, shared_data):
    ds, _ = real_lfw
    assert (ds.num_classes, len(ds.train) + len(ds.test), len(ds.train), len(ds.test)) == (
        34,
        2370,
        1896,
        474,
    )
    assert ds.image_shape == (3, 64, 64) and ds.meta["variant"] == "lfw-deepfunneled"
    lines = (shared_data / "lfw" / "people_min30.txt").read_text().splitlines()
    expected = sorted(line.split("\t")[0] for line in lines if line.strip())  # "Name<TAB>count"
    assert list(ds.classes) == expected
    assert ds.train.y.unique().tolist() == ds.test.y.unique().tolist() == list(range(34))
    assert ds.meta["n_bad"] == 0 and ds.meta["n_people_total"] == 5749 and ds.meta["n_images_total"] == 13233
    assert -1 <= ds.train.x.min() < -0.9 and 0.9 < ds.train.x.max() <= 1


def test_real_lfw_disjoint_has_no_model_identity(real_lfw):
    ds, requested = real_lfw
    assert len(ds.disjoint) == 600 and (ds.disjoint.y == -1).all()  # capped by disjoint_max
    people = {f.split("/", 1)[0] for f in requested["lfw-disjoint"]}
    assert len(requested["lfw-disjoint"]) == 600 and not people & set(ds.classes)
    assert set(ds.meta["disjoint_people"]) == people
    assert {f.split("/", 1)[0] for f in requested["lfw"]} == set(ds.classes)


def test_real_lfw_gender(real_lfw):
    ds, _ = real_lfw
    g = ds.meta["gender"]
    assert (g["n_images"], g["labelled"], g["in_neither"], g["people_in_both"]) == (13233, 13229, 4, 5)
    for split in (ds.train, ds.test, ds.disjoint):
        labels = split.attrs["gender"]
        assert len(labels) == len(split) and set(labels.unique().tolist()) <= {-1, 0, 1}
        assert (labels == 1).any() and (labels == 0).any()


def test_real_lfw_second_load_from_cache(real_lfw, shared_data, cache, monkeypatch):
    ds, _ = real_lfw
    monkeypatch.setattr(common, "_decode", lambda *a: pytest.fail("decoded although cached"))
    again = load_dataset(
        "lfw", shared_data / "lfw" / "lfw-deepfunneled", min_faces=30, disjoint=True, disjoint_max=600
    )
    assert again.meta["cache_hit"] and again.meta["disjoint_cache_hit"]
    assert torch.equal(again.test.x, ds.test.x) and torch.equal(again.disjoint.x, ds.disjoint.x)


def test_real_mnist(shared_data):
    ds = load_dataset("mnist", shared_data / "mnist")
    assert (len(ds.train), len(ds.test), ds.image_shape) == (60000, 10000, (1, 28, 28))
    assert ds.train.y.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert ds.test.y.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert ds.train.x.mean().item() == pytest.approx(0.1307, abs=1e-4)


def test_real_cifar10_png(shared_data, cache):
    ds = load_dataset("cifar10", shared_data / "cifar10")
    assert len(ds.train) + len(ds.test) == 10000 and (len(ds.train), len(ds.test)) == (8000, 2000)
    assert ds.num_classes == 10 and ds.image_shape == (3, 32, 32) and ds.meta["n_bad"] == 0
    assert torch.cat([ds.train.y, ds.test.y]).bincount().tolist() == [1000] * 10
    assert "test split only" in ds.meta["split"]


@pytest.mark.shared_data
def test_every_driver_quick_profile_loads_its_real_data(shared_data):
    """Every driver's quick profile, given its real data, passes validation and loads (the
    CIFAR quick profile once passed an option its loader did not have)."""
    import argparse

    from pp_cluster import pipeline
    from pp_cluster.cli import add_sweep_args, spec_from_args

    roots = {
        "lfw_grid": shared_data / "lfw" / "lfw-deepfunneled",
        "mnist_table1": shared_data / "mnist",
        "mnist_table2": shared_data / "mnist",
        "cifar_vgg": shared_data / "cifar10",
    }
    for driver, root in roots.items():
        p = argparse.ArgumentParser()
        add_sweep_args(p)
        spec = spec_from_args(p.parse_args(["--quick", "--data-root", str(root)]), driver).validate()
        ds = pipeline.load_data(spec.model_spec(spec.partitions[0], 0.0, spec.seeds[0]))
        assert len(ds.train) > 0 and len(ds.test) > 0, driver
