"""Privacy metrics of Section V-A: MSE, SSIM, PSNR, DPD (LPIPS) and reprint accuracy.

Every image metric is computed in [0, 1] pixel space whatever the data set's
``value_range``, so numbers from MNIST ([0, 1]) and LFW/CIFAR ([-1, 1]) are comparable.

SSIM uses one window for every data set: scikit-image's default 7×7 uniform window.
It fits every image size we train on (digits 8×8, lfw-subset 25×25, MNIST 28×28,
CIFAR 32×32, LFW 64×64); the smaller 8×8 leaves only 2×2 window positions but is still
defined. The training loss (:func:`distance`) uses the *same* SSIM, reimplemented in
torch (:func:`ssim_per_sample`, equal to scikit-image's to ~1e-6 in float32), so the quantity
a defender is trained against is the one an attack is scored by.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import Tensor, nn

from pp_cluster.plugins import Registry

# (x, x_rec, value_range) -> per-image distance, shape (N,), differentiable in x_rec.
DistanceFn = Callable[[Tensor, Tensor, tuple[float, float]], Tensor]
DISTANCE_REGISTRY: Registry[DistanceFn] = Registry("distance")
DISTANCES = DISTANCE_REGISTRY.names()  # live: what TrainConfig.distance and SweepSpec.distance accept


def register_distance(name: str) -> Callable[[DistanceFn], DistanceFn]:
    """Decorator registering the privacy distance ``name`` of Eq. (1): ``fn(x, x_rec,
    value_range)`` returns each image's distance (shape ``(N,)``, differentiable in
    ``x_rec``; small = a close reconstruction). The defenders minimise its batch mean and λ
    weighs it in the classifier's loss; it gets fp32 inputs in ``value_range``."""

    def add(fn: DistanceFn) -> DistanceFn:
        DISTANCE_REGISTRY.register(name, fn)
        return fn

    return add


SSIM_WIN = 7
# scikit-image's SSIM with its defaults (uniform window, K1 0.01, K2 0.03) at data_range 1,
# the (co)variances as sample estimates (NP / (NP - 1)).
_NP = SSIM_WIN * SSIM_WIN
_SSIM_COV_NORM = _NP / (_NP - 1)
_SSIM_C1 = 0.01**2
_SSIM_C2 = 0.03**2


def _check_range(value_range: tuple[float, float]) -> tuple[float, float]:
    lo, hi = float(value_range[0]), float(value_range[1])
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range!r}")
    return lo, hi


def _check_pair(x: Tensor, x_rec: Tensor) -> None:
    if x.shape != x_rec.shape:
        raise ValueError(
            f"originals {tuple(x.shape)} and reconstructions {tuple(x_rec.shape)} differ in shape"
        )
    if x.ndim != 4:
        raise ValueError(f"images must be N×C×H×W, got shape {tuple(x.shape)}")
    if min(x.shape[-2:]) < SSIM_WIN:
        raise ValueError(
            f"images of {tuple(x.shape[-2:])} px are smaller than the {SSIM_WIN}×{SSIM_WIN} SSIM window"
        )


def to_unit(x: Tensor, value_range: tuple[float, float]) -> Tensor:
    """Map images from ``value_range`` to [0, 1] (no clipping: keeps gradients)."""
    lo, hi = _check_range(value_range)
    return (x - lo) / (hi - lo)


def _unit_numpy(x: Tensor, value_range: tuple[float, float]) -> np.ndarray:
    return to_unit(x.detach().float().cpu(), value_range).numpy().astype(np.float64)


def mse_images(x: Tensor, x_rec: Tensor, value_range: tuple[float, float]) -> np.ndarray:
    """Per-image mean squared pixel error in [0, 1] space (what a bootstrap over images resamples)."""
    _check_pair(x, x_rec)
    return (
        ((_unit_numpy(x, value_range) - _unit_numpy(x_rec, value_range)) ** 2)
        .reshape(len(x), -1)
        .mean(axis=1)
    )


def mse(x: Tensor, x_rec: Tensor, value_range: tuple[float, float]) -> float:
    """Mean squared pixel error in [0, 1] space."""
    return float(np.mean(mse_images(x, x_rec, value_range)))


def _per_image(fn, x: Tensor, x_rec: Tensor, value_range: tuple[float, float]) -> np.ndarray:
    _check_pair(x, x_rec)
    a, b = _unit_numpy(x, value_range), _unit_numpy(x_rec, value_range)
    if a.shape[1] == 1:
        return np.array([fn(p[0], q[0]) for p, q in zip(a, b)], dtype=np.float64)
    return np.array([fn(p, q, channel_axis=0) for p, q in zip(a, b)], dtype=np.float64)


def ssim_images(x: Tensor, x_rec: Tensor, value_range: tuple[float, float]) -> np.ndarray:
    """Per-image scikit-image SSIM (7×7 uniform window, data_range 1)."""
    return _per_image(
        lambda p, q, **kw: structural_similarity(p, q, data_range=1.0, win_size=SSIM_WIN, **kw),
        x,
        x_rec,
        value_range,
    )


