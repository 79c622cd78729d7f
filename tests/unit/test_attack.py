"""Input-recovery attack: activations, attacker training with best-epoch selection, scoring."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from skimage.data import lfw_subset
from torch import nn

from pp_cluster.privacy import metrics as M
from pp_cluster.privacy.attack import (
    AttackConfig,
    attacker_optimizer,
    compute_activations,
    evaluate_attack,
    train_attacker,
)
from pp_cluster.privacy.defense import build_optimizer


@pytest.fixture(autouse=True)
def _fp32(monkeypatch):
    """Exact comparisons against fp32 recomputations: the CPU's bf16 default is off here
    (test_bf16_attacker_learns_and_scores_in_fp32 turns it on)."""
    monkeypatch.setenv("PP_CLUSTER_CPU_BF16", "0")


SIDE = 25


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    """skimage's real 25×25 LFW crops (and non-faces), in [-1, 1] as the LFW loaders give them."""
    return torch.tensor(lfw_subset(), dtype=torch.float32)[:, None] * 2 - 1


def _encoder(seed: int = 0) -> nn.Module:
    """A random 4-channel conv + ReLU: (almost surely) invertible, with dropout to show eval mode."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.5))


def _conv_attacker(seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 1, 3, padding=1), nn.Tanh())


def test_compute_activations_is_eval_mode_on_cpu_and_restores_mode(faces):
    enc = _encoder()
    enc.train()
    h = compute_activations(enc, faces, batch_size=64)
    assert h.shape == (200, 4, SIDE, SIDE) and h.device.type == "cpu" and not h.requires_grad
    torch.testing.assert_close(h, compute_activations(enc, faces, batch_size=7))  # no dropout: eval mode
    assert enc.training


def test_attacker_inverts_an_invertible_encoder(faces, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no LPIPS weights: DPD is null with a reason
    h = compute_activations(_encoder(), faces)
    train_h, train_x, eval_h, eval_x = h[:160], faces[:160], h[160:], faces[160:]
    untrained = evaluate_attack(_conv_attacker(), eval_h, eval_x, (-1, 1), with_dpd=False).metrics
    cfg = AttackConfig(epochs=30, batch_size=16, lr=1e-2, seed=0)
    attacker, history = train_attacker(_conv_attacker(), train_h, train_x, (-1, 1), cfg)
    assert history["epochs_run"] == 30 and 1 <= history["best_epoch"] <= 30
    result = evaluate_attack(attacker, eval_h, eval_x, (-1, 1), n_keep=5)
    m = result.metrics
    assert m["ssim"] > 0.8 and m["mse"] < 0.005 and m["psnr"] > 25, m
    assert untrained["ssim"] < 0.5  # the score comes from training, not from the encoder
    assert m["n_eval"] == 40 and m["reprint_acc"] is None
    assert m["dpd"] is None and "alexnet" in m["dpd_reason"]
    assert result.reconstructions.shape == result.originals.shape == (5, 1, SIDE, SIDE)
    assert 0 <= float(result.reconstructions.min()) and float(result.reconstructions.max()) <= 1
    torch.testing.assert_close(result.originals, (faces[160:165] + 1) / 2)


def test_best_validation_epoch_weights_are_returned():
    """On pairs with no relation between h and x, an attacker that can memorise the
    training pairs gets *worse* on held-out pairs: the kept weights must be the early best."""
    g = torch.Generator().manual_seed(0)
    h = torch.randn(24, 64, generator=g)
    x = torch.rand(24, 1, 8, 8, generator=g)
    torch.manual_seed(0)
    attacker = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 64), nn.Unflatten(1, (1, 8, 8)))
    cfg = AttackConfig(epochs=60, batch_size=8, lr=1e-2, val_fraction=0.5, seed=3)
    attacker, history = train_attacker(attacker, h, x, (0, 1), cfg)
    curve = history["val_mse"]
    assert len(curve) == history["epochs_run"] == 60
    assert history["best_val_mse"] == min(curve) and curve[history["best_epoch"] - 1] == min(curve)
    assert history["best_epoch"] < 60 and curve[-1] > 1.1 * min(curve)  # it did overfit
    val = torch.randperm(24, generator=torch.Generator().manual_seed(3))[:12]
    with torch.no_grad():
        kept = F.mse_loss(attacker(h[val]).clamp(0, 1), x[val]).item()
    assert kept == pytest.approx(history["best_val_mse"], rel=1e-5)


def _counting(attacker: nn.Module) -> dict[str, int]:
    """Count the attacker's state_dict() (best-weight copies) and load_state_dict() calls."""
    calls = {"state_dict": 0, "load_state_dict": 0}
    for name in calls:
        method = getattr(attacker, name)

        def counted(*args, _method=method, _name=name, **kwargs):
            calls[_name] += 1
            return _method(*args, **kwargs)

        setattr(attacker, name, counted)
    return calls


