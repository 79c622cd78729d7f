"""One model, one attack: the science as ordinary functions.

The farm distributes these calls over a cluster; benchmarks and tests call them in a
plain loop. Nothing here imports Ray.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from pp_cluster.config import AttackSpec, ModelSpec, tunable
from pp_cluster.data import Dataset, load_dataset
from pp_cluster.data.attacker import attacker_data
from pp_cluster.data.base import Split
from pp_cluster.nets import build_decoder, build_net, split
from pp_cluster.nets.decoders import width_of
from pp_cluster.privacy.attack import (
    AttackConfig,
    AttackResult,
    compute_activations,
    evaluate_attack,
    train_attacker,
)
from pp_cluster.privacy.defense import TrainResult, train_defended
from pp_cluster.privacy.recipes import recipe


def load_data(spec: ModelSpec) -> Dataset:
    return load_dataset(spec.dataset, spec.data_root, **dict(spec.dataset_options))


@dataclass
class Model:
    """A classifier split at ``partition`` and its defender suite (modules shared, not copied).
    A partition-suite model is split at its suite's deepest partition and has a defender suite
    per partition, ``defended_at`` naming the partition of each defender (empty otherwise)."""

    net: nn.Module
    local: nn.Module
    remote: nn.Module
    defenders: list[nn.Module]
    defended_at: list[str] = field(default_factory=list)


def build_classifier(spec: ModelSpec, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The untrained classifier of ``spec``, with the noise defense's noise stage at the
    split when it has one (the noise belongs to the deployed local partition)."""
    net = build_net(spec.arch, tuple(image_shape), num_classes, **dict(spec.arch_options))
    if spec.defense == "noise":
        from pp_cluster.nets import add_activation_noise

        net = add_activation_noise(net, spec.partition, spec.lam)
    return net


def build_model(spec: ModelSpec, ds: Dataset) -> Model:
    # The seed fixes the initial weights, so a retried trial starts from the same model.
    torch.manual_seed(spec.seed)
    net = build_classifier(spec, ds.image_shape, ds.num_classes)
    # An undefended model (partition None) trains whole; its halves here are only nominal. A
    # suite lists its partitions in the network's order: it is cut at the last, the deepest.
    partitions = list(spec.partition_suite) or [spec.partition or net.default_partition]
    local, remote = split(net, partitions[-1])
    defenders = [build_decoder(d, net, p, ds.value_range) for p in partitions for d in spec.defenders]
    defended_at = [p for p in partitions for _ in spec.defenders] if spec.partition_suite else []
    return Model(net, local, remote, defenders, defended_at)


# TrainConfig fields the ModelSpec itself decides: never a train_overrides key
# (config.SweepSpec.validate refuses them).
SPEC_OWNED = ("lam", "distance", "epochs", "batch_size", "seed", "device", "defense")


def train_config(spec: ModelSpec, ds: Dataset, device: str):
    # λ = 0 ("none") trains as the partition defense without defenders: plain training.
    owned = dict(
        lam=spec.lam,
        distance=spec.distance,
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        seed=spec.seed,
        device=device,
        defense="partition" if spec.defense == "none" else spec.defense,
    )
    return recipe(ds.name, spec.recipe, **{**spec.train_overrides, **owned})


def train_model(
    spec: ModelSpec,
    ds: Dataset,
    device: str = "cpu",
    *,
    on_epoch: Callable[[dict, Callable[[], dict]], None] | None = None,
    resume: dict | None = None,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
    shard: tuple[int, int] = (0, 1),
) -> tuple[Model, TrainResult]:
    """Algorithm 1 for one model spec; returns the trained model and its result."""
    model = build_model(spec, ds)
    cfg = train_config(spec, ds, device)
    result = train_defended(
        model.net,
        model.local,
        model.remote,
        model.defenders,
        ds.train,
        ds.test,
        ds.value_range,
        cfg,
        on_epoch=on_epoch,
        resume=resume,
        wrap=wrap,
        shard=shard,
        defended_at=model.defended_at,
    )
    return model, result


def finetune(model: Model, spec: ModelSpec, ds: Dataset, device: str = "cpu") -> dict[str, Any]:
    """Sections IV-G / V-D(2): fine-tune the remote partition with the local one locked,
    with the model's own recipe (at the learning rate its schedule ended with, on augmented
    batches where it augments), for ``spec.finetune_epochs``. Returns the accuracy before
    and after (the attacks keep judging the model as trained: the local partition, hence
    every activation an attacker sees, is unchanged)."""
    from pp_cluster.privacy.finetune import finetune_remote

    cfg = train_config(spec, ds, device)
    return finetune_remote(
        model.local, model.remote, ds.train, ds.test, cfg, spec.finetune_epochs, ds.value_range
    )


def describe(module: nn.Module) -> str:
    """A one-line architecture string for the ``attacker_arch`` column, e.g.
    ``ConvTranspose2d(64→32)→ReLU→…``, so analysts can tell zoo members apart. A module
    with its own ``describe()`` (the white-box ``rmle``: its hyperparameters) says it itself."""
    if callable(getattr(module, "describe", None)):
        return module.describe()
    parts = []
    for m in module.modules():
        if next(m.children(), None) is not None:
            continue
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)):
            parts.append(
                f"{type(m).__name__}({m.in_channels}→{m.out_channels},k{m.kernel_size[0]},s{m.stride[0]})"
            )
        elif isinstance(m, nn.Linear):
            parts.append(f"Linear({m.in_features}→{m.out_features})")
        elif isinstance(m, nn.Dropout):
            parts.append(f"Dropout({m.p})")
        else:
            parts.append(type(m).__name__)
    return "→".join(parts)