def ssim(x: Tensor, x_rec: Tensor, value_range: tuple[float, float]) -> float:
    """Mean over images of scikit-image's SSIM (7×7 uniform window, data_range 1)."""
    return float(np.mean(ssim_images(x, x_rec, value_range)))


def psnr(x: Tensor, x_rec: Tensor, value_range: tuple[float, float]) -> float:
    """Mean over images of scikit-image's PSNR (data_range 1); ``inf`` if an image is exact."""
    with np.errstate(divide="ignore"):
        return float(
            np.mean(
                _per_image(
                    lambda p, q, **_: peak_signal_noise_ratio(p, q, data_range=1.0), x, x_rec, value_range
                )
            )
        )


def _box_mean(t: Tensor, use_conv: bool | None = None) -> Tensor:
    """Mean of every full ``SSIM_WIN``×``SSIM_WIN`` window of each channel (valid
    positions only: N×K×(H-6)×(W-6)).

    float32 on the CPU: two depthwise 1-D convolutions (oneDNN; several times faster than
    ``avg_pool2d`` there, forward and backward). Otherwise ``avg_pool2d``: CUDA runs float32
    convolutions in TF32 by default, whose 10-bit mantissa would wreck the
    ``E[x²] - mu²`` variances (pooling is exact float32), and float64 convolutions on the
    CPU bypass oneDNN and cost tens of ms per call even on tiny inputs.
    """
    if use_conv is None:
        use_conv = t.device.type == "cpu" and t.dtype == torch.float32
    if not use_conv:
        return F.avg_pool2d(t, SSIM_WIN, stride=1)
    k = t.shape[1]
    rows = t.new_full((k, 1, SSIM_WIN, 1), 1.0 / SSIM_WIN)
    cols = t.new_full((k, 1, 1, SSIM_WIN), 1.0 / SSIM_WIN)
    return F.conv2d(F.conv2d(t, rows, groups=k), cols, groups=k)


def _ssim_images(a: Tensor, b: Tensor, use_conv: bool | None = None, data_range: float = 1.0) -> Tensor:
    """Per-image SSIM of N×C×H×W images in [0, 1], as scikit-image computes it.

    ``data_range``: see :func:`ssim_per_sample`.

    skimage filters x, y, x², y², xy with a uniform 7×7 window (reflected borders),
    takes sample (co)variances, forms the SSIM map and averages it after cropping
    (7-1)//2 px from every border (mean over channels too). The cropped map is exactly
    the map at the windows that fit inside the image, so no padding is needed; the five
    moment maps are filtered in one call, stacked on the channel axis.
    """
    c = a.shape[1]
    moments = _box_mean(torch.cat([a, b, a * a, b * b, a * b], dim=1), use_conv)
    ux, uy, uxx, uyy, uxy = moments.split(c, dim=1)
    uxuy = ux * uy
    sq = ux * ux + uy * uy
    c1, c2 = _SSIM_C1 * data_range**2, _SSIM_C2 * data_range**2
    num = (2 * uxuy + c1) * (2 * _SSIM_COV_NORM * (uxy - uxuy) + c2)
    den = (sq + c1) * (_SSIM_COV_NORM * (uxx + uyy - sq) + c2)
    return (num / den).mean(dim=(1, 2, 3))


def ssim_per_sample(
    x: Tensor, x_rec: Tensor, value_range: tuple[float, float], data_range: float = 1.0
) -> Tensor:
    """Differentiable SSIM of each image, equal to :func:`ssim`'s per-image value.

    Computed in float32 (float64 inputs stay float64) with autocast off, whatever the
    inputs' dtype: the variances are differences of close numbers. ``data_range`` scales the
    stabilising constants (C = (K·data_range)²) as scikit-image's argument does, on the images
    mapped to [0, 1]: anything but 1 mis-states their range (it is there for
    ``benchmarks/mnist_lambda_scale.py``, which measures what that does to λ's scale).
    """
    _check_pair(x, x_rec)
    dtype = torch.promote_types(torch.promote_types(x.dtype, x_rec.dtype), torch.float32)
    with torch.autocast(x.device.type, enabled=False):
        a, b = to_unit(x_rec.to(dtype), value_range), to_unit(x.to(dtype), value_range)
        return _ssim_images(a, b, data_range=data_range)


@register_distance("ssim")
def _one_minus_ssim(x: Tensor, x_rec: Tensor, value_range: tuple[float, float]) -> Tensor:
    return 1.0 - ssim_per_sample(x, x_rec, value_range)


@register_distance("mse")
def _mse_per_sample(x: Tensor, x_rec: Tensor, value_range: tuple[float, float]) -> Tensor:
    _check_pair(x, x_rec)
    diff = to_unit(x_rec.float(), value_range) - to_unit(x.float(), value_range)
    return diff.pow(2).flatten(1).mean(dim=1)


def distance_per_sample(name: str, x: Tensor, x_rec: Tensor, value_range: tuple[float, float]) -> Tensor:
    """Privacy distance d(x, x_rec) of Eq. (1) per image: ``1 - SSIM`` or MSE in [0, 1] space,
    or a registered one (:func:`register_distance`)."""
    if name not in DISTANCE_REGISTRY:
        raise ValueError(f"unknown distance {name!r}; choose from {', '.join(DISTANCES)}")
    return DISTANCE_REGISTRY[name](x, x_rec, value_range)


