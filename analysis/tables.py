"""Sweep statistics and the paper's tables, as plain pandas over the farm's Parquet tables.

Every builder returns a tidy DataFrame (one row per configuration, ready for CSV) and
raises :class:`Missing` with a reader-facing reason when the tables hold nothing it could
be built from: an artefact is reported missing, never filled with made-up numbers.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow.fs as pafs

from pp_cluster.farm.fs import resolve
from pp_cluster.farm.store import ResultStore

KEYS = ["sweep", "model_id"]
# The configuration a row belongs to; seeds are what gets averaged over.
CONFIG = ["sweep", "dataset", "arch", "partition"]
# What distinguishes configurations within one partition; seeds are averaged within a setting.
SETTING = ["defense", "defenders", "lam"]
# The paper's tables and Figures 4–5 compare privacy partitioning against no defense.
PAPER_DEFENSES = ("none", "partition")
# Which direction makes an attacker strongest on each metric ("the best attack" of §V-C).
STRONGEST = {"ssim": "max", "mse": "min", "psnr": "max", "dpd": "min", "reprint_acc": "max"}

try:  # scipy ships with scikit-learn, a project dependency; the normal fallback keeps pandas-only use working
    from scipy.special import stdtrit as _t_quantile

    CI_METHOD = "Student t quantile (scipy)"
except ImportError:  # pragma: no cover - depends on the environment
    _t_quantile = None
    CI_METHOD = "normal approximation (scipy not installed)"


class Missing(Exception):
    """An artefact the tables hold no input for; the message says what is missing."""


@dataclass
class Results:
    """The three tables of one results root (optionally one sweep); ``sweep`` is a plain string column."""

    models: pd.DataFrame
    attacks: pd.DataFrame
    epochs: pd.DataFrame
    root: str
    sweep: str | None = None
    _store: ResultStore | None = field(default=None, repr=False)

    def joined(self) -> pd.DataFrame:
        """Attack rows with their model's columns; clashing model columns get a ``_model`` suffix
        (``status`` is the attack's, ``status_model`` the model's)."""
        return self.attacks.merge(self.models, on=KEYS, how="inner", suffixes=("", "_model"))

    def models_with_worst(self) -> pd.DataFrame:
        """Models with their strongest attacker's metrics (columns of :func:`worst_case`)."""
        return self.models.merge(worst_case(self.attacks), on=KEYS, how="left")

    def reconstructions(self) -> pd.DataFrame:
        """The PNG table, read on demand because it is the only heavy one."""
        store = self._store or ResultStore(self.root)
        return _plain_sweep(store.read("reconstructions", self.sweep))


def _plain_sweep(df: pd.DataFrame) -> pd.DataFrame:
    # The store may hand back ``sweep`` as a category; merges across tables want one dtype.
    if "sweep" in df.columns:
        df = df.assign(sweep=df["sweep"].astype("string"))
    return df


def load(root: str, sweep: str | None = None) -> Results:
    """Read the models / attacks / epochs tables under ``root`` (local path or ``s3://…``)."""
    fs, path = resolve(str(root))
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"results root {root!r} does not exist")
    store = ResultStore(str(root))
    tables = {t: _plain_sweep(store.read(t, sweep)) for t in ("models", "attacks", "epochs")}
    if sweep is not None and tables["models"].empty:
        known = sorted(_plain_sweep(store.read("models"))["sweep"].dropna().unique())
        raise ValueError(f"sweep {sweep!r} has no models under {root!r}; sweeps there: {known}")
    return Results(**tables, root=str(root), sweep=sweep, _store=store)


