"""Defenses beyond the paper: NoPeek (distance-correlation loss) and Gaussian noise on the
activation. The distance correlation against a textbook reference, the noise layer's
behaviour inside a partitioned net, and what each defense changes when trained:
NoPeek lowers the held-out dCor(x, h), noise lowers an attacker's SSIM."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from pp_cluster.data import load_dataset
from pp_cluster.data.base import Split
from pp_cluster.nets import (
    GaussianNoise,
    activation_shape,
    add_activation_noise,
    build_decoder,
    build_net,
    split,
)
from pp_cluster.privacy.attack import AttackConfig, compute_activations, evaluate_attack, train_attacker
from pp_cluster.privacy.defense import DEFENSES, TrainConfig, train_defended
from pp_cluster.privacy.nopeek import distance_correlation

VR = (0.0, 1.0)


@pytest.fixture(autouse=True)
def _one_thread():
    """These nets are tiny: a second intra-op thread buys nothing and, on a loaded
    2-core machine, makes the training tests 10-30x slower (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- distance correlation -----------------------------------------------------------------
def _dcor_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Székely's sample distance correlation, written out on float64."""

    def centred(z: np.ndarray) -> np.ndarray:
        z = z.reshape(len(z), -1).astype(np.float64)
        d = np.sqrt(((z[:, None, :] - z[None, :, :]) ** 2).sum(-1))
        return d - d.mean(axis=0, keepdims=True) - d.mean(axis=1, keepdims=True) + d.mean()

    a, b = centred(x), centred(y)
    return float(np.sqrt((a * b).mean() / np.sqrt((a * a).mean() * (b * b).mean())))


def test_distance_correlation_matches_the_textbook_formula_and_its_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 1, 6, 6, generator=g)
    h = torch.tanh(x.flatten(1) @ torch.randn(36, 10, generator=g)) + 0.5 * torch.randn(24, 10, generator=g)
    value = distance_correlation(x, h)
    assert value.shape == () and 0 < float(value) < 1
    assert float(value) == pytest.approx(_dcor_reference(x.numpy(), h.numpy()), abs=1e-5)
    assert float(distance_correlation(x, 3 * x + 1)) == pytest.approx(1.0, abs=1e-5)
    # invariant to scaling (and translating) either argument, and symmetric
    for other in (
        distance_correlation(7.5 * x - 2, h),
        distance_correlation(x, 0.01 * h),
        distance_correlation(h, x),
    ):
        assert float(other) == pytest.approx(float(value), abs=1e-5)
    # independent samples: small (the V-statistic is biased up by O(n^-1/2))
    big = torch.Generator().manual_seed(1)
    xs, ys = torch.randn(1000, 2, generator=big), torch.randn(1000, 2, generator=big)
    indep = float(distance_correlation(xs, ys))
    assert indep < 0.12 and indep == pytest.approx(_dcor_reference(xs.numpy(), ys.numpy()), abs=1e-4)


def test_distance_correlation_is_safe_on_duplicates_and_degenerate_batches():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(10, 20, generator=g)
    x[3] = x[1]
    x[7] = x[1]
    x.requires_grad_(True)
    value = distance_correlation(x, torch.tanh(2 * x) + 0.1 * x.sum(1, keepdim=True) ** 2)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert float(value.detach()) == pytest.approx(
        _dcor_reference(
            x.detach().numpy(), (torch.tanh(2 * x) + 0.1 * x.sum(1, keepdim=True) ** 2).detach().numpy()
        ),
        abs=1e-4,
    )
    # no distance variance: 0, not NaN, and still differentiable (zero gradient)
    h = torch.rand(5, 3, generator=g, requires_grad=True)
    flat = distance_correlation(torch.ones(5, 4), h)
    flat.backward()
    assert float(flat.detach()) == 0 and torch.equal(h.grad, torch.zeros_like(h))
    assert float(distance_correlation(torch.rand(5, 4, generator=g), torch.zeros(5, 2))) == 0
    assert float(distance_correlation(torch.rand(1, 4, generator=g), torch.rand(1, 2, generator=g))) == 0
    with pytest.raises(ValueError, match="same number"):
        distance_correlation(torch.rand(4, 2), torch.rand(5, 2))


# --- the noise layer in a partitioned net ---------------------------------------------------
def _small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_net("face_cnn", (1, 16, 16), 2, widths=(2, 3, 4, 5), fc=8)


