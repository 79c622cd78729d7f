"""Training recipes per data set: the paper's (Section V-B/V-C, Appendices A-C) and our fast ones.

``paper`` follows the paper; values it does not give are our choices and say so. ``fast`` is
our own recipe for the same networks, made to converge in a CPU budget (measured in
``benchmarks/lfw_recipe.py``; numbers in ``benchmarks/README.md``). λ is a sweep axis: only
LFW's paper recipe carries the paper's single value (0.1); on MNIST the paper sweeps 0-500 on
its own distance scale, which does not transfer, so λ stays 0.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from pp_cluster.privacy.defense import TrainConfig

_MNIST = dict(optimizer="adam", lr=1e-4, defender_lr=1e-3, batch_size=32, epochs=500)  # V-B
_LFW = dict(  # V-C: SGD 0.9, lr 0.01 ×0.1 every 100 epochs, 250 epochs, L2, λ 0.1
    optimizer="sgd",
    lr=0.01,
    momentum=0.9,
    lr_step=100,
    lr_gamma=0.1,
    epochs=250,
    lam=0.1,
    weight_decay=5e-4,  # our choice: the paper applies L2 without a value
    batch_size=32,  # our choice: not stated
)
# Ours: AdamW under a one-cycle schedule (warm-up to 2e-3, then annealed to ~0 by the last epoch),
# label smoothing 0.1 and random 4-px crops + horizontal flips of the 64×64 faces. The defenders
# train with plain Adam at a constant 1e-3, so the best defender stays sharp while the
# classifier's lr anneals. Epochs come from the sweep (the CPU profile: 30).
_LFW_FAST = dict(
    optimizer="adamw",
    lr=2e-3,
    weight_decay=0.05,
    schedule="onecycle",
    label_smoothing=0.1,
    augment="crop_flip",
    batch_size=32,
    epochs=30,
    lam=0.1,
    defender_optimizer="adam",
    defender_lr=1e-3,
    defender_weight_decay=0.0,
)
_CIFAR = dict(  # App. C: SGD 0.9, lr 0.01 ×0.1 every 50 epochs, wd 5e-4, 150 epochs, crop+flip
    optimizer="sgd",
    lr=0.01,
    momentum=0.9,
    lr_step=50,
    lr_gamma=0.1,
    weight_decay=5e-4,
    epochs=150,
    augment="crop_flip",
    batch_size=128,  # our choice: not stated
)
# Ours for the MNIST MLP: the paper's Adam, at 1e-3 under a one-cycle schedule and batch 128
# (the paper's 1e-4 at batch 32 needs its 500 epochs; this reaches ~98 % in 10), defenders at a
# constant Adam 1e-3 as in V-B. Epochs come from the sweep (the CPU profile: 10).
_MNIST_FAST = dict(
    optimizer="adam",
    lr=1e-3,
    schedule="onecycle",
    batch_size=128,
    epochs=10,
    defender_optimizer="adam",
    defender_lr=1e-3,
)
# Ours for VGG-19-BN on CIFAR-10 in a CPU budget: the LFW fast recipe's AdamW one-cycle, label
# smoothing and crop+flip, at batch 128 (the paper's 150 SGD epochs are for GPU clusters).
_CIFAR_FAST = {**_LFW_FAST, "batch_size": 128, "epochs": 15}
RECIPE_NAMES = ("paper", "fast")
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "mnist": {"paper": _MNIST, "fast": _MNIST_FAST},
    "digits": {"paper": _MNIST, "fast": _MNIST_FAST},
    "lfw": {"paper": _LFW, "fast": _LFW_FAST},
    "lfw-subset": {"paper": _LFW, "fast": _LFW_FAST},
    "cifar10": {"paper": _CIFAR, "fast": _CIFAR_FAST},
}


def recipe(dataset: str, name: str = "paper", **overrides: Any) -> TrainConfig:
    """The :class:`TrainConfig` of recipe ``name`` for ``dataset``; ``overrides`` win."""
    if dataset not in RECIPES:
        raise ValueError(f"no training recipe for data set {dataset!r}; known: {', '.join(RECIPES)}")
    if name not in RECIPES[dataset]:
        raise ValueError(
            f"no {name!r} recipe for data set {dataset!r}; it has: {', '.join(RECIPES[dataset])}"
        )
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s) {unknown} in overrides for {dataset!r}")
    return TrainConfig(**{**RECIPES[dataset][name], **overrides})