def _require(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: no column(s) {missing} (have {list(df.columns)})")


def worst_case(attacks: pd.DataFrame) -> pd.DataFrame:
    """Per model, the strongest successful attacker on each metric and which attacker it was.

    Columns: sweep, model_id, n_attacks, then for each metric of ``STRONGEST`` its value and
    ``<metric>_attacker``. A metric no attacker measured (e.g. DPD offline) stays null.
    Ties go to the alphabetically first attacker, so the answer is deterministic.
    """
    _require(attacks, KEYS + ["attacker", "status", *STRONGEST], "worst_case(attacks)")
    ok = attacks[attacks["status"] == "ok"]
    out = ok.groupby(KEYS, observed=True, sort=True).size().rename("n_attacks").reset_index()
    for metric, how in STRONGEST.items():
        best = (
            ok.dropna(subset=[metric])
            .sort_values([metric, "attacker"], ascending=[how == "min", True], kind="mergesort")
            .drop_duplicates(KEYS)[[*KEYS, metric, "attacker"]]
            .rename(columns={"attacker": f"{metric}_attacker"})
        )
        out = out.merge(best, on=KEYS, how="left")
        out[metric] = out[metric].astype("float64")
    return out


def _t_crit(n: pd.Series, level: float) -> pd.Series:
    q = 0.5 + level / 2
    dof = n.astype("float64") - 1
    if _t_quantile is not None:
        crit = _t_quantile(dof.where(dof >= 1), q)
    else:
        crit = np.where(dof >= 1, NormalDist().inv_cdf(q), np.nan)
    return pd.Series(crit, index=n.index, dtype="float64")


def aggregate(df: pd.DataFrame, by: Sequence[str], metrics: Sequence[str], level: float = 0.95) -> pd.DataFrame:
    """Mean, sample std, n and a ``level`` confidence interval of each metric over the rows of
    each ``by`` group (the seeds). One row per group; columns ``<metric>_{mean,std,n,ci_lo,ci_hi}``.

    The interval is mean ± t(level, n−1)·std/√n (:data:`CI_METHOD` says whether the t or the
    normal quantile was used); it is null for n < 2, where no spread can be estimated.
    """
    by, metrics = list(by), list(metrics)
    _require(df, by + metrics, "aggregate")
    if not 0 < level < 1:
        raise ValueError(f"aggregate: level must be in (0, 1), got {level}")
    values = df[by].join(df[metrics].astype("float64"))
    g = values.groupby(by, dropna=False, observed=True, sort=True)[metrics]
    mean, std, n = g.mean(), g.std(ddof=1), g.count()
    parts = []
    for m in metrics:
        half = _t_crit(n[m], level) * std[m] / np.sqrt(n[m])
        parts.append(pd.DataFrame({
            f"{m}_mean": mean[m], f"{m}_std": std[m], f"{m}_n": n[m].astype("int64"),
            f"{m}_ci_lo": mean[m] - half, f"{m}_ci_hi": mean[m] + half,
        }))
    out = pd.concat(parts, axis=1).reset_index()
    out.attrs["ci_method"] = CI_METHOD
    return out


def pareto_mask(acc: Sequence[float], leak: Sequence[float]) -> np.ndarray:
    """True where no other point has accuracy ≥ and leakage ≤ with one of them strict.

    O(n log n): walking accuracies downwards, a point survives when it has the lowest leakage
    of its accuracy level and strictly less than every more accurate point.
    """
    a, lk = np.asarray(acc, dtype=float), np.asarray(leak, dtype=float)
    if a.shape != lk.shape or a.ndim != 1:
        raise ValueError(f"pareto_mask: acc and leak must be 1-D of equal length, got {a.shape} and {lk.shape}")
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


def frontier(models_with_worst: pd.DataFrame, acc: str = "test_acc", leak: str = "ssim") -> pd.DataFrame:
    """The Pareto set of (``acc`` ↑, worst-case ``leak`` ↓), most accurate first.

    Models without both numbers (diverged, or never attacked) cannot be placed and are left out.
    """
    _require(models_with_worst, [acc, leak], "frontier")
    pts = models_with_worst.dropna(subset=[acc, leak])
    mask = pareto_mask(pts[acc].to_numpy(float), pts[leak].to_numpy(float))
    return pts[mask].sort_values([acc, leak], ascending=[False, True]).reset_index(drop=True)


def hypervolume(points: Any, ref: tuple[float, float] = (0.0, 1.0)) -> float:
    """Exact 2-D area dominated by (accuracy ↑, leakage ↓) ``points`` and bounded by ``ref``.

    ``ref`` = (worst accuracy, worst leakage); with the default (0, 1) a perfect model scores 1.
    Points on the wrong side of ``ref`` add nothing.
    """
    p = np.asarray(points, dtype=float)
    if p.size == 0:
        return 0.0
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"hypervolume: points must be an (n, 2) array of (accuracy, leakage), got shape {p.shape}")
    ra, rl = float(ref[0]), float(ref[1])
    p = p[(p[:, 0] > ra) & (p[:, 1] < rl)]
    if not len(p):
        return 0.0
    p = p[pareto_mask(p[:, 0], p[:, 1])]
    p = p[np.argsort(-p[:, 0], kind="mergesort")]
    # Most accurate first: each point adds the strip of leakage between it and the previous one.
    upper = np.concatenate([[rl], p[:-1, 1]])
    return float(np.sum((upper - p[:, 1]) * (p[:, 0] - ra)))