def test_gaussian_noise_is_on_in_eval_mode_and_off_at_sigma_zero():
    x = torch.zeros(2000, 8)
    for train_mode in (True, False):
        layer = GaussianNoise(0.5).train(train_mode)
        a, b = layer(x), layer(x)
        assert not torch.equal(a, b)
        assert float(a.std()) == pytest.approx(0.5, rel=0.05) and abs(float(a.mean())) < 0.01
    off = GaussianNoise(0.0).eval()
    state = torch.get_rng_state()
    assert off(x) is x and torch.equal(torch.get_rng_state(), state)  # identity, draws nothing
    assert list(GaussianNoise(1.0).state_dict()) == []
    for bad in (-0.1, float("nan"), float("inf"), "1"):
        with pytest.raises(ValueError, match="sigma"):
            GaussianNoise(bad)


def test_add_activation_noise_wraps_the_stage_for_split_and_state_dict():
    plain = _small_cnn()
    noisy = add_activation_noise(copy.deepcopy(plain), "pool2", 0.3)
    assert isinstance(noisy.stages["pool2"], nn.Sequential) and isinstance(
        noisy.stages["pool2"][1], GaussianNoise
    )
    assert list(noisy.stages) == list(plain.stages)  # stage order unchanged
    rename = lambda k: k.replace("stages.pool2.", "stages.pool2.0.", 1)  # noqa: E731
    assert list(noisy.state_dict()) == [rename(k) for k in plain.state_dict()]
    assert "stages.pool2.0.0.weight" in noisy.state_dict()
    assert activation_shape(noisy, "pool2") == activation_shape(plain, "pool2") == (3, 4, 4)
    assert build_decoder("fc", noisy, "pool2", VR)(torch.rand(2, 3, 4, 4)).shape == (2, 1, 16, 16)

    x = torch.rand(6, 1, 16, 16)
    noisy.eval()
    local, remote = split(noisy, "pool2")
    assert not torch.equal(local(x), local(x))  # noisy activation in eval mode
    assert not torch.equal(noisy(x), noisy(x))
    torch.manual_seed(3)
    whole = noisy(x)
    torch.manual_seed(3)
    assert torch.equal(remote(local(x)), whole)
    # the partitions before the noisy one are not noisy
    early, _ = split(noisy, "pool1")
    assert torch.equal(early(x), early(x))

    zero = add_activation_noise(copy.deepcopy(plain), "pool2", 0.0).eval()
    plain.eval()
    assert torch.equal(zero(x), plain(x)) and torch.equal(zero(x), zero(x))
    # a plain checkpoint loads into the wrapped net under the renamed keys
    reloaded = add_activation_noise(_small_cnn(seed=9), "pool2", 0.0).eval()
    reloaded.load_state_dict({rename(k): v for k, v in plain.state_dict().items()})
    assert torch.equal(reloaded(x), plain(x))

    with pytest.raises(ValueError, match="partition"):
        add_activation_noise(_small_cnn(), "classifier", 0.1)
    with pytest.raises(ValueError, match="already"):
        add_activation_noise(noisy, "pool2", 0.1)


