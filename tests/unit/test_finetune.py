"""Remote fine-tuning with the local partition locked (Sections IV-G, V-D(2))."""

from __future__ import annotations

import pytest
import torch

from pp_cluster import pipeline
from pp_cluster.config import ModelSpec
from pp_cluster.data import load_dataset


@pytest.fixture(autouse=True)
def _fp32(monkeypatch):
    """These tests compare training against reference loops written in fp32, step for step:
    the CPU's bf16 default (pp_cluster.precision) is off here; its own tests set it."""
    monkeypatch.setenv("PP_CLUSTER_CPU_BF16", "0")


@pytest.fixture
def trained():
    """A fresh model, one epoch on the embedded faces (seconds)."""
    torch.manual_seed(0)
    ds = load_dataset("lfw-subset", None, size=16)
    spec = ModelSpec(
        dataset="lfw-subset",
        arch="face_cnn",
        partition="pool2",
        lam=0.0,
        defenders=(),
        distance="ssim",
        seed=0,
        epochs=1,
        batch_size=32,
        defense="none",
        finetune_epochs=2,
        arch_options={"widths": (4, 8, 8, 8), "fc": 16},
    )
    model, _ = pipeline.train_model(spec, ds)
    return spec, ds, model


def test_finetuning_changes_only_the_remote_partition(trained):
    spec, ds, model = trained
    local = {k: v.clone() for k, v in model.local.state_dict().items()}
    remote = {k: v.clone() for k, v in model.remote.state_dict().items()}
    assert any("running_mean" in k for k in local), "the test needs BatchNorm in the local partition"
    out = pipeline.finetune(model, spec, ds)

    # Locked means bit-identical, BatchNorm running statistics included: what users' devices
    # send (and what attackers see) does not change.
    for k, v in model.local.state_dict().items():
        assert torch.equal(v, local[k]), k
    assert any(not torch.equal(v, remote[k]) for k, v in model.remote.state_dict().items())
    assert all(p.requires_grad for p in model.local.parameters())  # unlocked again for the caller
    assert 0 <= out["finetune_acc_before"] <= 1 and 0 <= out["finetune_acc_after"] <= 1
    assert out["finetune_seconds"] > 0


def test_finetuning_improves_an_undertrained_remote_partition(trained):
    spec, ds, model = trained
    out = pipeline.finetune(model, spec.__class__(**{**spec.to_dict(), "finetune_epochs": 6}), ds)
    assert out["finetune_acc_after"] > out["finetune_acc_before"]


@pytest.mark.parametrize("epochs", [0, -1, 1.5, True])
def test_bad_epochs_are_refused(trained, epochs):
    from pp_cluster.privacy.finetune import finetune_remote

    spec, ds, model = trained
    with pytest.raises(ValueError, match="epochs"):
        finetune_remote(
            model.local,
            model.remote,
            ds.train,
            ds.test,
            pipeline.train_config(spec, ds, "cpu"),
            epochs,
            ds.value_range,
        )