# -- the paper's artefacts ----------------------------------------------------------------


def n_defenders(defenders: pd.Series) -> pd.Series:
    """Number of decoders in the comma-joined ``defenders`` column ("" = none)."""
    return defenders.fillna("").map(lambda s: len([d for d in s.split(",") if d.strip()])).astype("int64")


def _ok_models(res: Results) -> pd.DataFrame:
    """Finished models of the partitioning defense (or none): what the paper's artefacts compare."""
    m = res.models
    return m[(m["status"] == "ok") & m["defense"].isin(PAPER_DEFENSES)]


def _ok_joined(res: Results) -> pd.DataFrame:
    """Successful attacks on :func:`_ok_models`."""
    j = res.joined()
    return j[(j["status"] == "ok") & (j["status_model"] == "ok") & j["defense"].isin(PAPER_DEFENSES)]


def table_i(res: Results) -> pd.DataFrame:
    """Table I: per λ, model accuracy and each attacker's MSE/SSIM (no or one defender)."""
    j = _ok_joined(res)
    j = j[n_defenders(j["defenders"]) <= 1]
    models = _ok_models(res)
    models = models[n_defenders(models["defenders"]) <= 1]
    if j.empty or j.groupby(CONFIG, observed=True)["lam"].nunique().max() < 2:
        raise Missing("Table I: needs successful attacks on models with at most one defender at two or more λ "
                      "values of one configuration; these tables have none")
    keys = [*CONFIG, "defenders", "lam"]
    acc = aggregate(models, keys, ["test_acc"])
    attacks = aggregate(j, [*keys, "attacker"], ["mse", "ssim"])
    return attacks.merge(acc, on=keys, how="left")


def defender_class(defenders: pd.Series) -> pd.Series:
    """'none' | 'single' | 'multiple': the columns of Table II."""
    n = n_defenders(defenders)
    return pd.Series(np.select([n == 0, n == 1], ["none", "single"], "multiple"), index=defenders.index)


def table_ii(res: Results) -> pd.DataFrame:
    """Table II: none / single / multiple defenders, accuracy and each attacker's MSE and SSIM."""
    j = _ok_joined(res)
    if j.empty or not (n_defenders(j["defenders"]) > 1).any():
        raise Missing("Table II: no model trained with more than one defender has successful attacks in these tables")
    j = j.assign(defenders_present=defender_class(j["defenders"]))
    models = _ok_models(res)
    models = models.assign(defenders_present=defender_class(models["defenders"]))
    keys = [*CONFIG, "defenders_present", "defenders", "lam"]
    acc = aggregate(models, keys, ["test_acc"])
    attacks = aggregate(j, [*keys, "attacker"], ["mse", "ssim"])
    return attacks.merge(acc, on=keys, how="left")


def table_iii(res: Results) -> pd.DataFrame:
    """Table III: #CG / #DF / #TI per partition × defense, from each model's attacker with the
    most correctly gendered faces (the strongest attribute attack), averaged over seeds."""
    j = _ok_joined(res)
    j = j.dropna(subset=["n_cg"])
    if j.empty:
        raise Missing("Table III: no attribute results in these tables (attacks.n_cg is null everywhere)")
    best = (j.sort_values(["n_cg", "n_df", "attacker"], ascending=[False, False, True], kind="mergesort")
            .drop_duplicates(KEYS))
    keys = [*CONFIG, *SETTING]
    out = aggregate(best, keys, ["n_cg", "n_df", "n_ti", "gender_acc"])
    attackers = best.groupby(keys, observed=True)["attacker"].agg(lambda s: ",".join(sorted(set(s))))
    return out.merge(attackers.rename("attackers").reset_index(), on=keys, how="left")


FIG5_METRICS = ["test_acc", "reprint_acc", "ssim", "mse", "dpd"]


