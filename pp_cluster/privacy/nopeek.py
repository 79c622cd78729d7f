"""Distance correlation, the leakage measure and training penalty of NoPeek
(Vepakomma et al., "NoPeek: Information leakage reduction to share activations in
distributed deep learning", 2020).

NoPeek trains the classifier on ``CE(y, f(x)) + α·dCor(x, f_local(x))`` per batch; the
defended-training loop selects it with ``TrainConfig(defense="nopeek", lam=α)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Added under the square root of every pairwise squared distance, relative to their mean
# (so scaling an argument changes nothing) plus a floor: the gradient of sqrt at 0 is
# infinite, and two coinciding samples (or round-off in the Gram-matrix form) would
# otherwise give an infinite or NaN gradient.
_EPS = 1e-12
_EPS_FLOOR = 1e-30


def _centred_distances(z: Tensor) -> Tensor:
    """Double-centred matrix of pairwise Euclidean distances of the rows of ``z`` (B×D)."""
    z = z - z.mean(dim=0, keepdim=True)  # distances are translation invariant; less round-off
    sq_norms = (z * z).sum(dim=1)
    sq = (sq_norms[:, None] + sq_norms[None, :] - 2.0 * (z @ z.T)).clamp_min(0.0)
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sq = torch.where(eye, torch.zeros_like(sq), sq)  # a sample's distance to itself is exactly 0
    d = torch.sqrt(sq + (_EPS * sq.detach().mean() + _EPS_FLOOR))
    return d - d.mean(dim=0, keepdim=True) - d.mean(dim=1, keepdim=True) + d.mean()


def distance_correlation(x: Tensor, h: Tensor) -> Tensor:
    """Sample distance correlation (Székely, Rizzo & Bakirov 2007) between the batch ``x``
    (B×…) and ``h`` (B×…), each sample flattened; a differentiable scalar in [0, 1].

    With ``A``, ``B`` the double-centred pairwise distance matrices of x and h,
    ``dCov² = mean(A∘B)``, ``dVar²_x = mean(A∘A)``, ``dVar²_y = mean(B∘B)`` and
    ``dCor = sqrt(dCov² / sqrt(dVar²_x · dVar²_y))`` (the V-statistic, as NoPeek uses).
    It is 1 when h is an affine map of x with a scalar factor, near 0 when they are
    independent, and invariant to scaling and translating either argument. Computed in
    float32 (under autocast too). A batch in which all x or all h samples are equal (or
    of one sample) has no distance variance: the result is then 0, not NaN.
    """
    if x.shape[0] != h.shape[0]:
        raise ValueError(f"x and h must hold the same number of samples, got {x.shape[0]} and {h.shape[0]}")
    with torch.autocast(x.device.type, enabled=False):
        xf = x.reshape(len(x), -1).float()
        hf = h.reshape(len(h), -1).float()
        zero = (xf.sum() + hf.sum()) * 0.0  # keeps the result in the autograd graph
        if len(xf) < 2 or bool((xf == xf[:1]).all()) or bool((hf == hf[:1]).all()):
            return zero
        a, b = _centred_distances(xf), _centred_distances(hf)
        dcov2 = (a * b).mean().clamp_min(0.0)
        denom = torch.sqrt((a * a).mean() * (b * b).mean())
        ok = denom > 0
        ratio = torch.where(ok, dcov2 / torch.where(ok, denom, torch.ones_like(denom)), zero)
        positive = ratio > 0  # sqrt'(0) is infinite: route the gradient around it
        dcor = torch.where(positive, torch.sqrt(torch.where(positive, ratio, torch.ones_like(ratio))), zero)
        return dcor.clamp(max=1.0)
