"""Tuned attackers: per model and attacker family, a small Optuna search for the strongest.

A fixed zoo trained with fixed hyperparameters underestimates what an attacker who tries a
few settings recovers (SecretFlow's split-learning autoattack tunes each attack for this
reason). :func:`tune_attacker` searches an attacker's learning rate, epochs, weight decay and
width with Optuna's TPE sampler, every candidate trained by :func:`~pp_cluster.privacy.attack.
train_attacker` on the same cached activations, and keeps the candidate with the lowest MSE on
the attacker's *own* validation split (the seeded ``val_fraction`` of its training pairs).
The test images never take part: only the winner is scored on them, afterwards.

The first candidate is the fixed hyperparameters themselves, and every candidate sees the same
validation pairs, so the tuned attacker's validation MSE is never above the fixed one's.

The search space (``SPACE``), around the fixed configuration (lr₀, epochs₀):
  lr            log-uniform in [lr₀/10, lr₀·10]
  epochs        an integer in [⌈epochs₀/2⌉, 2·epochs₀]
  weight decay  one of 0, 1e-6, 1e-5, 1e-4, 1e-3 (Adam's L2)
  width         the decoder's width option times 1/2, 1 or 2 (a convolutional ``width``) or
                1/4, 1/2 or 1 (a dense ``hidden`` layer, whose default at pool1 already holds
                10⁸ weights); decoders without one are not searched over width.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import optuna
import torch
from torch import Tensor, nn

from pp_cluster.privacy.attack import AttackConfig, train_attacker

WEIGHT_DECAYS = (0.0, 1e-6, 1e-5, 1e-4, 1e-3)
# The decoder option that sets its width, and the factors the search may apply to it.
WIDTH_FACTORS = {"width": (0.5, 1.0, 2.0), "hidden": (0.25, 0.5, 1.0)}


def tune_attacker(
    build: Callable[[dict[str, Any]], nn.Module],
    h_train: Tensor,
    x_train: Tensor,
    value_range: tuple[float, float],
    base: AttackConfig,
    n_trials: int,
    *,
    width: tuple[str, int] | None = None,
) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """Search ``n_trials`` candidates (the first: ``base`` as it is) and return the strongest
    attacker, its ``train_attacker`` history and the chosen hyperparameters (lr, epochs,
    weight_decay, width, val_mse, trials).

    ``build(options)`` returns a fresh attacker; ``width`` = (option name, default value), as
    :func:`~pp_cluster.nets.decoders.width_of` gives it, lets the search scale it. Candidates
    are seeded alike (``base.seed``): the same initial draw for the same width, the same
    validation pairs for all.
    """
    if not (isinstance(n_trials, int) and n_trials >= 1):
        raise ValueError(f"n_trials must be an integer >= 1, got {n_trials!r}")
    factors = WIDTH_FACTORS[width[0]] if width else (1.0,)
    decays = tuple(dict.fromkeys((base.weight_decay, *WEIGHT_DECAYS)))
    best: dict[str, Any] = {"val_mse": math.inf}

    def objective(trial: optuna.Trial) -> float:
        cfg = replace(
            base,
            lr=trial.suggest_float("lr", base.lr / 10, base.lr * 10, log=True),
            epochs=trial.suggest_int("epochs", math.ceil(base.epochs / 2), 2 * base.epochs),
            weight_decay=trial.suggest_categorical("weight_decay", decays),
        )
        factor = trial.suggest_categorical("width_factor", factors)
        options = {width[0]: max(1, round(width[1] * factor))} if width else {}
        torch.manual_seed(base.seed)
        attacker, history = train_attacker(build(options), h_train, x_train, value_range, cfg)
        val = float(history["best_val_mse"])
        if val < best["val_mse"]:
            best.clear()
            best.update(
                attacker=attacker,
                history=history,
                val_mse=val,
                lr=cfg.lr,
                epochs=cfg.epochs,
                weight_decay=cfg.weight_decay,
                width=options.get(width[0]) if width else None,
            )
        return val

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=base.seed))
        study.enqueue_trial(
            {"lr": base.lr, "epochs": base.epochs, "weight_decay": base.weight_decay, "width_factor": 1.0}
        )
        study.optimize(objective, n_trials=n_trials)
    finally:
        optuna.logging.set_verbosity(verbosity)
    attacker, history = best.pop("attacker"), best.pop("history")
    return attacker, history, {**best, "trials": len(study.trials)}
