"""Every driver runs (issue 14, acceptance 5): each ``sweeps/*.py --quick`` end to end, as a user
types it, shrunk by flags to one seed, one epoch, one partition, two λ of its profile and two
attackers (one of them ``mean_image``), so the four take a few minutes on 2 cores.

Each driver runs as a child process that joins the farm tests' shared cluster (``--address``, the
cluster's GCS address) instead of starting Ray of its own, and must leave that cluster running.
The MNIST drivers and LFW train on their profiles' embedded data; ``cifar_vgg`` on a tiny CIFAR-10
written here in the layout of ``../shared/data/cifar10``: ``test/<class>/*.png`` only, which the
loader splits 80/20, stratified, into train and test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.farm

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_PER_CLASS = 6  # 60 images: 48 train, 12 test (one or two of each class)
SHRINK = ["--seeds", "0", "--epochs", "1", "--attack-epochs", "1"]
D4 = "mnist_d1,mnist_d2,mnist_d3,mnist_d4"

# driver: (flags beyond --quick and SHRINK, data set, net, recipe, the models as
# (partition, λ, defenders), the partition attacked, the attackers)
DRIVERS = {
    "lfw_grid": (
        ["--partitions", "pool2", "--lams", "0,3", "--attackers", "deconv,mean_image"],
        "lfw-subset",
        "face_cnn",
        "fast",
        {(None, 0.0, ""), ("pool2", 3.0, "deconv")},
        "pool2",
        ("deconv", "mean_image"),
    ),
    "mnist_table1": (
        ["--lams", "0,10", "--attackers", "mnist_a1,mean_image"],
        "digits",
        "mnist_mlp",
        "paper",
        {(None, 0.0, ""), ("fc2", 10.0, "mnist_a1")},
        "fc2",
        ("mnist_a1", "mean_image"),
    ),
    # Table II's point is its two defended models, the single defender and the 4-defender suite.
    "mnist_table2": (
        ["--attackers", "mnist_a1,mean_image"],
        "digits",
        "mnist_mlp",
        "paper",
        {(None, 0.0, ""), ("fc2", 10.0, "mnist_a1"), ("fc2", 10.0, D4)},
        "fc2",
        ("mnist_a1", "mean_image"),
    ),
    "cifar_vgg": (
        ["--partitions", "pool1", "--attackers", "deconv,mean_image"],
        "cifar10",
        "vgg19_bn",
        "paper",
        {(None, 0.0, ""), ("pool1", 0.1, "deconv")},
        "pool1",
        ("deconv", "mean_image"),
    ),
}


def write_tiny_cifar10(root: Path) -> Path:
    """Random 32×32 RGB PNGs, CIFAR_PER_CLASS a class, as ``<root>/test/<class>/<name>.png``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in CIFAR_CLASSES:
        (root / "test" / c).mkdir(parents=True)
        for i in range(CIFAR_PER_CLASS):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "test" / c / f"{c}_s_{i:06d}.png")
    return root


@pytest.mark.timeout(300)
@pytest.mark.parametrize("driver", sorted(DRIVERS))
def test_every_driver_quick_profile_runs_end_to_end(driver, ray_cluster, tmp_path):
    flags, dataset, arch, recipe, expected_models, partition, attackers = DRIVERS[driver]
    if driver == "cifar_vgg":
        flags = [*flags, "--data-root", str(write_tiny_cifar10(tmp_path / "cifar10"))]
    results = tmp_path / "res"
    address = ray_cluster.get_runtime_context().gcs_address
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    t0 = time.time()
    child = subprocess.run(
        [sys.executable, str(SWEEPS / f"{driver}.py"), "--quick", *SHRINK, *flags]
        + ["--results", str(results), "--address", address],
        env={**env, "RAY_AUTH_MODE": "disabled"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=270,
    )
    print(f"{driver} --quick: exit {child.returncode} in {time.time() - t0:.0f} s")
    assert child.returncode == 0, (child.stdout + child.stderr)[-6000:]
    # The driver joined the cluster, so it disconnected from it and left it running.
    assert ray_cluster.get(ray_cluster.remote(lambda: 1).remote(), timeout=60) == 1

    models = pd.read_parquet(results / "models")
    attacks = pd.read_parquet(results / "attacks")
    assert set(models["sweep"]) == set(attacks["sweep"]) == {f"{driver}_quick"}
    assert models["model_id"].is_unique and (models["status"] == "ok").all()
    grid = {
        (None if pd.isna(p) else p, lam, d)
        for p, lam, d in models[["partition", "lam", "defenders"]].itertuples(index=False)
    }
    assert len(models) == len(expected_models) and grid == expected_models
    assert set(models["dataset"]) == {dataset} and set(models["arch"]) == {arch}
    assert set(models["recipe"]) == {recipe} and set(models["epochs"]) == {1}
    assert models["test_acc"].between(0, 1).all()
    if driver == "cifar_vgg":  # the loader's 80/20 stratified split of the written test images
        assert set(models["n_test"]) == {len(CIFAR_CLASSES) * CIFAR_PER_CLASS // 5}

    # Each model attacked once by each attacker, at the one partition swept.
    assert (attacks["status"] == "ok").all() and attacks["attack_id"].is_unique
    got = Counter(attacks[["model_id", "partition", "attacker"]].itertuples(index=False, name=None))
    assert got == Counter((m, partition, a) for m in models["model_id"] for a in attackers)
    assert attacks["ssim"].between(-1, 1).all() and (attacks["mse"] >= 0).all()
