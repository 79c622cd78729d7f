"""Privacy metrics: the training SSIM equals skimage's, DPD never guesses, reprint accuracy."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
import torch
from skimage import data, filters, util
from skimage.metrics import structural_similarity
from torch import nn
from torchvision.models import alexnet

from pp_cluster.privacy import metrics as M


def _real_images() -> dict[str, np.ndarray]:
    """H×W or H×W×3 crops in [0, 1] at the sizes we train on (25, 28, 32, 64 px)."""
    cam = util.img_as_float(data.camera())
    ast = util.img_as_float(data.astronaut())
    return {
        "camera28": cam[::8, ::8][10:38, 20:48],
        "camera25": cam[180:280:4, 200:300:4],
        "astro_grey32": util.img_as_float(data.astronaut()[..., 1])[30:222:6, 150:342:6],
        "astro_rgb64": ast[60:188:2, 160:288:2],
    }


def _degraded(im: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    axis = -1 if im.ndim == 3 else None
    blocks = im.copy()  # JPEG-ish: 4×4 block means, then 8 grey levels
    h, w = im.shape[:2]
    for i in range(0, h, 4):
        for j in range(0, w, 4):
            blocks[i : i + 4, j : j + 4] = blocks[i : i + 4, j : j + 4].mean(axis=(0, 1))
    return {
        "noise": np.clip(im + rng.normal(0, 0.1, im.shape), 0, 1),
        "blur": filters.gaussian(im, sigma=1.5, channel_axis=axis),
        "jpegish": np.round(blocks * 7) / 7,
    }


def _tensor(im: np.ndarray) -> torch.Tensor:
    t = torch.tensor(im, dtype=torch.float32)
    return (t[None] if t.ndim == 2 else t.permute(2, 0, 1))[None]


@pytest.mark.parametrize("value_range", [(0.0, 1.0), (-1.0, 1.0)])
def test_differentiable_ssim_matches_skimage_on_real_images(value_range):
    rng = np.random.default_rng(0)
    lo, hi = value_range
    for name, im in _real_images().items():
        for kind, deg in _degraded(im, rng).items():
            x, r = (_tensor(a) * (hi - lo) + lo for a in (im, deg))
            reference = structural_similarity(
                im, deg, data_range=1.0, channel_axis=-1 if im.ndim == 3 else None
            )
            ours = 1 - float(M.distance("ssim", x, r, value_range))
            assert abs(ours - reference) < 1e-5, (name, kind, ours, reference)
            assert abs(M.ssim(x, r, value_range) - reference) < 1e-6


def test_a_mis_stated_data_range_is_skimages_too():
    """``data_range`` other than 1 (benchmarks/mnist_lambda_scale.py: pytorch_msssim's default
    255 on [0, 1] images) gives what scikit-image gives with that data_range, and a different SSIM."""
    rng = np.random.default_rng(1)
    im = _real_images()["astro_rgb64"]
    deg = _degraded(im, rng)["blur"]
    x, r = _tensor(im), _tensor(deg)
    axis = -1 if im.ndim == 3 else None
    for data_range in (1.0, 255.0):
        reference = structural_similarity(im, deg, data_range=data_range, channel_axis=axis)
        ours = float(M.ssim_per_sample(x, r, (0.0, 1.0), data_range=data_range))
        assert abs(ours - reference) < 1e-5, (data_range, ours, reference)
    assert float(M.ssim_per_sample(x, r, (0.0, 1.0), data_range=255.0)) > float(
        M.ssim_per_sample(x, r, (0.0, 1.0))
    )


def test_batch_ssim_is_mean_of_images_and_differentiable():
    ims = _real_images()
    rng = np.random.default_rng(1)
    x = torch.cat([_tensor(ims["camera28"]), _tensor(ims["camera28"].T)])
    r = torch.cat([_tensor(_degraded(ims["camera28"], rng)["blur"]), _tensor(ims["camera28"].T[::-1].copy())])
    per = M.ssim_per_sample(x, r, (0, 1))
    assert per.shape == (2,)
    assert abs(float(per.mean()) - M.ssim(x, r, (0, 1))) < 1e-5
    r.requires_grad_(True)
    d = M.distance("ssim", x, r, (0, 1))
    d.backward()
    with torch.no_grad():  # a small step against the gradient makes the images more alike
        assert float(M.distance("ssim", x, r - 0.05 * r.grad / r.grad.abs().max(), (0, 1))) < float(d)


def _torchmetrics_ssim_per_sample(x, x_rec, value_range):
    """The implementation ssim_per_sample replaced (torchmetrics, kept here as a reference):
    uniform 7×7 window, K2 scaled for skimage's sample covariance, skimage's border crop."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    a, b = M.to_unit(x_rec.float(), value_range), M.to_unit(x.float(), value_range)
    _, full = structural_similarity_index_measure(
        a,
        b,
        gaussian_kernel=False,
        kernel_size=7,
        data_range=1.0,
        k1=0.01,
        k2=0.03 * np.sqrt(48 / 49),
        return_full_image=True,
    )
    return full[..., 3:-3, 3:-3].mean(dim=(1, 2, 3))


@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (4, 3, 64, 64), (3, 3, 8, 8), (2, 2, 9, 13)])
def test_ssim_equals_the_torchmetrics_implementation_it_replaced(shape):
    pytest.importorskip("torchmetrics")
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.rand(shape, generator=gen) * 2 - 1
    for r in (
        x + 0.3 * torch.randn(shape, generator=gen),
        torch.rand(shape, generator=gen) * 2 - 1,
        x.flip(-1),
    ):
        r = r.clamp(-1, 1)
        old = _torchmetrics_ssim_per_sample(x, r, (-1, 1))
        torch.testing.assert_close(M.ssim_per_sample(x, r, (-1, 1)), old, atol=2e-6, rtol=0)


