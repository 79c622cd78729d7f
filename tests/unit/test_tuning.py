"""Tuned attackers: an Optuna search on the attacker's own validation split, never the test set."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch

from pp_cluster import pipeline
from pp_cluster.config import AttackSpec, SpecError, SweepSpec, content_id
from pp_cluster.nets import build_decoder, split
from pp_cluster.nets.decoders import width_of
from pp_cluster.privacy.attack import AttackConfig, train_attacker
from pp_cluster.privacy.tuning import tune_attacker


@pytest.fixture(autouse=True)
def _fp32(monkeypatch, one_thread):
    monkeypatch.setenv("PP_CLUSTER_CPU_BF16", "0")  # exact reruns: fp32


@pytest.fixture(scope="module")
def split_faces(tiny_faces):
    """The shared tiny face CNN and its activations at pool1."""
    spec, ds, net = tiny_faces
    return spec, ds, net, pipeline.attack_inputs(split(net, "pool1")[0], ds, "train", 1.0, seed=0)


@pytest.mark.parametrize("name", ["fc", "resdec", "deconv"])
def test_the_tuned_attacker_is_never_worse_on_validation_than_the_fixed_one(split_faces, name):
    spec, ds, net, inputs = split_faces
    h, x = torch.from_numpy(inputs.h_train), torch.from_numpy(inputs.x_train)
    base = AttackConfig(epochs=3, batch_size=32, lr=1e-3, seed=0)

    def build(options):
        return build_decoder(name, net, "pool1", ds.value_range, **options)

    torch.manual_seed(0)
    _, fixed = train_attacker(build({}), h, x, ds.value_range, base)
    width = width_of(name, net)
    _, tuned, chosen = tune_attacker(build, h, x, ds.value_range, base, 5, width=width)
    print(name, fixed["best_val_mse"], chosen)
    assert chosen["trials"] == 5 and chosen["val_mse"] == tuned["best_val_mse"]
    assert tuned["best_val_mse"] <= fixed["best_val_mse"]
    # The first candidate is the fixed configuration: its score is the fixed attacker's, exactly.
    torch.manual_seed(0)
    _, again, first = tune_attacker(build, h, x, ds.value_range, base, 1, width=width)
    assert again["best_val_mse"] == fixed["best_val_mse"]
    assert (first["lr"], first["epochs"], first["weight_decay"]) == (1e-3, 3, 0.0)
    assert first["width"] == (None if width is None else width[1])
    assert (width is None) == (name == "deconv")  # deconv mirrors the local partition: no width


def test_test_images_never_take_part_in_the_selection(split_faces, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # offline DPD
    spec, ds, net, inputs = split_faces
    shape = (ds.image_shape, ds.num_classes, ds.value_range)
    attack = AttackSpec(attacker="fc", epochs=2, batch_size=32, tune_trials=4)
    row, _ = pipeline.run_attack(attack, net, spec, shape, inputs, seed=0)
    # The same search with the evaluation images replaced by noise: the same choice, and
    # only the test-set scores change.
    rng = np.random.default_rng(0)
    scrambled = pipeline.AttackInputs(
        h_train=inputs.h_train,
        x_train=inputs.x_train,
        h_eval=rng.standard_normal(inputs.h_eval.shape).astype(np.float32),
        x_eval=rng.uniform(-1, 1, inputs.x_eval.shape).astype(np.float32),
        y_eval=inputs.y_eval,
    )
    other, _ = pipeline.run_attack(attack, net, spec, shape, scrambled, seed=0)
    chosen = ("attacker_lr", "attacker_epochs", "attacker_weight_decay", "attacker_width", "best_val_mse")
    assert [row[k] for k in chosen] == [other[k] for k in chosen]
    assert row["tune_trials"] == 4 and row["ssim"] != other["ssim"]


def test_rows_record_the_hyperparameters_used(split_faces, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    spec, ds, net, inputs = split_faces
    shape = (ds.image_shape, ds.num_classes, ds.value_range)
    fixed, _ = pipeline.run_attack(AttackSpec(attacker="fc", epochs=2, lr=3e-3), net, spec, shape, inputs)
    assert (fixed["attacker_lr"], fixed["attacker_epochs"], fixed["attacker_batch_size"]) == (3e-3, 2, 64)
    assert fixed["attacker_weight_decay"] == 0.0 and fixed["tune_trials"] == 0
    assert fixed["attacker_width"] == width_of("fc", net)[1] and fixed["best_val_mse"] > 0
    mean, _ = pipeline.run_attack(AttackSpec(attacker="mean_image", tune_trials=3), net, spec, shape, inputs)
    assert mean["tune_trials"] == 0 and mean["attacker_lr"] is None and mean["best_val_mse"] is None


def test_tuning_keeps_old_attack_ids_and_applies_to_trained_attackers_only(tmp_path):
    spec = AttackSpec(attacker="fc")
    legacy = {k: v for k, v in asdict(spec).items() if k != "tune_trials"}
    assert spec.attack_id("m", "pool1") == content_id("attack", "m", "pool1", legacy)
    assert AttackSpec(attacker="fc", tune_trials=4).attack_id("m", "pool1") != spec.attack_id("m", "pool1")
    sweep = SweepSpec(
        name="t",
        dataset="lfw-subset",
        arch="face_cnn",
        partitions=("pool1",),
        attackers=("fc", "rmle", "mean_image"),
        tune_attackers=6,
        results=str(tmp_path),
    ).validate()
    # The fixed attackers, and a tuned twin of each one that trains.
    assert [(a.attacker, a.tune_trials) for a in sweep.attack_specs()] == [
        ("fc", 0),
        ("rmle", 0),
        ("mean_image", 0),
        ("fc", 6),
    ]
    assert len({a.attack_id("m", "pool1") for a in sweep.attack_specs()}) == 4
    for bad in (-1, 1.5, True):
        with pytest.raises(SpecError, match="tune_attackers"):
            sweep.with_(tune_attackers=bad).validate()
