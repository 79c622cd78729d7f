"""MNIST idx files and both CIFAR-10 layouts, written here in their standard formats, and
fetch_dataset's offline failure."""

from __future__ import annotations

import gzip
import pickle
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pp_cluster.data import load_dataset
from pp_cluster.data.fetch import fetch_dataset

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _idx(array: np.ndarray) -> bytes:
    return (
        bytes([0, 0, 0x08, array.ndim])
        + np.array(array.shape, ">i4").tobytes()
        + array.astype(np.uint8).tobytes()
    )


def _write_mnist(root: Path, n_train: int = 50, n_test: int = 20, gz: bool = True) -> dict[str, np.ndarray]:
    """Every image is flat at 10 × its label, so pixels and labels can be checked against each other."""
    root.mkdir(parents=True, exist_ok=True)
    labels = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = np.arange(n) % 10
        x = np.repeat(10 * y, 28 * 28).reshape(n, 28, 28)
        for name, arr in ((f"{prefix}-images-idx3-ubyte", x), (f"{prefix}-labels-idx1-ubyte", y)):
            data = _idx(arr)
            (root / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
        labels[prefix] = y
    return labels


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx(tmp_path, gz):
    labels = _write_mnist(tmp_path, gz=gz)
    ds = load_dataset("mnist", tmp_path)
    assert (len(ds.train), len(ds.test), ds.image_shape, ds.value_range) == (50, 20, (1, 28, 28), (0.0, 1.0))
    assert ds.train.y.dtype == torch.int64 and ds.train.y.tolist() == labels["train"].tolist()
    assert torch.allclose(ds.test.x.mean(dim=(1, 2, 3)), ds.test.y * 10 / 255.0)


def test_mnist_limits_are_stratified(tmp_path):
    _write_mnist(tmp_path, n_train=100)
    ds = load_dataset("mnist", tmp_path, limit_train=30)
    assert len(ds.train) == 30 and ds.train.y.bincount().tolist() == [3] * 10 and len(ds.test) == 20
    assert ds.meta["options"] == {"limit_train": 30, "limit_test": None}
    with pytest.raises(ValueError, match="limit_test"):
        load_dataset("mnist", tmp_path, limit_test=3)


def test_mnist_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("mnist", tmp_path / "missing")
    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte\[\.gz\] is missing"):
        load_dataset("mnist", tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.zeros(7)))  # 7 labels for 20 images
    with pytest.raises(ValueError, match="not N×28×28 images with N labels"):
        load_dataset("mnist", tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)  # float idx
    with pytest.raises(ValueError, match="not an unsigned-byte idx file"):
        load_dataset("mnist", tmp_path)


