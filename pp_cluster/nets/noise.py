"""Gaussian noise on the activation: the local partition publishes ``H + σ·N(0, I)``
instead of ``H`` (a noise defense against input recovery, e.g. Titcombe et al. 2021,
"Practical defences against model inversion attacks for split neural networks").

The noise is part of the deployed local partition, not a regulariser: it is drawn in
train *and* eval mode, so accuracy, activations handed to attackers and the training
itself all see it. Training such a net is plain cross-entropy
(``TrainConfig(defense="noise", lam=σ)``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pp_cluster.nets.classifiers import PartitionedNet


class GaussianNoise(nn.Module):
    """``x + sigma·ε`` with ``ε ~ N(0, I)`` drawn from the global RNG on every call, in
    both train and eval mode; ``sigma = 0`` returns ``x`` itself and draws nothing.
    Holds no parameters or buffers (``sigma`` is a plain attribute)."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        if (
            isinstance(sigma, bool)
            or not isinstance(sigma, (int, float))
            or not (math.isfinite(sigma) and sigma >= 0)
        ):
            raise ValueError(f"GaussianNoise sigma must be a finite number >= 0, got {sigma!r}")
        self.sigma = float(sigma)

    def forward(self, x: Tensor) -> Tensor:
        if self.sigma == 0:
            return x
        return x + self.sigma * torch.randn_like(x)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


def add_activation_noise(net: PartitionedNet, partition: str, sigma: float) -> PartitionedNet:
    """Make the activation at ``partition`` noisy: the stage of that name is replaced, in
    place, by ``nn.Sequential(original_stage, GaussianNoise(sigma))``; returns ``net``.

    Call it before :func:`~pp_cluster.nets.split` (halves split earlier hold the old
    stage): afterwards ``split(net, partition)`` gives a local half whose output is
    noisy, ``remote(local(x))`` is ``net(x)``, and ``activation_shape`` is unchanged.

    The stage is wrapped even for ``sigma = 0`` (then the noise is the identity), so the
    state_dict keys depend only on whether noise was added, not on σ: the stage's keys
    gain a ``.0`` level — ``stages.pool2.0.0.weight`` for a face_cnn's first conv instead
    of ``stages.pool2.0.weight``, i.e. ``stages.<partition>.0.<old key>`` — and every
    other key is unchanged. A checkpoint of a noisy net therefore loads only into a net
    given the same ``add_activation_noise`` call (σ itself is not stored).
    """
    if partition not in net.partitions:
        raise ValueError(
            f"unknown partition {partition!r} for {net.arch}; valid: {', '.join(net.partitions)}"
        )
    stage = net.stages[partition]
    if any(isinstance(m, GaussianNoise) for m in stage.modules()):
        raise ValueError(f"stage {partition!r} of {net.arch} already has activation noise")
    net.stages[partition] = nn.Sequential(stage, GaussianNoise(sigma))
    return net