@dataclass
class AttackInputs:
    """What every attacker of one model trains and is evaluated on: the activations are
    computed once here, whatever the zoo size, and attackers never see the local partition."""

    h_train: np.ndarray
    x_train: np.ndarray
    h_eval: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    gender_eval: np.ndarray | None = None  # 1 male, 0 female, -1 unknown (lfw with gender lists)


def attack_inputs(
    local: nn.Module, ds: Dataset, data: str, fraction: float, seed: int, device: str = "cpu"
) -> AttackInputs:
    train, evaluation = attacker_data(ds, data, fraction, seed)
    torch.manual_seed(seed)  # the noise defense draws its noise here: reproducible activations
    gender = evaluation.attrs.get("gender")
    return AttackInputs(
        h_train=compute_activations(local, train.x, device=device).numpy(),
        x_train=train.x.numpy(),
        h_eval=compute_activations(local, evaluation.x, device=device).numpy(),
        x_eval=evaluation.x.numpy(),
        y_eval=evaluation.y.numpy(),
        gender_eval=None if gender is None else gender.cpu().numpy(),
    )


def _tensor(a: np.ndarray) -> torch.Tensor:
    """Zero-copy view of an array that may come read-only from Ray's object store; the
    attack only reads it, so torch's warning about non-writable memory does not apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a)


def run_attack(
    attack: AttackSpec,
    net: nn.Module,
    spec: ModelSpec,
    ds_shape: tuple[tuple[int, int, int], int, tuple[float, float]],
    inputs: AttackInputs,
    *,
    seed: int = 0,
    device: str = "cpu",
    n_keep: int = 0,
    judge: Any = None,
) -> tuple[dict[str, Any], Any]:
    """Train one attacker of the zoo on cached activations and evaluate it. With
    ``attack.tune_trials`` an Optuna search (``privacy.tuning``) picks its hyperparameters on
    its validation split first; the row records the hyperparameters used either way.

    ``ds_shape`` is (image_shape, num_classes, value_range): the attacker only needs the
    shapes, not the data set. With ``judge`` (a ``privacy.attributes.AttributeJudge``) every
    reconstruction of the evaluation images is also scored for Table III (#TI/#DF/#CG).
    Returns (metric row, AttackResult) with the first ``n_keep`` reconstructions.
    """
    image_shape, _, value_range = ds_shape
    t0 = time.perf_counter()
    cfg = AttackConfig(
        epochs=attack.epochs, batch_size=attack.batch_size, lr=attack.lr, seed=seed, device=device
    )
    h_train, x_train, h_eval, x_eval, y_eval = map(
        _tensor, (inputs.h_train, inputs.x_train, inputs.h_eval, inputs.x_eval, inputs.y_eval)
    )

    def build(options: dict[str, Any]) -> nn.Module:
        return build_decoder(attack.attacker, net, spec.partition, value_range, **options)

    width = width_of(attack.attacker, net)
    if attack.tune_trials and tunable(attack.attacker):
        from pp_cluster.privacy.tuning import tune_attacker  # (Optuna: only where tuning runs)

        # Selection on the attacker's own validation pairs; the test images are scored below, once.
        attacker, history, chosen = tune_attacker(
            build, h_train, x_train, value_range, cfg, attack.tune_trials, width=width
        )
    else:
        torch.manual_seed(seed)
        attacker, history = train_attacker(build({}), h_train, x_train, value_range, cfg)
        chosen = (
            {
                "lr": cfg.lr,
                "epochs": cfg.epochs,
                "weight_decay": cfg.weight_decay,
                "width": width and width[1],
            }
            if tunable(attack.attacker)
            else {}  # fitted in closed form or white-box: attacker_arch names its settings
        )
    n_eval = len(x_eval)
    result = evaluate_attack(
        attacker,
        h_eval,
        x_eval,
        value_range,
        classifier=net,
        y_eval=y_eval,
        n_keep=n_eval if judge is not None else n_keep,
        amp=history["amp"],
    )
    row = dict(result.metrics)
    if judge is not None:
        if inputs.gender_eval is None:
            raise ValueError("attribute inference needs gender labels of the evaluation images")
        lo, hi = value_range
        recs = result.reconstructions.cpu() * (hi - lo) + lo  # AttackResult keeps [0, 1]
        scores = judge.score(recs, Split(x_eval, y_eval, {"gender": _tensor(inputs.gender_eval)}))
        row.update({k: scores[k] for k in ("n_ti", "n_df", "n_cg", "gender_acc")})
        result = AttackResult(result.metrics, result.reconstructions[:n_keep], result.originals[:n_keep])
    row.update(
        attacker=attack.attacker,
        partition=spec.partition,
        attacker_arch=describe(attacker),
        attacker_data=attack.attacker_data,
        attacker_fraction=attack.attacker_fraction,
        best_epoch=int(history["best_epoch"]),
        attacker_lr=chosen.get("lr"),
        attacker_epochs=chosen.get("epochs"),
        attacker_batch_size=cfg.batch_size if chosen else None,
        attacker_weight_decay=chosen.get("weight_decay"),
        attacker_width=chosen.get("width"),
        best_val_mse=history["best_val_mse"],
        tune_trials=chosen.get("trials", 0),
        train_seconds=time.perf_counter() - t0,
    )
    return row, result