def figure5_data(res: Results) -> pd.DataFrame:
    """Figure 5: the five criteria per partition × defense (× λ), best attack per model, over seeds."""
    mw = _ok_models(res).merge(worst_case(res.attacks), on=KEYS, how="inner")
    if mw.dropna(subset=["ssim"]).empty:
        raise Missing("Figure 5: no successfully attacked models (defense none/partition) in these tables")
    return aggregate(mw, [*CONFIG, *SETTING], FIG5_METRICS)


def _find_key(obj: Any, key: str) -> Any:
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for v in obj.values():
            found = _find_key(v, key)
            if found is not None:
                return found
    return None


def epsilon(config_json: pd.Series) -> pd.Series:
    """The DP-pixelation privacy parameter ε: the models table has no column for it, so it is
    read from the ``epsilon`` key anywhere in a model's ``config_json`` (null when absent)."""
    return config_json.map(lambda s: _find_key(json.loads(s), "epsilon") if isinstance(s, str) else None).astype("Float64")


def figure7_data(res: Results) -> pd.DataFrame:
    """Figure 7: DP image pixelation, SSIM and classification accuracy against ε."""
    mw = res.models_with_worst()
    dp = mw[(mw["defense"] == "dp_pixelation") & (mw["status"] == "ok")]
    if dp.empty:
        raise Missing("Figure 7: no dp_pixelation models in these tables")
    dp = dp.assign(epsilon=epsilon(dp["config_json"])).dropna(subset=["epsilon"])
    if dp.empty:
        raise Missing("Figure 7: dp_pixelation models carry no 'epsilon' in config_json")
    return aggregate(dp, ["sweep", "dataset", "arch", "epsilon"], ["ssim", "test_acc"])


def frontiers(res: Results) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All placeable models with a ``pareto`` flag per (sweep, dataset), and one hypervolume
    row per (sweep, dataset) with reference point (accuracy 0, SSIM 1)."""
    mw = res.models_with_worst()
    mw = mw[mw["status"] == "ok"].dropna(subset=["test_acc", "ssim"])
    if mw.empty:
        raise Missing("Frontier: no model has both a test accuracy and an attacked SSIM")
    parts, hv = [], []
    for (sweep, dataset), g in mw.groupby(["sweep", "dataset"], observed=True, sort=True):
        mask = pareto_mask(g["test_acc"].to_numpy(float), g["ssim"].to_numpy(float))
        parts.append(g.assign(on_frontier=mask))
        hv.append({"sweep": sweep, "dataset": dataset, "n_models": len(g), "n_pareto": int(mask.sum()),
                   "hypervolume": hypervolume(g[["test_acc", "ssim"]].to_numpy(float))})
    return pd.concat(parts, ignore_index=True), pd.DataFrame(hv)


def in_setting(df: pd.DataFrame, setting: Sequence) -> pd.Series:
    """Rows of ``df`` whose (defense, defenders, λ) equal ``setting``."""
    return pd.concat([df[c] == v for c, v in zip(SETTING, setting)], axis=1).all(axis=1)


def natural_key(s: str) -> tuple:
    """Sort ``pool2`` before ``pool10``: partitions and attackers in reading order."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(s)))


def figure4_data(res: Results) -> pd.DataFrame:
    """Figure 4's images: per partition × defense (× λ), the lowest-seed model and its strongest
    (max SSIM) attacker among those whose reconstructions were saved."""
    recon = res.reconstructions()
    if recon.empty:
        raise Missing("Figure 4: no reconstructions in these tables (a sweep saves them with --save-reconstructions)")
    j = _ok_joined(res)
    j = j[j["attack_id"].isin(recon["attack_id"])].dropna(subset=["ssim"])
    if j.empty:
        raise Missing("Figure 4: the saved reconstructions belong to no successful attack")
    picked = (j.sort_values(["seed", "ssim", "attacker"], ascending=[True, False, True], kind="mergesort")
              .drop_duplicates([*CONFIG, *SETTING]))
    cols = [*CONFIG, *SETTING, "seed", "model_id", "attack_id", "attacker", "ssim"]
    return picked[cols].merge(recon[["sweep", "attack_id", "index", "original", "reconstruction"]],
                              on=["sweep", "attack_id"], how="inner")
