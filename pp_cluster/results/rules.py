"""The rules every reader of the tables shares, each written once.

- A row *succeeded* when its ``status`` is ``"ok"`` (a model may instead have ``diverged``
  or ``failed``; an attack ``failed``).
- *Baselines* (``BASELINE_ATTACKERS``: attackers that read nothing from the activations,
  such as the mean training image) sit beside the attackers as a no-information reference
  and never count as the strongest.
- The *strongest attacker* on a metric is the successful non-baseline attack with the best
  value in that metric's direction (``STRONGEST``: the paper's "best attack", §V-C); ties go
  to the alphabetically first attacker, so the answer is deterministic. On reprint accuracy
  white-box attackers do not compete (:func:`competing_on`): they reproduce the classification
  by construction.
- An attack joins its model on (``sweep``, ``model_id``) and is *where* it split the model by
  ``attacks.partition`` (``models.partition`` is null for an undefended model).
- A *tuned* attacker (``tune_trials`` > 0) is reported as ``<name> (tuned)``; every attack has a
  place in the knowledge ladder ``FAMILIES`` (defender's own family, unseen families, white-box,
  tuned).
- The *Pareto set*: no other model has accuracy ≥ and worst-case leakage ≤, one of them strict.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import numpy as np
import pandas as pd

OK = "ok"
# The built-in baselines; a plugin's (nets.register_decoder(..., baseline=True)) count too
# wherever the decoder registry is loaded (baseline_attackers()).
BASELINE_ATTACKERS: tuple[str, ...] = ("mean_image",)
# Which direction makes an attacker strongest on each metric.
STRONGEST: dict[str, str] = {"ssim": "max", "mse": "min", "psnr": "max", "dpd": "min", "reprint_acc": "max"}
MODEL_KEYS = ["sweep", "model_id"]
# One worst case per model and partition it was attacked at.
WORST_KEYS = [*MODEL_KEYS, "partition"]


def succeeded(rows: pd.DataFrame) -> pd.Series:
    return rows["status"] == OK


def _with_registered(built_in: tuple[str, ...], view: str) -> tuple[str, ...]:
    """``built_in`` and the names of the decoder registry's ``view`` (``nets.BASELINES``,
    ``nets.WHITE_BOX``) where the registry is loaded: readers of the tables need no torch."""
    nets = sys.modules.get("pp_cluster.nets")
    extra = tuple(getattr(nets, view)) if nets is not None else ()
    return tuple(dict.fromkeys(built_in + extra))


def baseline_attackers() -> tuple[str, ...]:
    return _with_registered(BASELINE_ATTACKERS, "BASELINES")


def is_baseline(attacks: pd.DataFrame) -> pd.Series:
    return attacks["attacker"].isin(baseline_attackers())


def competing(attacks: pd.DataFrame) -> pd.DataFrame:
    """The attacks that compete for the strongest: successful, and not a baseline."""
    return attacks[succeeded(attacks) & ~is_baseline(attacks)]


# Metrics a white-box attacker's reconstructions cannot be judged on. Reprint accuracy
# classifies a reconstruction with the attacked model itself; a white-box inversion (rmle) is
# optimised so that the local partition maps it to the observed activation, so the remote
# partition classifies it as it classified the input whatever the image looks like (on the
# strong LFW run: rmle's reprint accuracy 0.901 and 0.865 on models of test accuracy 0.903 and
# 0.869, at SSIM 0.36-0.39 where the decoders reach 0.52-0.59).
NOT_WHITE_BOX = ("reprint_acc",)


def competing_on(attacks: pd.DataFrame, metric: str) -> pd.DataFrame:
    """:func:`competing` for the strongest ``metric``: on :data:`NOT_WHITE_BOX` metrics
    without the white-box attackers."""
    real = competing(attacks)
    if metric in NOT_WHITE_BOX:
        name = real["attacker"].astype(str).str.removesuffix(TUNED)
        real = real[~name.isin(white_box_attackers())]
    return real


def strongest(attacks: pd.DataFrame, by: Sequence[str], order: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """Per ``by`` group the row of the strongest attack: sorted by ``order``, (column, "max" or
    "min") pairs of which the first must be measured; ties go to the alphabetically first
    attacker. The caller chooses which attacks compete (usually :func:`competing`)."""
    cols = [c for c, _ in order]
    return (
        attacks.dropna(subset=cols[:1])
        .sort_values(
            [*cols, "attacker"], ascending=[how == "min" for _, how in order] + [True], kind="mergesort"
        )
        .drop_duplicates(list(by))
    )


def worst_values(attacks: pd.DataFrame, by: Sequence[str] = tuple(WORST_KEYS)) -> pd.DataFrame:
    """Per ``by`` group (default: model and partition) the strongest competing attacker's
    value of every metric of ``STRONGEST`` and who it was (``<metric>_attacker``); a metric no
    attacker measured (e.g. DPD offline) is null. No intervals: ``analysis.tables.worst_case``
    adds them."""
    real = competing(attacks)
    out = real[list(by)].drop_duplicates().sort_values(list(by), kind="mergesort").reset_index(drop=True)
    for metric, how in STRONGEST.items():
        best = strongest(competing_on(attacks, metric), by, [(metric, how)])[[*by, metric, "attacker"]]
        best = best.rename(columns={"attacker": f"{metric}_attacker"}).astype({metric: "float64"})
        out = out.merge(best, on=list(by), how="left")
    return out


def worst_of(attacks: pd.DataFrame) -> dict[str, float | None]:
    """The strongest competing value of every metric over all of ``attacks`` (e.g. one model
    at every partition it was attacked at), as ``worst_<metric>``; None where none was measured."""
    out: dict[str, float | None] = {}
    for metric, how in STRONGEST.items():
        real = competing_on(attacks, metric)
        vals = real[metric].dropna().astype("float64") if metric in real else pd.Series(dtype="float64")
        out[f"worst_{metric}"] = (float(vals.max() if how == "max" else vals.min())) if len(vals) else None
    return out


# A tuned attacker (``tune_trials`` > 0) is shown as its zoo name plus this, beside its
# fixed-hyperparameter twin (``SweepSpec.tune_attackers``).
TUNED = " (tuned)"
# The white-box attackers built in; a plugin's (register_decoder(..., white_box=True)) count too.
WHITE_BOX_ATTACKERS: tuple[str, ...] = ("rmle",)
# What an attacker knows, in the order the report adds it to the worst case (issue: "leakage by
# knowledge and family"): the defenders' own architectures, decoder families the defense never
# trained against, the local partition's weights (white-box), and a hyperparameter search.
FAMILIES = ("defender's family", "unseen families", "white-box", "tuned")


def white_box_attackers() -> tuple[str, ...]:
    return _with_registered(WHITE_BOX_ATTACKERS, "WHITE_BOX")


def tuned(attacks: pd.DataFrame) -> pd.Series:
    """Rows of tuned attackers (tables from before tuning existed have no such column: none)."""
    if "tune_trials" not in attacks:
        return pd.Series(False, index=attacks.index)
    return attacks["tune_trials"].fillna(0).astype("int64") > 0


def label_tuned(attacks: pd.DataFrame) -> pd.DataFrame:
    """``attacks`` with each tuned attacker named ``<zoo name> (tuned)``: per-attacker tables
    then show it beside the fixed one instead of mixing the two."""
    is_tuned = tuned(attacks)
    if not is_tuned.any():
        return attacks
    names = attacks["attacker"].where(~is_tuned, attacks["attacker"].astype(str) + TUNED)
    return attacks.assign(attacker=names)


def family(attacks: pd.DataFrame, defenders: Sequence[str]) -> pd.Series:
    """Each attack's place in :data:`FAMILIES`, given the names of the decoders the sweep's
    defenses trained against: tuned first, then white-box, then the defenders' own names.
    Baselines and DP rows get null (they are not attackers of the ladder)."""
    name = attacks["attacker"].astype(str).str.removesuffix(TUNED)
    out = pd.Series(
        np.select(
            [tuned(attacks), name.isin(white_box_attackers()), name.isin(list(defenders))],
            [FAMILIES[3], FAMILIES[2], FAMILIES[0]],
            FAMILIES[1],
        ),
        index=attacks.index,
        dtype=object,
    )
    return out.mask(is_baseline(attacks) | (name == "dp_pixelation"))


def pareto_mask(acc: Sequence[float], leak: Sequence[float]) -> np.ndarray:
    """True where no other point has accuracy ≥ and leakage ≤ with one of them strict.

    O(n log n): walking accuracies downwards, a point survives when it has the lowest leakage
    of its accuracy level and strictly less than every more accurate point.
    """
    a, lk = np.asarray(acc, dtype=float), np.asarray(leak, dtype=float)
    if a.shape != lk.shape or a.ndim != 1:
        raise ValueError(
            f"pareto_mask: acc and leak must be 1-D of equal length, got {a.shape} and {lk.shape}"
        )
    if np.isnan(a).any() or np.isnan(lk).any():
        raise ValueError("pareto_mask: acc and leak must not contain NaN (drop diverged models first)")
    mask = np.zeros(len(a), dtype=bool)
    if not len(a):
        return mask
    best = math.inf  # lowest leakage among strictly more accurate points
    order = np.lexsort((lk, -a))
    for level in np.split(order, np.flatnonzero(np.diff(a[order])) + 1):
        lo = lk[level].min()
        if lo < best:
            mask[level[lk[level] == lo]] = True
        best = min(best, lo)
    return mask


def pareto_flags(models: pd.DataFrame, attacks: pd.DataFrame, leak: str = "ssim") -> pd.Series:
    """Per model (indexed like ``models``) whether it is on its sweep's accuracy / worst-case
    ``leak`` frontier, leakage taken at the partition where the model leaks most. A model
    without accuracy counts as useless (0) and one never attacked as fully leaking: they can
    still be marked, never above a measured model."""
    worst = (
        worst_values(attacks, by=("model_id",)).set_index("model_id")[leak] if len(attacks) else pd.Series()
    )
    fallback = 1.0 if STRONGEST[leak] == "max" else 0.0
    lk = models["model_id"].map(worst).astype("float64").fillna(fallback).to_numpy()
    if STRONGEST[leak] == "min":  # (lower is more leakage for MSE-like metrics)
        lk = -lk
    acc = models["test_acc"].astype("float64").fillna(0.0).to_numpy()
    return pd.Series(pareto_mask(acc, lk), index=models.index)
