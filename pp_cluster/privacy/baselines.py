"""The baseline the paper compares against in V-D(3): differentially private pixelation
(Fan 2018; Appendix D, Algorithm 2), and its ε sweep (Figure 7).

Instead of sharing features, the image owner shares a pixelated image with Laplace noise:
each b×b cell is replaced by its mean plus Laplace(255·m/(b²·ε)) noise (0..255 pixel
units). Changing up to m pixels moves a cell mean by at most 255·m/b², so the release is
ε-differentially private for m-neighbouring images. Figure 7 shows what that costs:
SSIM and classification accuracy both fall as ε shrinks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pp_cluster.data.base import Split
from pp_cluster.privacy.metrics import mse, psnr, reprint_accuracy, ssim


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def dp_pixelate(
    images: Tensor,
    b: int,
    m: int,
    eps: float,
    value_range: tuple[float, float],
    generator: torch.Generator | None = None,
) -> Tensor:
    """Algorithm 2 on N×C×H×W ``images`` in ``value_range``; same shape and range out.

    The image is cut into ⌈H/b⌉×⌈W/b⌉ cells, every channel separately (colour images are
    pixelated and noised per channel). A cell cut short by the border holds n < b² pixels;
    its mean is over those n, and its noise scale is 255·min(m, n)/(n·ε), the sensitivity
    of that mean, so border cells keep the ε guarantee too (full cells get the paper's
    255·m/(b²·ε)). ``eps = math.inf`` gives plain pixelation. Noised cells are clipped to
    the pixel range, then expanded back to b×b blocks.
    """
    b, m = _check_int("b", b), _check_int("m", m)
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"eps must be a number > 0 (math.inf: no noise), got {eps!r}")
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a float N×C×H×W tensor, got {shape}")
    lo, hi = float(value_range[0]), float(value_range[1])
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range!r}")
    h, w = images.shape[-2:]
    pixels = (images - lo) * (255.0 / (hi - lo))
    cells = F.avg_pool2d(pixels, b, ceil_mode=True)  # border cells: mean over the pixels inside
    if eps != math.inf:
        count = F.avg_pool2d(
            torch.ones(1, 1, h, w, dtype=images.dtype, device=images.device),
            b,
            ceil_mode=True,
            divisor_override=1,
        )
        scale = 255.0 * count.clamp(max=m) / (count * eps)
        # Laplace(scale) is the difference of two Exponential(1/scale) draws; unlike
        # torch.distributions, exponential_ takes a generator.
        draws = torch.empty((2, *cells.shape), dtype=cells.dtype, device=cells.device).exponential_(
            generator=generator
        )
        cells = (cells + scale * (draws[0] - draws[1])).clamp(0.0, 255.0)
    blocks = cells.repeat_interleave(b, dim=-2).repeat_interleave(b, dim=-1)[..., :h, :w]
    return blocks * ((hi - lo) / 255.0) + lo


def pixelation_sweep(
    classifier: nn.Module,
    split: Split,
    value_range: tuple[float, float],
    eps_values: Sequence[float],
    b: int = 2,
    m: int = 1,
    seed: int = 0,
) -> list[dict[str, float | int]]:
    """Figure 7: for each ε, pixelate ``split.x`` once (seeded), and measure the trained
    ``classifier``'s accuracy on the released images and their SSIM/MSE to the originals.
    Rows: {eps, b, m, test_acc, ssim, mse, psnr}."""
    if not len(eps_values):
        raise ValueError("eps_values is empty")
    rows = []
    for eps in eps_values:
        gen = torch.Generator(device=split.x.device).manual_seed(seed)
        released = dp_pixelate(split.x, b, m, eps, value_range, gen)
        rows.append(
            {
                "eps": float(eps),
                "b": b,
                "m": m,
                "test_acc": reprint_accuracy(classifier, released, split.y),
                "ssim": ssim(split.x, released, value_range),
                "mse": mse(split.x, released, value_range),
                "psnr": psnr(split.x, released, value_range),
            }
        )
    return rows