# --- training with the new defenses -----------------------------------------------------------
def _blobs(n: int, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.3
    for c in range(3):
        x[y == c, :, 2 * c : 2 * c + 3, 1:7] += 0.6
    return Split(x.clamp(0, 1), y)


def _mlp(
    seed: int = 0,
    sigma: float | None = None,
    *,
    side: int = 8,
    classes: int = 3,
    hidden: int = 16,
    dropout: float = 0.2,
):
    """A seeded MLP split at fc1, with activation noise of ``sigma`` when given."""
    torch.manual_seed(seed)
    net = build_net("mnist_mlp", (1, side, side), classes, hidden=hidden, dropout=dropout)
    if sigma is not None:
        add_activation_noise(net, "fc1", sigma)
    return (net, *split(net, "fc1"))


def _params(net: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def test_config_validation_and_defender_rules():
    assert DEFENSES == ("partition", "nopeek", "noise") and TrainConfig().defense == "partition"
    with pytest.raises(ValueError, match="defense"):
        TrainConfig(defense="dropout")
    train, test = _blobs(16), _blobs(8, seed=1)
    decoder = nn.Sequential(nn.Linear(16, 64), nn.Unflatten(1, (1, 8, 8)))
    for defense in ("nopeek", "noise"):
        for lam in (0.0, 0.5):
            net, local, remote = _mlp(sigma=lam if defense == "noise" else None)
            with pytest.raises(ValueError, match="no defenders"):
                train_defended(
                    net,
                    local,
                    remote,
                    [decoder],
                    train,
                    test,
                    VR,
                    TrainConfig(defense=defense, lam=lam, epochs=1),
                )
    with pytest.raises(ValueError, match="defender"):  # adversarial keeps its rule
        train_defended(*_mlp(), [], train, test, VR, TrainConfig(lam=0.5, epochs=1))
    # noise with σ > 0: the local partition must carry that noise
    with pytest.raises(ValueError, match="add_activation_noise"):
        train_defended(*_mlp(), [], train, test, VR, TrainConfig(defense="noise", lam=0.5, epochs=1))
    with pytest.raises(ValueError, match="add_activation_noise"):
        train_defended(*_mlp(sigma=0.2), [], train, test, VR, TrainConfig(defense="noise", lam=0.5, epochs=1))
    net, local, remote = _mlp()
    add_activation_noise(net, "fc1", 0.5)  # after split: the local half keeps the plain stage
    with pytest.raises(ValueError, match="add_activation_noise"):
        train_defended(
            net, local, remote, [], train, test, VR, TrainConfig(defense="noise", lam=0.5, epochs=1)
        )


def test_zero_strength_nopeek_and_noise_are_plain_training():
    """α = 0 and σ = 0 train bit-identically to the undefended loop (the dCor is only
    reported); NoPeek's rows carry the epoch's mean dCor."""
    train, test = _blobs(40), _blobs(12, seed=1)
    cfg = TrainConfig(epochs=2, batch_size=8, seed=3)
    plain, local, remote = _mlp()
    base = train_defended(plain, local, remote, [], train, test, VR, cfg)
    assert base.final_distance is None

    net, local, remote = _mlp()
    zero_nopeek = train_defended(
        net, local, remote, [], train, test, VR, TrainConfig(**{**cfg.__dict__, "defense": "nopeek"})
    )
    assert all(torch.equal(a, b) for a, b in zip(_params(net), _params(plain)))
    assert all(0 < row["distance"] <= 1 for row in zero_nopeek.epochs)
    assert zero_nopeek.final_distance == zero_nopeek.epochs[-1]["distance"]

    net, local, remote = _mlp(sigma=0.0)
    zero_noise = train_defended(
        net, local, remote, [], train, test, VR, TrainConfig(**{**cfg.__dict__, "defense": "noise"})
    )
    assert all(torch.equal(a, b) for a, b in zip(_params(net), _params(plain)))
    assert zero_noise.final_distance is None and zero_noise.test_acc == base.test_acc


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _digits_net(seed: int = 0, sigma: float | None = None):
    return _mlp(seed, sigma, side=28, classes=10, hidden=64, dropout=0.1)


def test_nopeek_lowers_held_out_distance_correlation_and_still_trains(digits):
    results = {}
    for alpha in (0.0, 0.15):
        net, local, remote = _digits_net()
        cfg = TrainConfig(defense="nopeek", lam=alpha, epochs=6, batch_size=32, seed=0)
        result = train_defended(net, local, remote, [], digits.train, digits.test, digits.value_range, cfg)
        held_out = float(distance_correlation(digits.test.x, compute_activations(local, digits.test.x)))
        results[alpha] = (result, held_out)
    (plain, dcor_plain), (nopeek, dcor_nopeek) = results[0.0], results[0.15]
    print(
        f"held-out dCor(x, h): alpha=0 {dcor_plain:.3f}, alpha=0.15 {dcor_nopeek:.3f}; "
        f"training dCor {plain.final_distance:.3f} vs {nopeek.final_distance:.3f}; "
        f"test acc {plain.test_acc:.3f} vs {nopeek.test_acc:.3f}"
    )
    assert dcor_nopeek < dcor_plain - 0.02
    assert nopeek.final_distance < plain.final_distance - 0.05  # the training curve shows it
    assert nopeek.test_acc > 0.6  # chance is 0.1


def test_activation_noise_lowers_attacker_ssim_and_degrades_accuracy_gracefully(digits):
    vr = digits.value_range
    results = {}
    for sigma in (0.0, 3.0):
        net, local, remote = _digits_net(sigma=sigma)
        cfg = TrainConfig(defense="noise", lam=sigma, epochs=4, batch_size=32, seed=0)
        result = train_defended(net, local, remote, [], digits.train, digits.test, vr, cfg)
        torch.manual_seed(1)  # the noise draws of the published activations
        h_train = compute_activations(local, digits.train.x)
        h_test = compute_activations(local, digits.test.x)
        torch.manual_seed(0)
        attacker = build_decoder("fc", net, "fc1", vr, hidden=128)
        attacker, _ = train_attacker(attacker, h_train, digits.train.x, vr, AttackConfig(epochs=8, seed=0))
        ssim = evaluate_attack(attacker, h_test, digits.test.x, vr, with_dpd=False).metrics["ssim"]
        results[sigma] = (result.test_acc, ssim)
    (acc_plain, ssim_plain), (acc_noisy, ssim_noisy) = results[0.0], results[3.0]
    print(
        f"attacker SSIM: sigma=0 {ssim_plain:.3f}, sigma=3 {ssim_noisy:.3f}; "
        f"test acc {acc_plain:.3f} vs {acc_noisy:.3f}"
    )
    assert ssim_noisy < ssim_plain - 0.05
    assert 0.5 < acc_noisy <= acc_plain + 0.02  # worse or equal, far from chance (0.1)


def test_the_mirrored_deconv_decoder_skips_activation_noise():
    """The paper's deconv defender/attacker is derived from the local layers; the noise stage
    changes no shape, so the decoder of a noisy net equals the plain net's."""
    from pp_cluster.nets import activation_shape, add_activation_noise, build_decoder, build_net

    plain = build_net("face_cnn", (3, 32, 32), 4, widths=(4, 8, 8, 8), fc=16)
    noisy = add_activation_noise(
        build_net("face_cnn", (3, 32, 32), 4, widths=(4, 8, 8, 8), fc=16), "pool2", 0.5
    )
    d_plain = build_decoder("deconv", plain, "pool2", (-1.0, 1.0))
    d_noisy = build_decoder("deconv", noisy, "pool2", (-1.0, 1.0))
    assert str(d_plain) == str(d_noisy)
    h = torch.randn(2, *activation_shape(noisy, "pool2"))
    assert d_noisy(h).shape == (2, 3, 32, 32)


def test_the_adaptive_resdec_attacker_learns_to_invert_a_split_net_and_is_selectable(tmp_path):
    """The attacker from outside every defender's family (residual upsampling decoder): it
    trains on activations of a real split (face_cnn at pool1, embedded faces) and recovers
    the images far better than untrained; a sweep can name it."""
    from pp_cluster.config import SweepSpec
    from pp_cluster.data import load_dataset
    from pp_cluster.nets import build_decoder, build_net, split
    from pp_cluster.pipeline import describe
    from pp_cluster.privacy.attack import AttackConfig, compute_activations, evaluate_attack, train_attacker

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        ds = load_dataset("lfw-subset", None, size=16)
        net = build_net("face_cnn", ds.image_shape, ds.num_classes, widths=(8, 8, 8, 8), fc=16)
        local, _ = split(net, "pool1")
        h_train, h_eval = compute_activations(local, ds.train.x), compute_activations(local, ds.test.x)
        attacker = build_decoder("resdec", net, "pool1", ds.value_range, width=16)
        arch = describe(attacker)
        assert "ConvTranspose2d" not in arch and "Upsample" in arch  # not the mirrored family
        before = evaluate_attack(attacker, h_eval, ds.test.x, ds.value_range, with_dpd=False).metrics["ssim"]
        attacker, _ = train_attacker(
            attacker,
            h_train,
            ds.train.x,
            ds.value_range,
            AttackConfig(epochs=15, batch_size=32, lr=3e-3, seed=0),
        )
        after = evaluate_attack(attacker, h_eval, ds.test.x, ds.value_range, with_dpd=False).metrics["ssim"]
    finally:
        torch.set_num_threads(threads)
    print(f"resdec SSIM untrained {before:.3f}, trained {after:.3f}")
    assert after > before + 0.2 and after > 0.5, (before, after)
    spec = SweepSpec(
        name="adaptive",
        dataset="lfw-subset",
        arch="face_cnn",
        partitions=("pool1",),
        attackers=("deconv", "resdec"),
        results=str(tmp_path),
    )
    assert spec.validate().attack_specs()[1].attacker == "resdec"