def distance(name: str, x: Tensor, x_rec: Tensor, value_range: tuple[float, float]) -> Tensor:
    """Batch mean of :func:`distance_per_sample`: the differentiable training distance."""
    return distance_per_sample(name, x, x_rec, value_range).mean()


# --- DPD (LPIPS) -----------------------------------------------------------------------
_LPIPS: dict[tuple[Path, str], nn.Module] = {}
# LPIPS's linear heads were calibrated on 64×64 patches, and AlexNet's pooling is
# undefined below ~32 px, so smaller images (MNIST, digits, lfw-subset) are upsampled.
_LPIPS_SIDE = 64


def alexnet_weights_path() -> Path:
    """Where torchvision looks for its ImageNet AlexNet weights (``TORCH_HOME`` moves it)."""
    from torchvision.models import AlexNet_Weights

    name = os.path.basename(urlparse(AlexNet_Weights.IMAGENET1K_V1.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _lpips_model(path: Path, device: torch.device) -> nn.Module:
    """LPIPS-alex with the real ImageNet trunk, built without any download.

    ``pnet_rand=True`` stops lpips from asking torchvision to download the trunk; the
    trunk is then overwritten from the local torchvision checkpoint (strictly, so a
    corrupt file raises instead of leaving random weights). lpips's linear heads ship
    inside the package.
    """
    key = (path, str(device))
    if key not in _LPIPS:
        import lpips
        from torchvision.models import alexnet

        trunk = alexnet()
        trunk.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        with warnings.catch_warnings():  # lpips still passes torchvision's old `pretrained=`
            warnings.simplefilter("ignore", UserWarning)
            model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
        for i in range(1, 6):
            for name, module in getattr(model.net, f"slice{i}").named_children():
                module.load_state_dict(trunk.features[int(name)].state_dict())
        _LPIPS[key] = model.eval().requires_grad_(False).to(device)
    return _LPIPS[key]


def dpd(
    x: Tensor, x_rec: Tensor, value_range: tuple[float, float], batch_size: int = 256
) -> tuple[float | None, str | None]:
    """Deep perceptual distance (LPIPS-alex, mean over images): ``(value, None)`` or
    ``(None, reason)`` when the ImageNet backbone weights are not on this machine.

    Never falls back to a random backbone: that number would not be DPD.
    """
    _check_pair(x, x_rec)
    path = alexnet_weights_path()
    if not path.is_file():
        from torchvision.models import AlexNet_Weights

        # (The reason lands in result rows that travel between machines: no local path in it.)
        return None, (
            f"DPD needs torchvision's ImageNet AlexNet weights at $TORCH_HOME/hub/checkpoints/{path.name} "
            "(TORCH_HOME defaults to ~/.cache/torch; not present on the machine that ran the attack; no "
            f"download attempted). Put {path.name} from {AlexNet_Weights.IMAGENET1K_V1.url} there, e.g. by "
            "running torchvision.models.alexnet(weights='IMAGENET1K_V1') once on a machine with internet "
            "and copying its $TORCH_HOME/hub/checkpoints."
        )
    try:
        model = _lpips_model(path, x.device)
    except Exception as err:  # a truncated or foreign file: say so, never guess
        return None, f"DPD: could not load AlexNet weights from {path}: {type(err).__name__}: {err}"
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            a, b = (2 * to_unit(t[i : i + batch_size].float(), value_range) - 1 for t in (x, x_rec))
            if a.shape[1] == 1:
                a, b = a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1)
            if min(a.shape[-2:]) < _LPIPS_SIDE:
                a, b = (
                    F.interpolate(t, size=(_LPIPS_SIDE, _LPIPS_SIDE), mode="bilinear", align_corners=False)
                    for t in (a, b)
                )
            total += float(model(a, b).sum())
    return total / len(x), None


# --- reprint accuracy --------------------------------------------------------------------
def reprint_accuracy(
    classifier: nn.Module,
    x_rec: Tensor,
    y: Tensor,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> float:
    """Accuracy of the trained ``classifier`` on images ``x_rec`` (eval mode, no grad).

    On reconstructions this is the paper's reprint accuracy; on real images it is plain
    test accuracy. Batches go to ``device`` (default: the classifier's device); the
    classifier's train/eval mode is restored afterwards.
    """
    if len(x_rec) != len(y) or len(y) == 0:
        raise ValueError(f"need as many labels as images (>0), got {len(x_rec)} images and {len(y)} labels")
    if device is None:
        device = next(classifier.parameters()).device
    was_training = classifier.training
    classifier.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    with torch.no_grad():
        for i in range(0, len(y), batch_size):
            logits = classifier(x_rec[i : i + batch_size].to(device, non_blocking=True))
            correct += (logits.argmax(dim=1) == y[i : i + batch_size].to(device)).sum()
    classifier.train(was_training)
    return int(correct) / len(y)