def test_best_weights_are_copied_only_when_a_later_epoch_moves_them():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8, generator=g)
    h = x.flatten(1) @ torch.randn(64, 64, generator=g)  # an invertible encoder: val MSE keeps falling
    torch.manual_seed(0)
    attacker = nn.Sequential(nn.Linear(64, 64), nn.Unflatten(1, (1, 8, 8)))
    calls = _counting(attacker)
    cfg = AttackConfig(epochs=5, batch_size=8, lr=1e-2, val_fraction=0.25, seed=0)
    attacker, history = train_attacker(attacker, h, x, (0, 1), cfg)
    assert history["best_epoch"] == history["epochs_run"] == 5, history["val_mse"]
    assert calls == {
        "state_dict": 4,
        "load_state_dict": 0,
    }  # epochs 1-4's weights, each before the next epoch
    val = torch.randperm(64, generator=torch.Generator().manual_seed(0))[:16]
    with torch.no_grad():
        kept = F.mse_loss(attacker(h[val]).clamp(0, 1), x[val]).item()
    assert kept == pytest.approx(history["best_val_mse"], rel=1e-5)

    torch.manual_seed(0)  # one epoch: its weights are the best, nothing is copied or reloaded
    one = nn.Sequential(nn.Linear(64, 64), nn.Unflatten(1, (1, 8, 8)))
    calls = _counting(one)
    train_attacker(one, h, x, (0, 1), AttackConfig(epochs=1, batch_size=8, val_fraction=0.25))
    assert calls == {"state_dict": 0, "load_state_dict": 0}


def test_attacker_adam_is_fused_and_follows_the_plain_adam():
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    b = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    b.load_state_dict(a.state_dict())
    fused = attacker_optimizer(AttackConfig(lr=1e-2), a.parameters())
    plain = build_optimizer("adam", b.parameters(), 1e-2)
    assert isinstance(fused, torch.optim.Adam) and fused.defaults["fused"]
    x, y = torch.randn(64, 16), torch.randn(64, 4)
    for _ in range(10):
        for net, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            F.mse_loss(net(x), y).backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)
    sgd = attacker_optimizer(AttackConfig(optimizer="sgd", lr=0.1), a.parameters())
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["lr"] == 0.1


def test_patience_stops_early():
    g = torch.Generator().manual_seed(0)
    h, x = torch.randn(40, 64, generator=g), torch.rand(40, 1, 8, 8, generator=g)
    torch.manual_seed(0)
    attacker = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 64), nn.Unflatten(1, (1, 8, 8)))
    _, history = train_attacker(
        attacker,
        h,
        x,
        (0, 1),
        AttackConfig(epochs=40, batch_size=8, lr=1e-2, val_fraction=0.25, seed=3, patience=3),
    )
    assert history["epochs_run"] == history["best_epoch"] + 3 < 40