def test_ssim_gradient_passes_gradcheck(one_thread):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 2, 8, 9, generator=gen, dtype=torch.float64)  # 2×3 window positions
    r = torch.rand(2, 2, 8, 9, generator=gen, dtype=torch.float64)
    ssim_x_r = lambda a, b: M.ssim_per_sample(a, b, (0, 1))  # noqa: E731
    assert torch.autograd.gradcheck(ssim_x_r, (x.requires_grad_(True), r.requires_grad_(True)))
    # The value range is an affine map in front: the gradient goes through it too.
    assert torch.autograd.gradcheck(
        lambda b: M.distance_per_sample("ssim", x.detach(), b, (-1, 1)),
        (r.detach().requires_grad_(True),),
        fast_mode=True,
    )


def test_ssim_box_filter_paths_agree():
    """The float32 CPU path (depthwise convolutions) and the one used elsewhere and by the
    gradcheck above (avg_pool2d) are the same filter, in value and gradient."""
    gen = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 3, 3, 20, 17, generator=gen)
    values, grads = [], []
    for flag in (True, False):
        a_ = a.clone().requires_grad_(True)
        v = M._ssim_images(a_, b, use_conv=flag)
        v.sum().backward()
        values.append(v.detach())
        grads.append(a_.grad)
    torch.testing.assert_close(values[0], values[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-4)


def test_ssim_distance_stays_float32_under_autocast():
    gen = torch.Generator().manual_seed(2)
    x, r = torch.rand(2, 4, 3, 32, 32, generator=gen)
    plain = M.distance_per_sample("ssim", x, r, (0, 1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = M.distance_per_sample("ssim", x, r.bfloat16(), (0, 1))
    assert autocast.dtype == torch.float32
    # only r's rounding to bf16 differs (about 1e-3 of SSIM), not the filter's arithmetic
    torch.testing.assert_close(autocast, M.distance_per_sample("ssim", x, r.bfloat16().float(), (0, 1)))
    assert (autocast - plain).abs().max() < 1e-2


def test_mse_and_psnr_are_in_unit_space():
    x = -torch.ones(2, 1, 8, 8)
    r = torch.zeros(2, 1, 8, 8)
    assert M.mse(x, r, (-1, 1)) == pytest.approx(0.25)  # -1 -> 0, 0 -> 0.5
    assert float(M.distance("mse", x, r, (-1, 1))) == pytest.approx(0.25)
    assert M.psnr(x, r, (-1, 1)) == pytest.approx(10 * np.log10(1 / 0.25))
    assert M.psnr(x, x, (-1, 1)) == float("inf")


def test_bad_inputs_are_named():
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="shape"):
        M.mse(x, torch.zeros(2, 1, 8, 9), (0, 1))
    with pytest.raises(ValueError, match="value_range"):
        M.ssim(x, x, (1, 1))
    with pytest.raises(ValueError, match="huber"):
        M.distance("huber", x, x, (0, 1))
    with pytest.raises(ValueError, match="window"):
        M.ssim(torch.zeros(1, 1, 5, 5), torch.zeros(1, 1, 5, 5), (0, 1))


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch cache and no network: DPD must not try to download anything."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(M, "_LPIPS", {})

    def no_network(*args, **kwargs):
        raise AssertionError("DPD tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    return tmp_path


def test_dpd_without_weights_says_where_to_put_them(torch_home):
    x = torch.rand(2, 3, 32, 32)
    t0 = time.perf_counter()
    value, reason = M.dpd(x, x.flip(-1), (0, 1))
    assert time.perf_counter() - t0 < 1.0
    assert value is None
    path = torch_home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert M.alexnet_weights_path() == path
    assert f"$TORCH_HOME/hub/checkpoints/{path.name}" in reason and "IMAGENET1K_V1" in reason
    assert str(torch_home) not in reason  # rows travel between machines: no local path


def test_dpd_uses_the_cached_trunk_never_a_random_one(torch_home):
    path = M.alexnet_weights_path()
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    weights = alexnet().state_dict()  # stands in for the ImageNet file, with known values
    torch.save(weights, path)
    x = torch.rand(3, 1, 28, 28)  # greyscale, below AlexNet's size: expanded and upsampled
    value, reason = M.dpd(x, 1 - x, (0, 1))
    assert reason is None and value > 0
    same, _ = M.dpd(x, x, (0, 1))
    assert same == pytest.approx(0.0, abs=1e-6)
    model = M._LPIPS[(path, "cpu")]
    assert torch.equal(getattr(model.net.slice1, "0").weight, weights["features.0.weight"])
    assert torch.equal(getattr(model.net.slice5, "10").weight, weights["features.10.weight"])


def test_dpd_with_a_corrupt_weights_file_gives_a_reason(torch_home):
    path = M.alexnet_weights_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    value, reason = M.dpd(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32), (0, 1))
    assert value is None and str(path) in reason


def test_reprint_accuracy_counts_and_restores_mode():
    clf = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False), nn.Dropout(0.9))
    with torch.no_grad():
        clf[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
    x = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [2.0, 1.0, 0, 0], [0, 3.0, 0, 0]]).view(4, 1, 2, 2)
    y = torch.tensor([0, 1, 1, 1])  # third is wrong
    clf.train()
    assert M.reprint_accuracy(clf, x, y, batch_size=3) == 0.75  # dropout off: eval mode
    assert clf.training
    with pytest.raises(ValueError, match="labels"):
        M.reprint_accuracy(clf, x, y[:3])
