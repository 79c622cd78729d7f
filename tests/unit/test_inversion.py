"""The white-box attacker ``rmle``: it inverts the local partition's weights, needs no pairs."""

from __future__ import annotations

import pytest
import torch

from pp_cluster import pipeline
from pp_cluster.config import AttackSpec, SpecError, SweepSpec
from pp_cluster.nets import GaussianNoise, add_activation_noise, build_decoder, build_net, split
from pp_cluster.nets.inversion import WhiteBoxInversion, total_variation
from pp_cluster.pipeline import AttackInputs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def faces_model(tiny_faces):
    return tiny_faces


def _inputs(net, ds, partition: str) -> AttackInputs:
    return pipeline.attack_inputs(split(net, partition)[0], ds, "train", 1.0, seed=0)


def test_rmle_recovers_faces_far_above_the_mean_image(faces_model, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no LPIPS weights: DPD null, as offline
    spec, ds, net = faces_model
    inputs = _inputs(net, ds, "pool1")
    shape = (ds.image_shape, ds.num_classes, ds.value_range)
    rows = {
        name: pipeline.run_attack(AttackSpec(attacker=name), net, spec, shape, inputs, seed=0)[0]
        for name in ("rmle", "mean_image")
    }
    rmle, mean = rows["rmle"], rows["mean_image"]
    print(f"pool1 SSIM: rmle {rmle['ssim']:.3f}, mean image {mean['ssim']:.3f}")
    assert rmle["ssim"] > mean["ssim"] + 0.3 and rmle["ssim"] > 0.6
    assert rmle["mse"] < mean["mse"]
    assert rmle["attacker_arch"].startswith("rmle(steps=300,") and rmle["best_epoch"] == 0
    assert rmle["n_eval"] == len(ds.test) and len(rmle["ssim_images"]) == len(ds.test)


def test_rmle_reads_only_the_mean_training_image_and_optimises_each_image_alone(faces_model):
    spec, ds, net = faces_model
    local, _ = split(net, "pool1")
    with torch.no_grad():
        h = local(ds.test.x[:6])
    attacker = build_decoder("rmle", net, "pool1", ds.value_range, steps=20)
    attacker.fit_closed_form(torch.zeros(3, 1), ds.train.x)  # h_train is never read
    lo, hi = ds.value_range
    torch.testing.assert_close(attacker.start, ((ds.train.x.mean(0) - lo) / (hi - lo)).clamp(0, 1))
    with torch.no_grad():  # as the attack pipeline calls it: the search turns gradients on
        together = attacker(h)
        alone = torch.cat([attacker(h[i : i + 1]) for i in range(len(h))])
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=0)
    assert together.min() >= lo and together.max() <= hi
    # It moved off the start image towards the target, and fits h better than the start.
    start = (lo + (hi - lo) * attacker.start).expand_as(together)
    with torch.no_grad():
        assert (local(together) - h).square().sum() < 0.5 * (local(start) - h).square().sum()
    assert all(not p.requires_grad for p in attacker.parameters())  # the stolen weights stay frozen


def test_rmle_inverts_the_deterministic_map_and_leaves_the_model_alone():
    torch.manual_seed(0)
    net = build_net("face_cnn", (3, 16, 16), 4, widths=(4, 4, 4, 4), fc=8)
    add_activation_noise(net, "pool1", 0.5)
    attacker = build_decoder("rmle", net, "pool1", (-1.0, 1.0), steps=1)
    assert isinstance(attacker, WhiteBoxInversion)
    assert [m.sigma for m in attacker.local.modules() if isinstance(m, GaussianNoise)] == [0.0]
    assert [m.sigma for m in net.modules() if isinstance(m, GaussianNoise)] == [0.5]  # a copy
    attacker.train()
    assert not attacker.local.training  # the deployed partition, whatever the caller's mode
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(attacker.local(x), split(net, "pool1")[0].eval()[0][0](x))


def test_total_variation_is_zero_on_flat_images_and_counts_both_directions():
    flat = torch.full((2, 3, 5, 5), 0.3)
    assert torch.equal(total_variation(flat), torch.zeros(2))
    stripes = torch.zeros(1, 1, 4, 4)
    stripes[..., ::2] = 1.0  # vertical stripes: only horizontal neighbours differ
    assert total_variation(stripes).item() == pytest.approx(1.0)
    assert total_variation(stripes.transpose(-1, -2)).item() == pytest.approx(1.0)


def test_rmle_is_an_attacker_only_and_checks_its_options(tmp_path):
    with pytest.raises(SpecError, match="white-box.*attacker only"):
        SweepSpec(
            name="wb",
            dataset="lfw-subset",
            arch="face_cnn",
            partitions=("pool1",),
            defender_suites=(("rmle",),),
            results=str(tmp_path),
        ).validate()
    spec = SweepSpec(
        name="wb",
        dataset="lfw-subset",
        arch="face_cnn",
        partitions=("pool1",),
        attackers=("fc", "rmle"),
        results=str(tmp_path),
    ).validate()
    assert [a.attacker for a in spec.attack_specs()] == ["fc", "rmle"]
    net = build_net("face_cnn", (3, 16, 16), 4, widths=(4, 4, 4, 4), fc=8)
    for bad in ({"steps": 0}, {"lr": 0.0}, {"tv": -1.0}):
        with pytest.raises(ValueError, match="rmle"):
            build_decoder("rmle", net, "pool1", (-1.0, 1.0), **bad)