def test_evaluation_clips_and_scores_reprint_accuracy():
    x = torch.rand(12, 1, 8, 8)
    h = torch.zeros(12, 4)

    class Constant(nn.Module):  # outputs 2.0 everywhere: far outside [0, 1]
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, h):
            return torch.full((len(h), 1, 8, 8), 2.0) + self.w

    clf = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():
        clf[1].weight.zero_()
        clf[1].bias.copy_(torch.tensor([0.0, 1.0]))  # always class 1
    y = torch.tensor([1] * 9 + [0] * 3)
    r = evaluate_attack(Constant(), h, x, (0, 1), classifier=clf, y_eval=y, with_dpd=False)
    assert r.metrics["mse"] == pytest.approx(float(((1 - x) ** 2).mean()), rel=1e-6)  # clipped to 1
    assert r.metrics["reprint_acc"] == 0.75
    assert r.metrics["dpd"] is None and r.metrics["dpd_reason"] == "not requested"
    unlabelled = evaluate_attack(
        Constant(), h, x, (0, 1), classifier=clf, y_eval=-torch.ones(12, dtype=torch.long), with_dpd=False
    )
    assert unlabelled.metrics["reprint_acc"] is None  # disjoint attacker data has no classes


def test_bad_attack_inputs_are_named():
    with pytest.raises(ValueError, match="val_fraction"):
        AttackConfig(val_fraction=0.0)
    with pytest.raises(ValueError, match="activations"):
        train_attacker(nn.Linear(4, 4), torch.zeros(5, 4), torch.zeros(4, 1, 2, 2), (0, 1), AttackConfig())
    with pytest.raises(ValueError, match="nothing to train"):
        train_attacker(nn.Linear(4, 4), torch.zeros(1, 4), torch.zeros(1, 1, 2, 2), (0, 1), AttackConfig())
    assert M.DISTANCES == ("ssim", "mse")


def test_bf16_attacker_learns_and_scores_in_fp32(monkeypatch):
    """With bf16 autocast (the default on CPUs with bf16 matrix units) the attacker still learns,
    and its reconstructions reach the metrics as fp32 images within the value range."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(256, 1, 8, 8, generator=g)
    h = x.flatten(1) @ torch.randn(64, 64, generator=g) / 8  # an invertible linear code of x

    def fit(amp: bool):
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.Sigmoid(), nn.Unflatten(1, (1, 8, 8))
        )
        cfg = AttackConfig(epochs=20, batch_size=16, lr=3e-3, seed=0, amp=amp)
        return train_attacker(net, h, x, (0, 1), cfg)

    _, fp32 = fit(False)
    monkeypatch.setenv("PP_CLUSTER_CPU_BF16", "1")
    assert AttackConfig().fast_paths() == (True, True)
    attacker, history = fit(True)
    assert history["amp"]
    assert history["best_val_mse"] < 0.7 * history["val_mse"][0]
    assert history["best_val_mse"] < 1.5 * fp32["best_val_mse"]
    result = evaluate_attack(attacker, h, x, (0, 1), n_keep=4, with_dpd=False, amp=True)
    assert result.reconstructions.dtype == torch.float32
    assert 0 <= result.metrics["mse"] < history["val_mse"][0] and len(result.metrics["ssim_images"]) == 256


def test_cpu_autocast_default_skips_weight_bound_dense_attackers(monkeypatch):
    """On a CPU autocast re-casts every weight each step: a dense decoder stays fp32 by default,
    a convolutional one gets bf16; on CUDA, or when set explicitly, the setting is kept."""
    from pp_cluster import precision
    from pp_cluster.nets import activation_shape, build_decoder, build_net

    monkeypatch.setenv("PP_CLUSTER_CPU_BF16", "1")
    net = build_net("face_cnn", (3, 32, 32), 2, widths=(4, 8, 8, 8), fc=16)
    shape = activation_shape(net, "pool2")
    fc, deconv = (build_decoder(n, net, "pool2", (-1, 1)) for n in ("fc", "deconv"))
    assert precision.resolve_for(fc, shape, "cpu", None, None) == (False, True)
    assert precision.resolve_for(deconv, shape, "cpu", None, None) == (True, True)
    assert precision.resolve_for(fc, shape, "cpu", True, None) == (True, True)
    assert precision.resolve_for(fc, shape, "cuda", None, None) == (True, True)
