"""Download a public data set into the standard layout its loader reads.

Downloads go through torchvision's and scikit-learn's own fetchers (torchvision no longer
downloads LFW, so LFW comes from scikit-learn's mirror, the *funneled* variant). A short
connectivity probe runs first so an offline machine fails in seconds, with the exact
layout and path to place the files by hand instead of a long retry loop.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class _Source:
    host: str  # probed on port 443
    folder: str  # relative to root: what the loader should be given
    layout: str
    download: Callable[[Path], None]


def _lfw(root: Path) -> None:
    from sklearn.datasets import fetch_lfw_people

    # Public API only downloads while loading; a high min_faces keeps that load small.
    fetch_lfw_people(data_home=root, funneled=True, min_faces_per_person=100, download_if_missing=True)


def _mnist(root: Path) -> None:
    from torchvision.datasets import MNIST

    for train in (True, False):
        MNIST(root, train=train, download=True)


def _cifar10(root: Path) -> None:
    from torchvision.datasets import CIFAR10

    CIFAR10(root, train=True, download=True)


SOURCES = {
    "lfw": _Source(
        "ndownloader.figshare.com",
        "lfw_home/lfw_funneled",
        "<Person_Name>/<Person_Name>_NNNN.jpg (gender lists, if any, in a sibling gender/ folder)",
        _lfw,
    ),
    "mnist": _Source(
        "ossci-datasets.s3.amazonaws.com",
        "MNIST/raw",
        "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
        _mnist,
    ),
    "cifar10": _Source(
        "www.cs.toronto.edu", "cifar-10-batches-py", "{data_batch_1..5, test_batch, batches.meta}", _cifar10
    ),
}


def fetch_dataset(name: str, root: str | Path, timeout: float = 3.0) -> Path:
    """Download ``name`` under ``root`` unless already there; return the folder to pass as
    ``load_dataset(name, root=...)``."""
    if name not in SOURCES:
        raise ValueError(
            f"cannot fetch {name!r}: downloadable data sets are {', '.join(SOURCES)} "
            "(lfw-subset and digits are embedded and need no download)"
        )
    src = SOURCES[name]
    root = Path(root)
    target = root / src.folder
    if target.is_dir() and any(target.iterdir()):
        return target
    try:
        socket.create_connection((src.host, 443), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(
            f"cannot reach {src.host} to download {name} ({e}). Offline? Place the files "
            f"by hand as {target}/{src.layout} and load with root={str(target)!r}"
        ) from e
    root.mkdir(parents=True, exist_ok=True)
    src.download(root)
    return target
