"""DP pixelation (Algorithm 2) and its ε sweep (Figure 7)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data, transform
from torch import nn

from pp_cluster.data import load_dataset
from pp_cluster.privacy.baselines import dp_pixelate, pixelation_sweep
from pp_cluster.privacy.metrics import ssim

UNIT = (0.0, 1.0)
SYM = (-1.0, 1.0)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("b,m,eps", [(2, 1, 10.0), (4, 3, 2.0)])
def test_noise_is_laplace_with_the_papers_scale(b, m, eps):
    # A mid-grey constant image: the cell means are exact, so what is left is the noise.
    # Scale 255m/(b²ε) is at most 24 grey levels here, so clipping at ±127.5 is negligible.
    img = torch.zeros(2, 1, 64 * b, 64 * b)
    out = dp_pixelate(img, b, m, eps, SYM, gen())
    noise = ((out[..., ::b, ::b] + 1) * 127.5 - 127.5).flatten().double()
    scale = 255 * m / (b * b * eps)
    assert noise.std().item() == pytest.approx(math.sqrt(2) * scale, rel=0.05)
    assert noise.abs().mean().item() == pytest.approx(scale, rel=0.05)  # E|Laplace| = scale
    assert abs(noise.mean().item()) < 0.05 * scale
    # every pixel of a cell carries that cell's one noise value
    assert torch.equal(out, out[..., ::b, ::b].repeat_interleave(b, -2).repeat_interleave(b, -1))


def test_infinite_and_large_eps_are_plain_pixelation():
    x = torch.rand(3, 3, 16, 16, generator=gen(1))
    plain = torch.nn.functional.avg_pool2d(x, 2).repeat_interleave(2, -2).repeat_interleave(2, -1)
    assert torch.allclose(dp_pixelate(x, 2, 1, math.inf, UNIT), plain, atol=1e-6)
    assert torch.allclose(dp_pixelate(x, 2, 1, 1e7, UNIT, gen()), plain, atol=1e-3)
    assert not torch.allclose(dp_pixelate(x, 2, 1, 1.0, UNIT, gen()), plain, atol=1e-3)


def test_cells_cut_by_the_border_average_only_their_pixels():
    x = torch.rand(2, 3, 5, 7, generator=gen(2)) * 2 - 1
    out = dp_pixelate(x, 2, 1, math.inf, SYM)
    assert out.shape == x.shape
    expect = torch.empty_like(x)
    for i in range(0, 5, 2):
        for j in range(0, 7, 2):
            expect[..., i : i + 2, j : j + 2] = x[..., i : i + 2, j : j + 2].mean(dim=(-2, -1), keepdim=True)
    assert torch.allclose(out, expect, atol=1e-6)


def test_border_cells_get_the_noise_their_sensitivity_needs():
    # 3-wide images with b = 2: the last column's cells hold 2 pixels, not 4, so one
    # changed pixel moves their mean twice as far and they get twice the noise scale.
    img = torch.full((400, 1, 2, 3), 0.5)
    out = dp_pixelate(img, 2, 1, 40.0, UNIT, gen(3))
    full, border = (out[..., 0, 0] - 0.5) * 255, (out[..., 0, 2] - 0.5) * 255
    ratio = border.abs().mean() / full.abs().mean()
    assert 1.7 < ratio.item() < 2.3


def test_output_stays_in_range_and_is_reproducible():
    x = torch.rand(4, 3, 12, 12, generator=gen(4)) * 2 - 1
    out = dp_pixelate(x, 2, 1, 0.05, SYM, gen(5))
    assert out.min() >= -1 and out.max() <= 1
    assert ((out == -1) | (out == 1)).float().mean() > 0.3  # tiny ε: most cells were clipped
    assert torch.equal(out, dp_pixelate(x, 2, 1, 0.05, SYM, gen(5)))
    assert not torch.equal(out, dp_pixelate(x, 2, 1, 0.05, SYM, gen(6)))


def test_ssim_rises_with_eps_on_a_real_image():
    img = transform.resize(data.astronaut(), (96, 96), anti_aliasing=True).astype(np.float32)
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    scores = [ssim(x, dp_pixelate(x, 2, 1, eps, UNIT, gen()), UNIT) for eps in (0.1, 1.0, 10.0, 100.0)]
    assert all(a < b for a, b in zip(scores, scores[1:])), scores
    assert scores[0] < 0.2 and scores[-1] > 0.7


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"b": 0}, "b must"),
        ({"m": 1.5}, "m must"),
        ({"eps": 0.0}, "eps must"),
        ({"eps": -1}, "eps must"),
        ({"value_range": (1.0, 0.0)}, "value_range"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    args = {"images": torch.zeros(1, 1, 4, 4), "b": 2, "m": 1, "eps": 1.0, "value_range": UNIT, **kwargs}
    with pytest.raises(ValueError, match=match):
        dp_pixelate(**args)


def test_bad_images_are_rejected():
    with pytest.raises(ValueError, match="N×C×H×W"):
        dp_pixelate(torch.zeros(4, 4), 2, 1, 1.0, UNIT)
    with pytest.raises(ValueError, match="float"):
        dp_pixelate(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 2, 1, 1.0, UNIT)


def test_sweep_accuracy_and_ssim_rise_with_eps():
    ds = load_dataset("digits")
    # Nearest class mean as a linear layer (argmax of x·μ − |μ|²/2): a real classifier, fitted instantly.
    x = ds.train.x.flatten(1)
    means = torch.stack([x[ds.train.y == c].mean(0) for c in range(ds.num_classes)])
    linear = nn.Linear(x.shape[1], ds.num_classes)
    with torch.no_grad():
        linear.weight.copy_(means)
        linear.bias.copy_(-0.5 * means.pow(2).sum(1))
    clf = nn.Sequential(nn.Flatten(), linear)
    rows = pixelation_sweep(clf, ds.test, ds.value_range, [0.05, 1.0, math.inf], b=2, m=1)
    assert [r["eps"] for r in rows] == [0.05, 1.0, math.inf]
    assert all(r["b"] == 2 and r["m"] == 1 for r in rows)
    acc, sim, err = ([r[k] for r in rows] for k in ("test_acc", "ssim", "mse"))
    assert acc[0] < 0.4 < 0.7 < acc[2], acc  # noise drowns the digits; plain 2×2 cells keep most
    assert sim[0] < sim[1] < sim[2] and err[0] > err[1] > err[2]
    assert rows == pixelation_sweep(clf, ds.test, ds.value_range, [0.05, 1.0, math.inf])  # seeded
    with pytest.raises(ValueError, match="eps_values"):
        pixelation_sweep(clf, ds.test, ds.value_range, [])