def _write_cifar_batches(folder: Path, per_batch: int = 20, n_train_batches: int = 5) -> None:
    """The python pickle layout; image i is flat with red = label * 20 + 5."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, n_train_batches + 1)] + ["test_batch"]
    for name in names:
        y = rng.permutation(np.arange(per_batch) % 10)
        x = np.zeros((per_batch, 3, 32, 32), np.uint8)
        x[:, 0] = (y * 20 + 5)[:, None, None]
        batch = {
            b"batch_label": name.encode(),
            b"labels": y.tolist(),
            b"data": x.reshape(per_batch, -1),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {
        b"label_names": [c.encode() for c in CIFAR_CLASSES],
        b"num_vis": 3072,
        b"num_cases_per_batch": per_batch,
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))


def _red_label(split) -> torch.Tensor:
    return torch.round(((split.x[:, 0].mean(dim=(1, 2)) + 1) / 2 * 255 - 5) / 20).long()


def test_cifar_pickle_batches(tmp_path):
    _write_cifar_batches(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", tmp_path)  # the parent of cifar-10-batches-py
    assert (len(ds.train), len(ds.test), ds.image_shape, ds.value_range) == (
        100,
        20,
        (3, 32, 32),
        (-1.0, 1.0),
    )
    assert ds.classes == tuple(CIFAR_CLASSES) and ds.meta["layout"] == "pickle batches"
    assert torch.equal(_red_label(ds.train), ds.train.y) and torch.equal(_red_label(ds.test), ds.test.y)
    assert (ds.train.x[:, 1:] == -1).all()  # the channel-major row layout is read as C×H×W
    assert ds.meta["split"] == "the data set's own train/test splits"
    # The quick CIFAR profile's option: a stratified subsample of the training images.
    small = load_dataset("cifar10", tmp_path, limit_train=30)
    assert len(small.train) == 30 and len(small.test) == 20
    assert sorted(np.bincount(small.train.y.numpy(), minlength=10)) == [3] * 10
    with pytest.raises(ValueError, match="limit_train"):
        load_dataset("cifar10", tmp_path, limit_train=0)


def test_cifar_pickle_bad_input(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar_batches(folder, n_train_batches=3)
    with pytest.raises(FileNotFoundError, match="data_batch_4, data_batch_5 are missing"):
        load_dataset("cifar10", folder)
    (tmp_path / "photos" / "cats").mkdir(parents=True)
    with pytest.raises(ValueError, match="photos is not a CIFAR-10 folder"):
        load_dataset("cifar10", tmp_path / "photos")
    for i in (4, 5):
        (folder / f"data_batch_{i}").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="data_batch_4 is not a CIFAR-10 python pickle batch"):
        load_dataset("cifar10", folder)


def _write_cifar_pngs(root: Path, split: str, per_class: int) -> None:
    for label, c in enumerate(CIFAR_CLASSES):
        (root / split / c).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (32, 32), (label * 20 + 5, 0, 0)).save(root / split / c / f"{i:04d}.png")


def test_cifar_png_test_only_is_split(tmp_path, monkeypatch):
    monkeypatch.setenv("PP_CLUSTER_CACHE", str(tmp_path / "cache"))
    _write_cifar_pngs(tmp_path / "cifar10", "test", per_class=5)
    ds = load_dataset("cifar10", tmp_path / "cifar10")
    assert (len(ds.train), len(ds.test)) == (40, 10) and ds.classes == tuple(CIFAR_CLASSES)
    assert ds.test.y.bincount().tolist() == [1] * 10
    assert torch.equal(_red_label(ds.train), ds.train.y)
    assert "split 80%/20% stratified" in ds.meta["split"] and ds.meta["options"]["split_test"] is True
    again = load_dataset("cifar10", tmp_path / "cifar10")
    assert again.meta["cache_hit_test"] is True and torch.equal(again.train.x, ds.train.x)
    with pytest.raises(ValueError, match="split_test=False, but .* has no training split"):
        load_dataset("cifar10", tmp_path / "cifar10", split_test=False)


def test_cifar_png_with_train_split(tmp_path, monkeypatch):
    monkeypatch.setenv("PP_CLUSTER_CACHE", str(tmp_path / "cache"))
    _write_cifar_pngs(tmp_path, "test", per_class=2)
    _write_cifar_pngs(tmp_path, "train", per_class=3)
    ds = load_dataset("cifar10", tmp_path)
    assert (len(ds.train), len(ds.test)) == (30, 20) and ds.meta["options"]["split_test"] is False
    assert torch.equal(_red_label(ds.test), ds.test.y)


def test_fetch_offline_fails_fast(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    for name, expected in (
        ("mnist", "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"),
        ("cifar10", "cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}"),
        ("lfw", "<Person_Name>/<Person_Name>_NNNN.jpg"),
    ):
        start = time.monotonic()
        with pytest.raises(ConnectionError, match="Place the files by hand") as err:
            fetch_dataset(name, tmp_path)
        assert time.monotonic() - start < 5
        assert str(tmp_path) in str(err.value) and expected in str(err.value)
    assert not any(tmp_path.iterdir())  # nothing half-downloaded
    with pytest.raises(ValueError, match="embedded"):
        fetch_dataset("digits", tmp_path)


def test_fetch_returns_existing_folder_without_network(tmp_path, monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", lambda *a: pytest.fail("probed the network"))
    _write_mnist(tmp_path / "MNIST" / "raw")
    path = fetch_dataset("mnist", tmp_path)
    assert path == tmp_path / "MNIST" / "raw" and len(load_dataset("mnist", path).train) == 50
