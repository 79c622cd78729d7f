"""Privacy science: defended training (Algorithm 1), input-recovery attacks, and the
Section V-A metrics. Plain PyTorch/NumPy; never imports Ray. A new defense or privacy
distance registers with :func:`register_defense` / :func:`register_distance`."""

from pp_cluster.privacy.attack import (
    AttackConfig,
    AttackResult,
    compute_activations,
    evaluate_attack,
    train_attacker,
)
from pp_cluster.privacy.defense import TrainConfig, TrainResult, evaluate_accuracy, train_defended
from pp_cluster.privacy.metrics import (
    DISTANCES,
    distance,
    distance_per_sample,
    dpd,
    mse,
    psnr,
    register_distance,
    reprint_accuracy,
    ssim,
)
from pp_cluster.privacy.recipes import RECIPES, recipe
from pp_cluster.privacy.steps import DEFENSES, register_defense

__all__ = [
    "AttackConfig",
    "AttackResult",
    "compute_activations",
    "evaluate_attack",
    "train_attacker",
    "TrainConfig",
    "TrainResult",
    "evaluate_accuracy",
    "train_defended",
    "DISTANCES",
    "distance",
    "distance_per_sample",
    "dpd",
    "mse",
    "psnr",
    "register_distance",
    "reprint_accuracy",
    "ssim",
    "RECIPES",
    "recipe",
    "DEFENSES",
    "register_defense",
]
