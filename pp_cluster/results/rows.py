"""One builder per table row: what training and attacks return, as the columns of the tables.

The farm calls these and writes their rows with ``ResultStore.write`` (which checks every
column against the schema); nothing else decides what a row holds.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

from pp_cluster.config import ModelSpec
from pp_cluster.results.rules import OK

# The history keys of training that become the epochs table's columns.
EPOCH_COLUMNS = (
    "epoch",
    "task_loss",
    "distance",
    "train_acc",
    "test_acc",
    "lr",
    "seconds",
    "best_defender_counts",
)
# Provenance columns each table carries (store.provenance()).
MODEL_PROVENANCE = ("package_version", "git_sha", "ray_version", "torch_version", "host", "gpu", "cpu")
ATTACK_PROVENANCE = ("host", "gpu", "cpu")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def finite(v: Any) -> Any:
    """None for a non-finite float (the tables hold nulls, not NaN or inf)."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def model_base(
    sweep: str,
    spec: ModelSpec,
    model_id: str,
    *,
    trial_id: str,
    lr: float,
    started: dt.datetime,
    prov: dict[str, Any],
) -> dict[str, Any]:
    """The columns every models row of a trial shares: what was trained, where, when."""
    return {
        "sweep": sweep,
        "model_id": model_id,
        "trial_id": trial_id,
        "seed": spec.seed,
        "dataset": spec.dataset,
        "arch": spec.arch,
        "partition": spec.partition,
        "partition_suite": "+".join(spec.partition_suite) or None,
        "recipe": spec.recipe,
        "lam": spec.lam,
        "defenders": ",".join(spec.defenders),
        "distance": spec.distance,
        "defense": spec.defense,
        "epochs": spec.epochs,
        "lr": lr,
        "batch_size": spec.batch_size,
        "started_at": started,
        "finished_at": utcnow(),
        "config_json": json.dumps(spec.to_dict(), sort_keys=True),
        **{k: prov[k] for k in MODEL_PROVENANCE},
    }


def model_row(base: dict[str, Any], final: dict[str, Any]) -> dict[str, Any]:
    """A trained model's row: ``base`` (:func:`model_base`) and training's final record."""
    return {
        **base,
        "test_acc": final["test_acc"],
        "train_acc": final["train_acc"],
        "n_test": final.get("n_test"),
        "final_task_loss": finite(final["final_task_loss"]),
        "final_distance": finite(final["final_distance"]),
        "status": final["status"],
        "diverged_epoch": final["diverged_epoch"],
        "train_seconds": final["train_seconds"],
        "finetune_acc_before": final.get("finetune_acc_before"),
        "finetune_acc_after": final.get("finetune_acc_after"),
    }


def epoch_rows(sweep: str, model_id: str, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One epochs row per entry of training's history."""
    rows = []
    for h in history:
        row = {"sweep": sweep, "model_id": model_id, **{k: finite(h.get(k)) for k in EPOCH_COLUMNS}}
        row["epoch"] = int(row["epoch"])
        rows.append(row)
    return rows


def attack_row(
    result: dict[str, Any], *, sweep: str, model_id: str, attack_id: str, prov: dict[str, Any]
) -> dict[str, Any]:
    """A finished attack's row: the metrics ``pipeline.run_attack`` returned, and its keys."""
    return {
        **result,
        "sweep": sweep,
        "model_id": model_id,
        "attack_id": attack_id,
        "status": OK,
        **{k: prov[k] for k in ATTACK_PROVENANCE},
        "finished_at": utcnow(),
    }


def failed_attack_row(sweep: str, failed: dict[str, Any]) -> dict[str, Any]:
    """An attack that raised (or whose actors kept dying): what it was, and the error."""
    return {
        "sweep": sweep,
        "model_id": failed["model_id"],
        "attack_id": failed["attack_id"],
        "attacker": failed["attacker"],
        "partition": failed.get("partition"),
        "status": "failed",
        "error": failed["error"],
        "finished_at": utcnow(),
    }


def dp_rows(
    base: dict[str, Any],
    release: dict[str, Any],
    *,
    attack_id: str,
    config: dict[str, Any],
    n_eval: int,
    cell: int,
    neighbourhood: int,
    prov: dict[str, Any],
) -> tuple[dict, dict]:
    """Appendix D: the (models, attacks) rows of one ε-DP pixelated release of the test set.
    ``base`` is the undefended model's :func:`model_base` under the release's own id."""
    eps = release["eps"]
    model = {
        **base,
        "defense": "dp_pixelation",
        "status": OK,
        "test_acc": release["test_acc"],
        "config_json": json.dumps(config, sort_keys=True),
    }
    attack = {
        "sweep": base["sweep"],
        "model_id": base["model_id"],
        "attack_id": attack_id,
        "attacker": "dp_pixelation",
        "attacker_arch": f"Fan's DP pixelation (b={cell}, m={neighbourhood}, ε={eps:g}): the released image",
        "mse": release["mse"],
        "ssim": release["ssim"],
        "psnr": finite(release["psnr"]),
        "reprint_acc": release["test_acc"],
        "n_eval": n_eval,
        "status": OK,
        "finished_at": utcnow(),
        **{k: prov[k] for k in ATTACK_PROVENANCE},
    }
    return model, attack
