"""``rmle``: the white-box attacker, which inverts the local partition by optimisation.

He et al. (ACSAC 2019, "Model inversion attacks against collaborative inference") show that
an attacker who knows the local partition's weights (a stolen or published client model)
needs no decoder and no training pairs: for each published activation ``h`` it searches the
image ``x̂`` that the local partition maps closest to ``h``, under a smoothness prior,

    x̂ = argmin_x  ‖f_local(x) − h‖² / ‖h‖²  +  tv · TV(x),   x in the data's value range.

Here the search is Adam on the pixels in [0, 1] (projected back into the range after every
step), every image of a batch optimised at once but independently (the loss is a sum of
per-image losses), starting from the mean image of the attacker's training data: the only
thing it reads from that data. Where the CPU has bf16 matrix units (``pp_cluster.precision``)
the local forward runs under bf16 autocast, the residual in fp32: on real LFW at pool1 (16
images, 60 steps) SSIM 0.894 against fp32's 0.895, 2.3x faster. The residual is relative (divided by ‖h‖²) so one ``tv``
weight means the same at every split point; TV is the mean absolute difference of
neighbouring pixels (anisotropic total variation).

It joins the zoo as decoder ``rmle``: a module mapping H to images like every attacker, so
the attacker pool runs it, scores it and writes its row exactly like the decoders. It is
"fitted" in closed form (the start image), holds a frozen copy of the local partition, and
does its optimisation in ``forward`` (with gradients on, whatever the caller's mode). An
activation-noise defense's noise layer is removed from that copy: the attacker inverts the
deterministic map, while the ``h`` it is given is the noisy one the deployment publishes.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from pp_cluster import precision
from pp_cluster.nets.noise import GaussianNoise

# Defaults measured on real LFW (benchmarks/rmle_defaults.py; benchmarks/README.md).
STEPS = 300
LR = 0.05
TV = 0.05


def total_variation(u: Tensor) -> Tensor:
    """Per image (B×C×H×W or B×C×W), the mean absolute difference of neighbouring pixels."""
    dims = tuple(range(1, u.ndim))
    tv = (u[..., 1:] - u[..., :-1]).abs().mean(dim=dims)
    if u.ndim == 4:
        tv = tv + (u[..., 1:, :] - u[..., :-1, :]).abs().mean(dim=dims)
    return tv


class WhiteBoxInversion(nn.Module):
    """Inverts a frozen local partition image by image (module docstring)."""

    def __init__(
        self,
        local: nn.Module,
        image_shape: tuple[int, ...],
        value_range: tuple[float, float],
        *,
        steps: int = STEPS,
        lr: float = LR,
        tv: float = TV,
        amp: bool | None = None,
    ) -> None:
        super().__init__()
        if not (isinstance(steps, int) and steps >= 1):
            raise ValueError(f"rmle steps must be an integer >= 1, got {steps!r}")
        if not lr > 0 or not tv >= 0:
            raise ValueError(f"rmle needs lr > 0 and tv >= 0, got lr={lr!r}, tv={tv!r}")
        self.local = copy.deepcopy(local).eval()
        for m in self.local.modules():
            if isinstance(m, GaussianNoise):
                m.sigma = 0.0  # invert the deterministic map; h itself stays noisy
        self.local.requires_grad_(False)
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.steps, self.lr, self.tv = steps, float(lr), float(tv)
        self.amp = amp  # bf16 autocast of the local forward; None: pp_cluster.precision's default
        self.register_buffer("start", torch.full(tuple(image_shape), 0.5))  # in [0, 1]

    def train(self, mode: bool = True) -> WhiteBoxInversion:
        super().train(mode)
        self.local.eval()  # the deployed partition: BatchNorm's running statistics, no dropout
        return self

    def fit_closed_form(self, h: Tensor, x: Tensor) -> None:
        """Start every search from the attacker's mean training image."""
        lo, hi = self.value_range
        self.start.copy_(((x.float().mean(dim=0) - lo) / (hi - lo)).clamp(0, 1).to(self.start.device))

    def _amp(self) -> bool:
        return precision.resolve(self.start.device, self.amp, False)[0]

    def describe(self) -> str:
        """The ``attacker_arch`` entry: the attack and its hyperparameters."""
        bf16 = ",bf16" if self._amp() else ""
        return f"rmle(steps={self.steps},lr={self.lr:g},tv={self.tv:g},adam,start=mean_image{bf16})"

    def forward(self, h: Tensor) -> Tensor:
        lo, hi = self.value_range
        target = h.detach().float()
        norm = target.flatten(1).pow(2).sum(dim=1).clamp_min(1e-12)
        u = self.start.unsqueeze(0).repeat(len(target), *([1] * self.start.ndim)).requires_grad_(True)
        optimizer = torch.optim.Adam([u], lr=self.lr)
        device, amp = self.start.device, self._amp()
        with torch.enable_grad():
            for _ in range(self.steps):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    out = self.local(lo + (hi - lo) * u)
                residual = (out.float() - target).flatten(1).pow(2).sum(dim=1) / norm
                loss = (residual + self.tv * total_variation(u)).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    u.clamp_(0, 1)
        return (lo + (hi - lo) * u).detach()
