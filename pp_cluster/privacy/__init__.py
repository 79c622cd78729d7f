"""Privacy science: defended training (Algorithm 1), input-recovery attacks, and the
Section V-A metrics. Plain PyTorch/NumPy; never imports Ray."""

from pp_cluster.privacy.attack import (
    AttackConfig, AttackResult, compute_activations, evaluate_attack, train_attacker,
)
from pp_cluster.privacy.defense import TrainConfig, TrainResult, evaluate_accuracy, train_defended
from pp_cluster.privacy.metrics import DISTANCES, distance, distance_per_sample, dpd, mse, psnr, reprint_accuracy, ssim
from pp_cluster.privacy.recipes import RECIPES, recipe

__all__ = [
    "AttackConfig", "AttackResult", "compute_activations", "evaluate_attack", "train_attacker",
    "TrainConfig", "TrainResult", "evaluate_accuracy", "train_defended",
    "DISTANCES", "distance", "distance_per_sample", "dpd", "mse", "psnr", "reprint_accuracy", "ssim",
    "RECIPES", "recipe",
]
