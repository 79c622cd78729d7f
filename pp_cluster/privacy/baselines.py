"""The baseline the paper compares against in V-D(3): differentially private pixelation
(Fan 2018; Appendix D, Algorithm 2), and its ε sweep (Figure 7).

Instead of sharing features, the image owner shares a pixelated image with Laplace noise:
each b×b cell is replaced by its mean plus Laplace noise (0..255 pixel units). Figure 7
shows what that costs: SSIM and classification accuracy both fall as ε shrinks.

The accounting (Appendix D, Theorem 1). Neighbouring images differ in at most m pixels,
each by at most 255. A changed pixel moves exactly one cell mean, by at most 255/b², so the
L1 distance between the two pixelated images is at most Δ = 255·m/b², and Laplace noise of
scale Δ/ε on every cell is ε-DP (the Laplace mechanism: the privacy loss is the L1 change
over the scale). That is the paper's 255·m/(b²·ε) for a grey image.

An RGB image. A pixel is a location, its three values together: m-neighbourhood is about
hiding what m pixels show (an object, a face), and the paper gives the images' size as
M×N, not M×N×3. Changing one RGB pixel can change all three of its values by 255, so it
moves three cell means (one per channel), each by 255/b²: the L1 sensitivity of the release
(every channel's cells) triples, Δ = 3·255·m/b², and each channel's cells get Laplace noise
of scale 3·255·m/(b²·ε). Counting each value as a "pixel" (m values, not m pixels) would
keep the grey scale but protect a third of what the paper's m promises; noising each
channel with the grey scale would be 3ε-DP (sequential composition over the channels).
The paper runs Figure 7 on colour CIFAR-10 without saying which it did; our ε is the whole
colour image's.
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

    The image is cut into ⌈H/b⌉×⌈W/b⌉ cells, every channel separately, and ``m`` counts
    pixels: a C-channel image's cells get Laplace noise of scale C·255·m/(b²·ε) (the module
    docstring derives it; C = 1 is the paper's 255·m/(b²·ε), C = 3 three times that). A
    cell cut short by the border holds n < b² pixels; its mean is over those n, and its
    scale is C·255·m/(n·ε): every changed pixel then costs at most ε/m wherever it lies, so
    m of them cost at most ε, border cells included. (A scale of the cell's own
    sensitivity, 255·min(m, n)/n, would not do for m > n: pixels spread over a border cell
    and a full one would cost more than ε.) ``eps = math.inf`` gives plain pixelation.
    Noised cells are clipped to the pixel range (post-processing), then expanded back to
    b×b blocks.
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
        scale = images.shape[1] * 255.0 * m / (count * eps)  # C·255·m/(n·ε), n pixels per cell
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
