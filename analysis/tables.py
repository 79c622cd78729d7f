"""Sweep statistics and the paper's tables, as plain pandas over the farm's Parquet tables.

Every builder returns a tidy DataFrame (one row per configuration, ready for CSV) and
raises :class:`Missing` with a reader-facing reason when the tables hold nothing it could
be built from: an artefact is reported missing, never filled with made-up numbers.

The unit of leakage is a model attacked at one partition: an undefended model does not
depend on the partition, so it is one model per seed, attacked (and shown) at every partition.
Every number comes with a 95 % interval (:mod:`analysis.uncertainty` says which method).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.fs as pafs

from analysis.uncertainty import (
    LEVEL,
    METHODS,
    bootstrap,
    newcombe,
    paired_images,
    strongest_of_means,
    t_crit,
    wilson,
)
from pp_cluster.results.fs import resolve
from pp_cluster.results.rules import (
    FAMILIES,
    OK,
    STRONGEST,
    WORST_KEYS,
    competing,
    competing_on,
    family,
    is_baseline,
    label_tuned,
    pareto_mask,
    strongest,
    succeeded,
)
from pp_cluster.results.rules import (  # the shared rules: strongest attacker, baselines, Pareto
    MODEL_KEYS as KEYS,
)
from pp_cluster.results.store import ResultStore

# The configuration a row belongs to; seeds are what gets averaged over.
CONFIG = ["sweep", "dataset", "arch", "partition"]
# What distinguishes configurations within one partition; seeds are averaged within a setting.
SETTING = ["defense", "defenders", "lam"]
# The paper's tables and Figures 4–5 compare privacy partitioning against no defense.
PAPER_DEFENSES = ("none", "partition")
# The per-image values behind a metric: what a single run's bootstrap resamples.
IMAGES = {"ssim": "ssim_images", "mse": "mse_images"}
# The interval a single run has for each summarised column (``<column>_ci_lo/_ci_hi`` of its row);
# a group of two or more seeds gets the t interval over seeds instead.
RUN_CI = {
    "test_acc": "wilson",
    "reprint_acc": "wilson",
    "ssim": "bootstrap",
    "mse": "bootstrap",
    "ssim_baseline": "bootstrap",
    "mse_baseline": "bootstrap",
    **{f"step{k}": "bootstrap" for k in range(1, 5)},  # leakage_by_family: worst-case SSIM per step
    "n_cg": "wilson",
    "n_df": "wilson",
}
# Settings are paired with the undefended model trained the same way from the same seed.
PAIR = ["sweep", "dataset", "arch", "recipe", "epochs", "lr", "batch_size", "seed", "partition"]
CI_METHOD = METHODS["t"]


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
    _cache: dict = field(default_factory=dict, repr=False)  # models_with_worst, computed once

    def joined(self) -> pd.DataFrame:
        """Attack rows with their model's columns; clashing model columns get a ``_model`` suffix:
        ``partition`` is where the attack split the model, ``partition_model`` where the model was
        defended (null when undefended); ``status`` is the attack's, ``status_model`` the model's."""
        return self.attacks.merge(self.models, on=KEYS, how="inner", suffixes=("", "_model"))

    def models_with_worst(self) -> pd.DataFrame:
        """One row per (model, partition it was attacked at): the model's columns (its own
        partition as ``partition_model``), a Wilson interval of its test accuracy
        (``test_acc_ci_lo/_ci_hi``) and the columns of :func:`worst_case`. An undefended model
        appears at every partition; a model never attacked appears once, at its own partition."""
        key = ("models_with_worst", id(self.models), id(self.attacks))  # (tables replaced: computed anew)
        if key not in self._cache:
            self._cache.clear()
            self._cache[key] = self._models_with_worst()
        return self._cache[key].copy()

    def _models_with_worst(self) -> pd.DataFrame:
        m = self.models.rename(columns={"partition": "partition_model"})
        m = _with_ci(m, "test_acc", [wilson(acc * n, n) for acc, n in zip(m["test_acc"], m["n_test"])])
        mw = m.merge(worst_case(self.attacks), on=KEYS, how="left")
        mw["partition"] = mw["partition"].fillna(mw["partition_model"])
        cols = list(m.columns)
        cols.insert(cols.index("partition_model"), "partition")
        return mw[cols + [c for c in mw.columns if c not in cols]]

    @property
    def unreadable(self) -> dict[str, str]:
        """Results files that could not be read and were left out: path -> reason."""
        return dict(self._store.unreadable) if self._store is not None else {}

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
    tables["attacks"] = label_tuned(tables["attacks"])
    if sweep is not None and tables["models"].empty:
        known = sorted(_plain_sweep(store.read("models"))["sweep"].dropna().unique())
        raise ValueError(f"sweep {sweep!r} has no models under {root!r}; sweeps there: {known}")
    return Results(**tables, root=str(root), sweep=sweep, _store=store)


def _require(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: no column(s) {missing} (have {list(df.columns)})")


# -- the strongest attacker ---------------------------------------------------------------


def _with_ci(df: pd.DataFrame, name: str, cis: list[tuple[float, float]]) -> pd.DataFrame:
    """``df`` with the (lo, hi) pairs ``cis`` (one per row) as ``<name>_ci_lo`` and ``<name>_ci_hi``."""
    return df.assign(
        **{f"{name}_ci_lo": [float(c[0]) for c in cis], f"{name}_ci_hi": [float(c[1]) for c in cis]}
    )


def _bootstrap_strongest(attacks: pd.DataFrame, metric: str, level: float) -> pd.DataFrame:
    """Per (model, partition) the bootstrap interval (``lo``, ``hi``) of the strongest of
    ``attacks``' means of ``metric``: each resample of the images recomputes every attacker's
    mean and picks the strongest, so the interval covers the choice of attacker too."""
    stat = strongest_of_means(STRONGEST[metric])

    def ci(lists: pd.Series) -> tuple[float, float]:
        samples = paired_images(lists)
        return bootstrap(samples, stat, level) if samples else (math.nan, math.nan)

    groups = attacks.dropna(subset=[metric]).groupby(WORST_KEYS, dropna=False, sort=True)[IMAGES[metric]]
    keys = groups.size().index.to_frame(index=False)
    return _with_ci(keys, "", [ci(lists) for _, lists in groups]).rename(
        columns={"_ci_lo": "lo", "_ci_hi": "hi"}
    )


def _strongest_with_ci(attacks: pd.DataFrame, metric: str, name: str, level: float) -> pd.DataFrame:
    """Per (model, partition) of ``attacks`` the strongest value of ``metric`` as column ``name``,
    its attacker (``<name>_attacker``) and interval (``<name>_ci_lo/_ci_hi``): bootstrap over the
    images where they were stored, Wilson over ``n_eval`` for reprint accuracy."""
    best = strongest(attacks, WORST_KEYS, [(metric, STRONGEST[metric])])
    out = best[WORST_KEYS].assign(
        **{name: best[metric].astype("float64"), f"{name}_attacker": best["attacker"]}
    )
    if metric in IMAGES:
        cis = _bootstrap_strongest(attacks, metric, level).rename(
            columns={"lo": f"{name}_ci_lo", "hi": f"{name}_ci_hi"}
        )
        return out.merge(cis, on=WORST_KEYS, how="left")
    if metric == "reprint_acc":
        return _with_ci(out, name, [wilson(p * n, n) for p, n in zip(best[metric], best["n_eval"])])
    return out


def worst_case(attacks: pd.DataFrame, level: float = LEVEL) -> pd.DataFrame:
    """Per model and partition, the strongest successful attacker on each metric, which one it
    was, and the strongest baseline beside it.

    Columns: sweep, model_id, partition, n_attacks (successful non-baseline attacks), then per
    metric of ``STRONGEST`` its value, ``<metric>_attacker`` and ``<metric>_baseline``, with
    ``_ci_lo/_ci_hi`` intervals for SSIM and MSE (bootstrap over the images, of the worst case and
    of the baseline) and reprint accuracy (Wilson). A metric no attacker measured (e.g. DPD
    offline) stays null.
    """
    _require(
        attacks,
        [*WORST_KEYS, "attacker", "status", *STRONGEST, *IMAGES.values(), "n_eval"],
        "worst_case(attacks)",
    )
    ok = attacks[succeeded(attacks)]
    real, base = ok[~is_baseline(ok)], ok[is_baseline(ok)]
    out = ok[WORST_KEYS].drop_duplicates().sort_values(WORST_KEYS, kind="mergesort").reset_index(drop=True)
    n = real.groupby(WORST_KEYS, dropna=False).size().rename("n_attacks").reset_index()
    out = out.merge(n, on=WORST_KEYS, how="left")
    out["n_attacks"] = out["n_attacks"].fillna(0).astype("int64")
    for metric in STRONGEST:
        rivals = competing_on(ok, metric)  # reprint accuracy: no white-box attacker (rules.NOT_WHITE_BOX)
        out = out.merge(_strongest_with_ci(rivals, metric, metric, level), on=WORST_KEYS, how="left")
        baseline = _strongest_with_ci(base, metric, f"{metric}_baseline", level)
        out = out.merge(baseline.drop(columns=f"{metric}_baseline_attacker"), on=WORST_KEYS, how="left")
    return out


def _family_steps(res: Results, level: float) -> tuple[pd.DataFrame, pd.DataFrame, list[pd.DataFrame]]:
    """Per attacked model (:func:`_attacked`), the strongest SSIM over the attackers of the first
    k steps of :data:`FAMILIES` (columns ``step<k>`` with the image bootstrap's ``_ci_lo/_ci_hi``);
    who joins at each step, per sweep (a frame indexed by sweep, columns ``step<k>``: the joining
    attackers' names, "" for none); and each step's competing attacks (the first k steps' together).

    "The defenders' family" is every decoder a model of the same sweep was defended with, so a
    sweep's undefended models are judged by its defended models' ladder, and one sweep's
    defenders are not another's (a results root may hold several sweeps). A model's step k is
    null unless it has a successful attack of every step up to k that its sweep has attackers
    for: a model whose white-box or tuned attacks are still running (or failed) would otherwise
    repeat its step-2 value at steps 3 and 4 and be averaged with models that have them,
    understating what those steps add."""
    j = res.joined()
    j = j[succeeded(j) & (j["status_model"] == OK) & j["partition"].notna()]
    place = pd.Series(None, index=j.index, dtype=object)
    for sweep, g in j.groupby("sweep", sort=False, observed=True):
        own = res.models.loc[res.models["sweep"] == sweep, "defenders"].dropna()
        names = sorted({d for ds in own for d in str(ds).split(",") if d})
        place.loc[g.index] = family(g, names)
    j = j.assign(family=place).dropna(subset=["family"])
    if j.empty:
        raise Missing("Leakage by attacker knowledge: no successful attacks to rank")
    rows = _attacked(res)[[*PAIR, *SETTING, "model_id"]].reset_index(drop=True)
    who = pd.DataFrame(index=pd.Index(sorted(set(rows["sweep"]) | set(j["sweep"])), name="sweep"))
    subs = []
    complete = np.ones(len(rows), dtype=bool)  # the model has every step so far that has attackers
    for k in range(1, len(FAMILIES) + 1):
        step = FAMILIES[k - 1]
        sub = j[j["family"].isin(FAMILIES[:k])]
        joining = j[j["family"] == step].groupby("sweep", observed=True)["attacker"]
        names = joining.agg(lambda s: ", ".join(sorted(s.astype(str).unique(), key=natural_key)))
        who[f"step{k}"] = names.reindex(who.index).fillna("")
        subs.append(sub)
        cols = [f"step{k}", f"step{k}_ci_lo", f"step{k}_ci_hi"]
        if sub.empty:
            rows = rows.assign(**dict.fromkeys(cols, math.nan))
            continue
        best = _strongest_with_ci(sub, "ssim", f"step{k}", level).drop(columns=f"step{k}_attacker")
        rows = rows.merge(best, on=WORST_KEYS, how="left")
        has = j.loc[j["family"] == step, WORST_KEYS].drop_duplicates().assign(_has=True)
        flag = rows[WORST_KEYS].merge(has, on=WORST_KEYS, how="left")["_has"].notna()
        needed = rows["sweep"].map(who[f"step{k}"]).fillna("") != ""
        complete &= (flag | ~needed).to_numpy()
        rows.loc[~complete, cols] = math.nan
    return rows, who, subs


def _joining(who: pd.DataFrame, sweeps: pd.Series, k: int) -> pd.Series:
    """Who joins at step ``k`` in each of ``sweeps``' sweeps ("" for none)."""
    return sweeps.map(who[f"step{k}"]).fillna("")


def leakage_by_family(res: Results, level: float = LEVEL) -> pd.DataFrame:
    """How the worst case grows with what the attacker knows: per partition and setting, the
    strongest SSIM over the attackers of the first k steps of :data:`FAMILIES` — (1) the
    defenders' own family, (2) + decoder families the defense never trained against, (3) + the
    white-box inversion, (4) + tuned attackers — over seeds with intervals (a single run: the
    bootstrap over the images of that step's strongest attacker).

    Columns: CONFIG, SETTING, then per step k = 1..4 ``step<k>_mean``/``_ci_lo``/``_ci_hi``/
    ``_n`` (seeds) and ``step<k>_attackers`` (who is in that step; empty: the step adds no one,
    and its value repeats the step before). "The defenders' family" is every decoder a model
    of the sweep was defended with, so undefended models are judged by the same ladder.
    """
    rows, who, _ = _family_steps(res, level)
    out = summarise(rows, [*CONFIG, *SETTING], [f"step{k}" for k in range(1, len(FAMILIES) + 1)], level)
    return out.assign(
        **{f"step{k}_attackers": _joining(who, out["sweep"], k) for k in range(1, len(FAMILIES) + 1)}
    )


FAMILY_GAIN_COLUMNS = [
    *CONFIG,
    *SETTING,
    "seed",
    "model_id",
    "from_step",
    "step",
    "attackers",
    "before",
    "before_ci_lo",
    "before_ci_hi",
    "after",
    "after_ci_lo",
    "after_ci_hi",
    "gain",
    "gain_ci_lo",
    "gain_ci_hi",
    "significant",
]


def leakage_gains(res: Results, level: float = LEVEL) -> pd.DataFrame:
    """How much each step of the knowledge ladder raises one model's worst case: per attacked
    model and step k that adds attackers, ``after`` (the worst-case SSIM over the attackers of
    steps 1..k, with its bootstrap interval) − ``before`` (over steps 1..k−1), and, where two
    or more steps add attackers, the whole climb from step 1 to the model's last step
    (``from_step`` 1). A gain is ≥ 0 (a
    maximum over more attackers); its interval is a paired bootstrap over the images (the same
    images resampled for every attacker of the model, both maxima recomputed), ``significant``
    when it excludes 0. A model without every step so far (:func:`_family_steps`) has no row
    for that step. ``attackers`` names who joins between ``from_step`` and ``step``.

    Columns: :data:`FAMILY_GAIN_COLUMNS`, one row per (model, partition, step)."""
    rows, who, subs = _family_steps(res, level)
    by_model = [dict(iter(s.groupby(WORST_KEYS, sort=False))) for s in subs]  # per step: key -> attacks
    out = []
    for _, r in rows.iterrows():
        key = tuple(r[WORST_KEYS])
        attacks = {k: g.get(key, subs[k - 1].iloc[:0]) for k, g in enumerate(by_model, start=1)}
        steps = [k for k in range(2, len(FAMILIES) + 1) if who.at[r["sweep"], f"step{k}"]]
        done = [k for k in steps if pd.notna(r[f"step{k}"])]
        spans = [(k - 1, k) for k in done] + ([(1, done[-1])] if len(done) >= 2 else [])
        for start, end in spans:
            if pd.isna(r[f"step{start}"]):
                continue
            old, new = attacks[start], attacks[end]
            joining = new[~new["attack_id"].isin(old["attack_id"])]
            (lo, hi) = _gain_ci(list(old["ssim_images"]), list(joining["ssim_images"]), level)
            out.append(
                {
                    **{c: r[c] for c in [*CONFIG, *SETTING, "seed", "model_id"]},
                    "from_step": start,
                    "step": end,
                    "attackers": ", ".join(sorted(joining["attacker"].astype(str).unique(), key=natural_key)),
                    **{f"before{x}": r[f"step{start}{x}"] for x in ("", "_ci_lo", "_ci_hi")},
                    **{f"after{x}": r[f"step{end}{x}"] for x in ("", "_ci_lo", "_ci_hi")},
                    "gain": r[f"step{end}"] - r[f"step{start}"],
                    "gain_ci_lo": lo,
                    "gain_ci_hi": hi,
                }
            )
    if not out:
        raise Missing("Leakage gains: no model has two steps of the knowledge ladder")
    t = pd.DataFrame(out)
    lo = t["gain_ci_lo"].astype("float64")
    t["significant"] = (lo > 0).astype("boolean").mask(lo.isna())
    return t[FAMILY_GAIN_COLUMNS]


def _gain_ci(before: list, joining: list, level: float) -> tuple[float, float]:
    """The paired bootstrap interval of max(all means) − max(``before``'s means) over the images."""
    samples = paired_images(before + joining) if before and joining else None
    if samples is None:
        return math.nan, math.nan
    pick = strongest_of_means(STRONGEST["ssim"])
    n = len(before)
    return bootstrap(samples, lambda *s, axis=-1: pick(*s, axis=axis) - pick(*s[:n], axis=axis), level)


FAMILY_PAIRED_COLUMNS = [
    *CONFIG,
    *SETTING,
    "step",
    "knowledge",
    "attackers",
    "n_pairs",
    "seeds",
    "defended",
    "undefended",
    "diff",
    "diff_ci_lo",
    "diff_ci_hi",
    "ci_method",
    "significant",
]


def leakage_by_family_paired(res: Results, level: float = LEVEL) -> pd.DataFrame:
    """Does the defense still lower the worst case as the attacker knows more? Per partition,
    defended setting and step k of :data:`FAMILIES`, the mean over seeds of (the defended
    model's step-k worst-case SSIM − that of the undefended model of the same seed and recipe,
    attacked at that partition), as :func:`paired_differences` pairs them: a t interval over
    the seed differences with two or more pairs; with one, a paired bootstrap over the images
    (the same images resampled for both models, the step's strongest attacker recomputed).

    A step that adds no attacker is left out (it would repeat the step before). Columns:
    :data:`FAMILY_PAIRED_COLUMNS`; ``knowledge`` names the step, ``attackers`` who joins at it.
    """
    rows, who, subs = _family_steps(res, level)
    pairs = _with_undefended_twin(rows, "Leakage by knowledge, paired")
    parts = []
    for k in range(1, len(FAMILIES) + 1):
        # A step that adds no attacker in a sweep would repeat the one before: left out there.
        with_step = pairs[_joining(who, pairs["sweep"], k) != ""]
        if with_step.empty:
            continue
        part = _paired_column(with_step, f"step{k}", "ssim", _real_images(subs[k - 1]), level)
        if part is not None:
            parts.append(
                part.assign(step=k, knowledge=FAMILIES[k - 1], attackers=_joining(who, part["sweep"], k))
            )
    if not parts:
        raise Missing("Leakage by knowledge, paired: the paired models have no worst-case SSIM at any step")
    return _significant(parts)[FAMILY_PAIRED_COLUMNS]


def attack_intervals(attacks: pd.DataFrame, level: float = LEVEL) -> pd.DataFrame:
    """``attacks`` with each attack's own intervals: ``ssim_ci_lo/_ci_hi`` and ``mse_ci_lo/_ci_hi``
    (bootstrap of its mean over the images), ``reprint_acc_ci_lo/_ci_hi`` (Wilson over ``n_eval``)."""
    out = attacks.copy()
    for metric, col in IMAGES.items():
        stat = strongest_of_means(STRONGEST[metric])

        def ci(images: Any, value: float, stat=stat) -> tuple[float, float]:
            samples = None if pd.isna(value) else paired_images([images])
            return bootstrap(samples, stat, level) if samples else (math.nan, math.nan)

        out = _with_ci(out, metric, [ci(x, v) for x, v in zip(out[col], out[metric])])
    return _with_ci(out, "reprint_acc", [wilson(p * k, k) for p, k in zip(out["reprint_acc"], out["n_eval"])])


# -- statistics over seeds ----------------------------------------------------------------


def aggregate(
    df: pd.DataFrame, by: Sequence[str], metrics: Sequence[str], level: float = LEVEL
) -> pd.DataFrame:
    """Mean, sample std, n and a ``level`` confidence interval of each metric over the rows of
    each ``by`` group (the seeds). One row per group; columns ``<metric>_{mean,std,n,ci_lo,ci_hi}``.

    The interval is mean ± t(level, n−1)·std/√n (:data:`CI_METHOD`); it is null for n < 2,
    where no spread can be estimated (:func:`summarise` gives those a single run's interval).
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
        half = t_crit(n[m], level) * std[m] / np.sqrt(n[m])
        parts.append(
            pd.DataFrame(
                {
                    f"{m}_mean": mean[m],
                    f"{m}_std": std[m],
                    f"{m}_n": n[m].astype("int64"),
                    f"{m}_ci_lo": mean[m] - half,
                    f"{m}_ci_hi": mean[m] + half,
                }
            )
        )
    out = pd.concat(parts, axis=1).reset_index()
    out.attrs["ci_method"] = CI_METHOD
    return out


def summarise(
    rows: pd.DataFrame, by: Sequence[str], metrics: Sequence[str], level: float = LEVEL
) -> pd.DataFrame:
    """:func:`aggregate`, with an interval for every number: a group of one run takes that run's
    own interval (its row's ``<metric>_ci_lo/_ci_hi``, see :data:`RUN_CI`). ``<metric>_ci_method``
    names the method of each row's interval (a key of :data:`analysis.uncertainty.METHODS`)."""
    by = list(by)
    out = aggregate(rows, by, metrics, level)
    for m in metrics:
        n = out[f"{m}_n"]
        method = pd.Series(np.where(n >= 2, "t", None), index=out.index, dtype=object)
        if f"{m}_ci_lo" in rows.columns:
            lone = (
                rows.dropna(subset=[m])
                .groupby(by, dropna=False, observed=True, sort=True)[[f"{m}_ci_lo", f"{m}_ci_hi"]]
                .first()
                .reset_index()
            )
            own = out[by].merge(lone, on=by, how="left")
            single = (n == 1) & own[f"{m}_ci_lo"].notna()
            out.loc[single, f"{m}_ci_lo"] = own.loc[single, f"{m}_ci_lo"]
            out.loc[single, f"{m}_ci_hi"] = own.loc[single, f"{m}_ci_hi"]
            method[single] = RUN_CI[m]
        out[f"{m}_ci_method"] = method
    return out


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
        raise ValueError(
            f"hypervolume: points must be an (n, 2) array of (accuracy, leakage), got shape {p.shape}"
        )
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


def _attacked(res: Results, suites: bool = False) -> pd.DataFrame:
    """Finished models at each partition they were attacked at (:meth:`Results.models_with_worst`),
    single-partition and undefended ones; with ``suites`` the partition-suite models instead
    (Section IV-F, :func:`partition_suites`). The other tables leave those out: at one of its
    partitions a suite model has the setting of that partition's own model, and averaged with
    it would count a seed twice."""
    mw = res.models_with_worst()
    return mw[succeeded(mw) & mw["partition"].notna() & (mw["partition_suite"].notna() == suites)]


def _paper_rows(res: Results) -> pd.DataFrame:
    """:func:`_attacked` rows of the partitioning defense (or none): what the paper's artefacts compare."""
    rows = _attacked(res)
    return rows[rows["defense"].isin(PAPER_DEFENSES)]


def _paper_attacks(res: Results) -> pd.DataFrame:
    """Successful attacks (baselines included) on finished models of :data:`PAPER_DEFENSES`
    (partition suites left out, as in :func:`_attacked`)."""
    j = res.joined()
    return j[
        succeeded(j)
        & (j["status_model"] == OK)
        & j["defense"].isin(PAPER_DEFENSES)
        & j["partition"].notna()
        & j["partition_suite"].isna()
    ]


def _per_attacker(j: pd.DataFrame, rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Each attacker's MSE/SSIM (and the model accuracy) per ``keys``, over seeds, with intervals."""
    acc = summarise(rows, keys, ["test_acc"])
    attacks = summarise(attack_intervals(j), [*keys, "attacker"], ["mse", "ssim"])
    return attacks.merge(acc, on=keys, how="left")


def table_i(res: Results) -> pd.DataFrame:
    """Table I: per λ, model accuracy and each attacker's MSE/SSIM (no or one defender), the
    mean-image baseline among the attackers."""
    j = _paper_attacks(res)
    j = j[n_defenders(j["defenders"]) <= 1]
    rows = _paper_rows(res)
    rows = rows[n_defenders(rows["defenders"]) <= 1]
    # a configuration with one λ (e.g. a Table II sweep run at its λ alone) has no row of Table I
    j = j[j.groupby(CONFIG, observed=True)["lam"].transform("nunique") >= 2]
    if j.empty:
        raise Missing(
            "Table I: needs successful attacks on models with at most one defender at two or more λ "
            "values of one configuration; these tables have none"
        )
    return _per_attacker(j, rows, [*CONFIG, "defenders", "lam"])


def defender_class(defenders: pd.Series) -> pd.Series:
    """'none' | 'single' | 'multiple': the columns of Table II."""
    n = n_defenders(defenders)
    return pd.Series(np.select([n == 0, n == 1], ["none", "single"], "multiple"), index=defenders.index)


def table_ii(res: Results) -> pd.DataFrame:
    """Table II: none / single / multiple defenders, accuracy and each attacker's MSE and SSIM."""
    j = _paper_attacks(res)
    if j.empty or not (n_defenders(j["defenders"]) > 1).any():
        raise Missing(
            "Table II: no model trained with more than one defender has successful attacks in these tables"
        )
    j = j.assign(defenders_present=defender_class(j["defenders"]))
    rows = _paper_rows(res)
    rows = rows.assign(defenders_present=defender_class(rows["defenders"]))
    return _per_attacker(j, rows, [*CONFIG, "defenders_present", "defenders", "lam"])


def with_significance(diffs: pd.DataFrame) -> pd.DataFrame:
    """``diffs`` with float ``diff_ci_lo`` / ``diff_ci_hi`` and ``significant``: true when that
    interval of a difference excludes 0, false when it contains 0, null without an interval."""
    lo, hi = diffs["diff_ci_lo"].astype("float64"), diffs["diff_ci_hi"].astype("float64")
    significant = ((lo > 0) | (hi < 0)).astype("boolean").mask(lo.isna() | hi.isna())
    return diffs.assign(diff_ci_lo=lo, diff_ci_hi=hi, significant=significant)


def falling_prefix(values: Sequence[float]) -> int:
    """How many of ``values``, from the first on, fall strictly (each below the one before); a
    NaN (no value) ends the run, and a first NaN makes it 0."""
    k = 1 if len(values) and not math.isnan(values[0]) else 0
    while k < len(values) and values[k] < values[k - 1]:
        k += 1
    return k


def table_i_shape(res: Results) -> pd.DataFrame:
    """Table I's shape (Section V-B): per configuration and attacker (baselines left out), its mean
    SSIM at each λ of the grid, λ = 0 first, and how far the means fall strictly. Columns: CONFIG,
    ``defenders`` (the λ > 0 suite), ``attacker``, ``lams`` and ``ssim`` (tuples in λ order),
    ``n_decreasing`` (the number of λ values, from 0 on, over which each mean is below the one
    before) and ``decreasing_to`` (the last of them)."""
    t = table_i(res)
    t = t[~is_baseline(t)]
    defended = t[t["lam"] > 0].groupby(CONFIG, observed=True)["defenders"].nunique()
    if (defended > 1).any():
        raise Missing(
            "Table I's shape: a configuration has more than one single-defender suite; give one sweep"
        )
    rows = []
    for config, c in t.groupby(CONFIG, observed=True, sort=True):
        # the configuration's whole grid: a λ an attacker has no result at is NaN and ends its count
        grid = sorted(c["lam"].unique())
        for attacker, g in c.groupby("attacker", observed=True, sort=True):
            means = g.groupby("lam")["ssim_mean"].first()
            ssim = np.array([means.get(lam, np.nan) for lam in grid], dtype=float)
            k = falling_prefix(ssim)
            suite = g.loc[g["lam"] > 0, "defenders"]
            rows.append(
                {
                    **dict(zip(CONFIG, config)),
                    "attacker": attacker,
                    "defenders": suite.iloc[0] if len(suite) else "",
                    "lams": tuple(float(x) for x in grid),
                    "ssim": tuple(ssim),
                    "n_decreasing": k,
                    "decreasing_to": float(grid[k - 1]) if k else math.nan,
                }
            )
    return pd.DataFrame(rows)


def suite_vs_single(res: Results, level: float = LEVEL) -> pd.DataFrame:
    """Table II's comparison: per configuration, λ and attacker (baselines left out), the models
    defended by several decoders minus those defended by one, paired by seed (same sweep, recipe
    and λ); mean and t interval over the seed differences. ``significant``: the interval excludes 0."""
    j = _paper_attacks(res)
    j = j[~is_baseline(j) & (j["lam"] > 0)]
    j = j.assign(defenders_present=defender_class(j["defenders"]))
    keys = [*PAIR, "lam", "attacker"]
    single = j[j["defenders_present"] == "single"]
    multiple = j[j["defenders_present"] == "multiple"]
    pairs = multiple.merge(single, on=keys, suffixes=("", "_single"))
    if pairs.empty:
        raise Missing(
            "Suite vs single defender: no multi-defender model has a single-defender twin of its seed and λ"
        )
    by = [*CONFIG, "lam", "defenders", "defenders_single", "attacker"]
    out = []
    for metric in ("ssim", "mse"):
        p = pairs.assign(diff=pairs[metric] - pairs[f"{metric}_single"])
        agg = aggregate(p, by, ["diff", metric, f"{metric}_single"], level)
        out.append(
            agg.assign(metric=metric).rename(
                columns={
                    "diff_n": "n_pairs",
                    f"{metric}_mean": "suite",
                    f"{metric}_single_mean": "single",
                    "diff_mean": "diff",
                }
            )
        )
    out = pd.concat(out, ignore_index=True)
    out = with_significance(out)
    return out[
        [*by, "metric", "n_pairs", "suite", "single", "diff", "diff_ci_lo", "diff_ci_hi", "significant"]
    ]


def best_defenders(res: Results, level: float = LEVEL) -> pd.DataFrame:
    """Which member of a multi-defender suite Algorithm 1 pushed against: per configuration,
    suite, λ and member, the share of the training batches on which it was the best defender
    (the argmin of the distance), in the final epoch and over all epochs; mean and t interval
    over seeds (``share_final_*``, ``share_all_*``). From the epochs table's
    ``best_defender_counts``; models whose tables predate that column are left out. Partition
    suites are left out (their counts are per partition)."""
    m = res.models
    m = m[(m["status"] == OK) & m["partition_suite"].isna() & (n_defenders(m["defenders"]) > 1)]
    e = res.epochs  # (older tables read the column as null)
    e = e[e["best_defender_counts"].notna() & e["model_id"].isin(m["model_id"])]
    if e.empty:
        raise Missing(
            "Best defenders: no multi-defender model's epochs record best_defender_counts "
            "(tables written before that column)"
        )
    models = m.set_index("model_id")
    rows = []
    for mid, g in e.sort_values("epoch").groupby("model_id", sort=True):
        model = models.loc[mid]
        names = model["defenders"].split(",")
        counts = np.array([list(c) for c in g["best_defender_counts"]], dtype=float)
        final, total = counts[-1], counts.sum(axis=0)
        for k, name in enumerate(names):
            rows.append(
                {
                    **{c: model[c] for c in (*CONFIG, "defenders", "lam", "seed")},
                    "defender": name,
                    "position": k,
                    "share_final": final[k] / final.sum(),
                    "share_all": total[k] / total.sum(),
                }
            )
    df = pd.DataFrame(rows)
    out = aggregate(
        df, [*CONFIG, "defenders", "lam", "position", "defender"], ["share_final", "share_all"], level
    )
    return out.drop(columns="position")


ATTRIBUTE_COUNTS = ["n_cg", "n_df", "n_ti", "gender_acc"]


def attribute_best(attacks: pd.DataFrame) -> pd.DataFrame:
    """Per model and partition the attack with the most correctly gendered faces (then most
    detected faces): the strongest attribute attack, baselines excluded. Adds Wilson intervals
    of #CG and #DF as counts out of #TI (``n_cg_ci_lo/_ci_hi``, ``n_df_ci_lo/_ci_hi``)."""
    real = competing(attacks)
    best = strongest(real, WORST_KEYS, [("n_cg", "max"), ("n_df", "max")])
    n_ti = best["n_ti"].astype("float64")
    for col in ("n_cg", "n_df"):
        best = _with_ci(
            best,
            col,
            [
                (n * lo, n * hi)
                for n, (lo, hi) in zip(
                    n_ti, (wilson(k, n) for k, n in zip(best[col].astype("float64"), n_ti))
                )
            ],
        )
    return best


def table_iii(res: Results) -> pd.DataFrame:
    """Table III: #CG / #DF / #TI per partition × defense, from each model's strongest attribute
    attack (:func:`attribute_best`), over seeds with intervals."""
    attacks = _paper_attacks(res)
    best = attribute_best(attacks)
    if best.empty:
        raise Missing("Table III: no attribute results in these tables (attacks.n_cg is null everywhere)")
    # The chance level beside it: the mean-image baseline's counts on the same model and partition
    # (a constant face is detected and gendered too, so #CG alone is no measure of leakage).
    base = attacks[succeeded(attacks) & is_baseline(attacks)].dropna(subset=["n_cg"])
    base = base.groupby(WORST_KEYS, observed=True)["n_cg"].max().rename("n_cg_baseline").reset_index()
    best = best.merge(base, on=WORST_KEYS, how="left")
    keys = [*CONFIG, *SETTING]
    out = summarise(best, keys, [*ATTRIBUTE_COUNTS, "n_cg_baseline"])
    attackers = best.groupby(keys, observed=True)["attacker"].agg(lambda s: ",".join(sorted(set(s))))
    return out.merge(attackers.rename("attackers").reset_index(), on=keys, how="left")


FIG5_METRICS = ["test_acc", "reprint_acc", "ssim", "mse", "dpd"]
# The mean-image baseline beside the best attacker (the no-information reference).
FIG5_BASELINES = ["ssim_baseline", "mse_baseline"]


def _attackers_of(rows: pd.DataFrame, keys: list[str], col: str) -> pd.Series:
    return rows.groupby(keys, observed=True, dropna=False)[col].agg(
        lambda s: ",".join(sorted(set(s.dropna())))
    )


def figure5_data(res: Results) -> pd.DataFrame:
    """Figure 5: the five criteria per partition × defense (× λ), best attack per model, over
    seeds with intervals, the mean-image baseline's SSIM and MSE beside, and which attackers
    were the strongest on each attack metric (``<metric>_attackers``, comma-joined)."""
    rows = _paper_rows(res)
    if rows.dropna(subset=["ssim"]).empty:
        raise Missing("Figure 5: no successfully attacked models (defense none/partition) in these tables")
    keys = [*CONFIG, *SETTING]
    out = summarise(rows, keys, [*FIG5_METRICS, *FIG5_BASELINES])
    for m in FIG5_METRICS[1:]:
        out = out.merge(
            _attackers_of(rows, keys, f"{m}_attacker").rename(f"{m}_attackers").reset_index(),
            on=keys,
            how="left",
        )
    return out


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
    return config_json.map(
        lambda s: _find_key(json.loads(s), "epsilon") if isinstance(s, str) else None
    ).astype("Float64")


def figure7_data(res: Results) -> pd.DataFrame:
    """Figure 7: DP image pixelation, SSIM and classification accuracy against ε. Its models
    release pixelated images rather than activations, so they have no partition."""
    mw = res.models_with_worst()
    dp = mw[(mw["defense"] == "dp_pixelation") & succeeded(mw)]
    if dp.empty:
        raise Missing("Figure 7: no dp_pixelation models in these tables")
    dp = dp.assign(epsilon=epsilon(dp["config_json"])).dropna(subset=["epsilon"])
    if dp.empty:
        raise Missing("Figure 7: dp_pixelation models carry no 'epsilon' in config_json")
    return summarise(dp, ["sweep", "dataset", "arch", "epsilon"], ["ssim", "test_acc"])


def frontiers(res: Results) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every placeable (model, partition) with a ``pareto`` flag per (sweep, dataset), and one
    hypervolume row per (sweep, dataset) with reference point (accuracy 0, SSIM 1). A point is
    one trained model at one partition (an undefended model is a point at each partition)."""
    mw = res.models_with_worst()
    mw = mw[succeeded(mw)].dropna(subset=["test_acc", "ssim"])
    if mw.empty:
        raise Missing("Frontier: no model has both a test accuracy and an attacked SSIM")
    parts, hv = [], []
    for (sweep, dataset), g in mw.groupby(["sweep", "dataset"], observed=True, sort=True):
        mask = pareto_mask(g["test_acc"].to_numpy(float), g["ssim"].to_numpy(float))
        parts.append(g.assign(on_frontier=mask))
        hv.append(
            {
                "sweep": sweep,
                "dataset": dataset,
                "n_models": len(g),
                "n_pareto": int(mask.sum()),
                "hypervolume": hypervolume(g[["test_acc", "ssim"]].to_numpy(float)),
            }
        )
    return pd.concat(parts, ignore_index=True), pd.DataFrame(hv)


def figure4_data(res: Results) -> pd.DataFrame:
    """Figure 4's images: per partition × defense (× λ), the lowest-seed model and its strongest
    (max SSIM) attacker among those whose reconstructions were saved."""
    recon = res.reconstructions()
    if recon.empty:
        raise Missing(
            "Figure 4: no reconstructions in these tables (the quick profiles on embedded public data "
            "keep them; any other sweep with --save-reconstructions)"
        )
    j = _paper_attacks(res)
    j = j[~is_baseline(j) & j["attack_id"].isin(recon["attack_id"])].dropna(subset=["ssim"])
    if j.empty:
        raise Missing("Figure 4: the saved reconstructions belong to no successful attack")
    picked = j.sort_values(
        ["seed", "ssim", "attacker"], ascending=[True, False, True], kind="mergesort"
    ).drop_duplicates([*CONFIG, *SETTING])
    cols = [*CONFIG, *SETTING, "seed", "model_id", "attack_id", "attacker", "ssim"]
    return picked[cols].merge(
        recon[["sweep", "attack_id", "index", "original", "reconstruction"]],
        on=["sweep", "attack_id"],
        how="inner",
    )


# Per image: the model's columns beside each image's metrics (what tells two images' settings apart).
PER_IMAGE_MODEL = ["dataset", "arch", "defense", "defenders", "lam", "seed", "partition_suite"]


def per_image(res: Results) -> pd.DataFrame:
    """One row per evaluation image of every successful attack that stored per-image metrics
    (``ssim_images`` / ``mse_images``): sweep, model_id, attack_id, attacker, ``baseline``
    (a no-information attacker), partition, ``index`` (the image's position in the evaluation
    order, the same for every attack of a sweep, and the reconstructions table's ``index``),
    ``ssim``, ``mse`` (NaN where the attack kept no per-image MSE), then the model's
    :data:`PER_IMAGE_MODEL` columns: the images an attacker rebuilds best and worst, per setting."""
    a = res.attacks
    if not a.empty:
        a = a[succeeded(a) & a["ssim_images"].map(lambda v: v is not None and len(v) > 0)]
    if a.empty:
        raise Missing("Per-image metrics: no successful attack stored per-image SSIM/MSE (ssim_images)")
    n = a["ssim_images"].map(len).to_numpy(int)
    out = a[[*KEYS, "attack_id", "attacker", "partition"]].iloc[np.repeat(np.arange(len(a)), n)]
    out = out.reset_index(drop=True)
    out.insert(4, "baseline", is_baseline(out).to_numpy(bool))
    out["index"] = np.concatenate([np.arange(k) for k in n])

    def values(col: str) -> np.ndarray:
        return np.concatenate(
            [
                np.asarray(v, float) if v is not None and len(v) == k else np.full(k, np.nan)
                for v, k in zip(a[col], n)
            ]
        )

    out["ssim"], out["mse"] = values("ssim_images"), values("mse_images")
    return out.merge(res.models[[*KEYS, *PER_IMAGE_MODEL]], on=KEYS, how="left")


# -- defended minus undefended ------------------------------------------------------------

DIFF_METRICS = ("ssim", "test_acc", "n_cg")
DIFF_COLUMNS = [
    *CONFIG,
    *SETTING,
    "metric",
    "n_pairs",
    "seeds",
    "defended",
    "undefended",
    "diff",
    "diff_ci_lo",
    "diff_ci_hi",
    "ci_method",
    "significant",
]


def paired_differences(res: Results, level: float = LEVEL) -> pd.DataFrame:
    """Defended minus undefended, paired by seed: per partition, defended setting and metric
    (worst-case SSIM, test accuracy, #CG where counted), the mean over seeds of (defended model
    − the undefended model of the same seed and recipe, attacked at that partition).

    The interval is the t interval over the seed differences with two or more pairs; with one,
    a paired bootstrap over the images for SSIM (the same image indices resampled for both
    models, the strongest attacker recomputed per resample) and Newcombe's interval for test
    accuracy and #CG (no per-image outcomes are stored). ``significant`` is true only when the
    interval excludes 0, null when there is no interval.

    Columns: :data:`DIFF_COLUMNS`; ``seeds`` is the comma-joined paired seeds.
    """
    rows = _attacked(res)
    rows = rows.merge(attribute_best(res.attacks)[[*WORST_KEYS, "n_cg", "n_ti"]], on=WORST_KEYS, how="left")
    pairs = _with_undefended_twin(rows, "Paired differences")
    images = _real_images(res.attacks)
    parts = []
    for metric in DIFF_METRICS:
        part = _paired_column(pairs, metric, metric, images, level)
        if part is not None:
            parts.append(part.assign(metric=metric))
    if not parts:
        raise Missing("Paired differences: the paired models have no worst-case SSIM, test accuracy or #CG")
    return _significant(parts)[DIFF_COLUMNS]


def _with_undefended_twin(rows: pd.DataFrame, what: str) -> pd.DataFrame:
    """Each defended row of ``rows`` beside the undefended row of the same :data:`PAIR` (its
    columns suffixed ``_u``); ``what`` names the table in the errors."""
    undefended = rows[rows["defense"] == "none"]
    twins = undefended.duplicated(PAIR, keep=False)
    if twins.any():
        ids = sorted(set(undefended.loc[twins, "model_id"]))
        raise ValueError(
            f"{what}: more than one undefended model per {PAIR}: {len(ids)} models, e.g. {ids[:5]}"
        )
    pairs = rows[rows["defense"] != "none"].merge(undefended, on=PAIR, how="inner", suffixes=("", "_u"))
    if pairs.empty:
        raise Missing(
            f"{what}: no defended model has an undefended model of the same seed attacked at its partition"
        )
    return pairs


def _paired_column(
    pairs: pd.DataFrame, column: str, metric: str, images: dict, level: float
) -> pd.DataFrame | None:
    """Per configuration and setting, the mean over seeds of ``column`` − ``column_u`` (the
    values of ``metric``): ``n_pairs``, ``seeds``, ``defended``, ``undefended``, ``diff`` and its
    interval (``ci_method``: t over the seeds; one pair: :func:`_one_pair_ci` on ``images``).
    None when no pair has both values."""
    keys = [*CONFIG, *SETTING]
    p = pairs.dropna(subset=[column, f"{column}_u"])
    if p.empty:
        return None
    p = p.assign(diff=p[column] - p[f"{column}_u"])
    agg = aggregate(p, keys, ["diff", column, f"{column}_u"], level)
    agg["ci_method"] = np.where(agg["diff_n"] >= 2, "t", None)
    single = agg.index[agg["diff_n"] == 1]
    lone = agg.loc[single, keys].merge(p, on=keys, how="left").set_index(single)
    for i, pair in lone.iterrows():
        (lo, hi), method = _one_pair_ci(pair, metric, images, level)
        agg.loc[i, ["diff_ci_lo", "diff_ci_hi", "ci_method"]] = lo, hi, method
    seeds = p.groupby(keys, observed=True, dropna=False)["seed"].agg(lambda s: ",".join(map(str, sorted(s))))
    agg = agg.merge(seeds.rename("seeds").reset_index(), on=keys, how="left")
    names = {
        "diff_n": "n_pairs",
        f"{column}_mean": "defended",
        f"{column}_u_mean": "undefended",
        "diff_mean": "diff",
    }
    return agg.rename(columns=names)


def _significant(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The parts of a paired table together, with ``significant``; no interval, no method."""
    out = with_significance(pd.concat(parts, ignore_index=True))
    out["ci_method"] = out["ci_method"].where(out["diff_ci_lo"].notna())
    return out


# Section V-D(1) on CIFAR-10 (Figure 5 f–j): "the decrease in model accuracy is less than 2 %" at
# every partition, and the best attacker recovers less with the defense and at deeper partitions.
ACC_BUDGET = 0.02
DIRECTION_CHECKS = ("accuracy", "defense", "depth")
DIRECTION_COLUMNS = [
    "sweep",
    "dataset",
    "arch",
    *SETTING,
    "check",
    "partition",
    "n_pairs",
    "seeds",
    "diff",
    "diff_ci_lo",
    "diff_ci_hi",
    "holds",
    "certain",
]


def _depth_differences(res: Results, level: float) -> pd.DataFrame:
    """Per setting and consecutive pair of partitions (reading order), the worst-case SSIM at the
    deeper partition minus at the shallower one, paired by seed (the same training)."""
    rows = _paper_rows(res).dropna(subset=["ssim"])
    keys = ["sweep", "dataset", "arch", *SETTING]
    same = [c for c in PAIR if c != "partition"] + SETTING
    parts = []
    for _, g in rows.groupby(keys, observed=True, dropna=False, sort=True):
        order = sorted(g["partition"].unique(), key=natural_key)
        for shallow, deep in zip(order, order[1:]):
            a, b = g[g["partition"] == shallow], g[g["partition"] == deep]
            p = b[same + ["ssim"]].merge(a[same + ["ssim"]], on=same, suffixes=("", "_u"))
            if p.empty:
                continue
            parts.append(p.assign(partition=f"{deep} − {shallow}", diff=p["ssim"] - p["ssim_u"]))
    if not parts:
        return pd.DataFrame(columns=DIRECTION_COLUMNS)
    p = pd.concat(parts, ignore_index=True)
    by = [*keys, "partition"]
    agg = aggregate(p, by, ["diff"], level).rename(columns={"diff_n": "n_pairs", "diff_mean": "diff"})
    seeds = p.groupby(by, observed=True, dropna=False)["seed"].agg(lambda s: ",".join(map(str, sorted(s))))
    return agg.merge(seeds.rename("seeds").reset_index(), on=by, how="left").assign(check="depth")


def figure5_directions(res: Results, level: float = LEVEL) -> pd.DataFrame:
    """Section V-D(1)'s three claims (Figure 5 f–j) as checks on the tables, per setting:

    - ``accuracy``: per partition, defended − undefended test accuracy (paired by seed, as
      :func:`paired_differences`) is above −:data:`ACC_BUDGET` (a cost under 2 points);
    - ``defense``: per partition, the strongest attacker's SSIM defended − undefended is below 0;
    - ``depth``: per consecutive pair of partitions, the worst-case SSIM at the deeper one minus
      at the shallower one (same seed, same setting) is below 0.

    ``holds`` is the mean on the claimed side, ``certain`` the whole 95 % interval on it (null
    without an interval). Columns: :data:`DIRECTION_COLUMNS`.
    """
    d = paired_differences(res, level)
    d = d[d["metric"].isin(["test_acc", "ssim"])]
    d = d.assign(check=d["metric"].map({"test_acc": "accuracy", "ssim": "defense"}))
    out = pd.concat([d, _depth_differences(res, level)], ignore_index=True)
    bound = np.where(out["check"] == "accuracy", -ACC_BUDGET, 0.0)
    lo, hi = out["diff_ci_lo"].astype("float64"), out["diff_ci_hi"].astype("float64")
    above = out["check"] == "accuracy"  # the accuracy claim bounds a cost; the others a fall
    out["holds"] = np.where(above, out["diff"] >= bound, out["diff"] < bound)
    certain = pd.Series(np.where(above, lo >= bound, hi < bound)).astype("boolean")
    out["certain"] = certain.mask(lo.isna() | hi.isna())
    out["order"] = out["check"].map(DIRECTION_CHECKS.index)
    out = out.sort_values(
        ["sweep", "dataset", "arch", "lam", "defenders", "order", "partition"],
        key=lambda s: s.map(natural_key) if s.name == "partition" else s,
        kind="mergesort",
    )
    return out[DIRECTION_COLUMNS].reset_index(drop=True)


def _real_images(attacks: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    """Successful non-baseline attacks per (sweep, model, partition), for paired bootstraps."""
    real = competing(attacks)
    real = real[real["partition"].notna()]
    return dict(iter(real.groupby(WORST_KEYS, sort=False)))


def _one_pair_ci(pair: pd.Series, metric: str, images: dict, level: float) -> tuple[tuple[float, float], str]:
    """The interval of a single defended − undefended difference (see :func:`paired_differences`)."""
    if metric in IMAGES:

        def lists(model_id: str) -> list:
            a = images.get((pair["sweep"], model_id, pair["partition"]))
            return [] if a is None else list(a.dropna(subset=[metric])[IMAGES[metric]])

        d, u = lists(pair["model_id"]), lists(pair["model_id_u"])
        samples = paired_images(d + u) if d and u else None
        if samples is None:
            return (math.nan, math.nan), "bootstrap"
        pick = strongest_of_means(STRONGEST[metric])
        return bootstrap(
            samples, lambda *s, axis=-1: pick(*s[: len(d)], axis=axis) - pick(*s[len(d) :], axis=axis), level
        ), "bootstrap"
    if metric == "test_acc":  # a rate of n_test images
        n, n_u = pair["n_test"], pair["n_test_u"]
        k, k_u, scale = pair[metric] * n, pair[f"{metric}_u"] * n_u, 1.0
    else:  # a count out of #TI images: the interval of the rate, in images
        n, n_u = pair["n_ti"], pair["n_ti_u"]
        k, k_u, scale = pair[metric], pair[f"{metric}_u"], n
    if pd.isna(n) or pd.isna(n_u) or (metric != "test_acc" and n != n_u):
        return (math.nan, math.nan), "newcombe"
    lo, hi = newcombe(k, n, k_u, n_u, level)
    return (lo * scale, hi * scale), "newcombe"


# -- partition suites (Section IV-F) ------------------------------------------------------

SUITE_METRICS = ("ssim", "test_acc")


def partition_suites(res: Results, level: float = LEVEL) -> pd.DataFrame:
    """Each partition-suite model at each of its partitions beside the models defended at that
    partition alone in the same setting (defense, defenders, λ), over the seeds both have (a
    partition no single model of the setting was defended at keeps the suite's seeds and has no
    single numbers): worst-case SSIM and test accuracy, mean over seeds with intervals.

    Columns: CONFIG, ``partition_suite``, SETTING, ``seeds``, then per metric of
    :data:`SUITE_METRICS` ``suite_<metric>_mean/_std/_n/_ci_lo/_ci_hi/_ci_method`` and the
    same for the ``single_`` models.
    """
    suites = _attacked(res, suites=True)
    if suites.empty:
        raise Missing("Partition suites: no partition-suite model was trained and attacked")
    cols = [c for m in SUITE_METRICS for c in (m, f"{m}_ci_lo", f"{m}_ci_hi")]
    keys = [*PAIR, *SETTING]  # PAIR: the partition, the seed and how the model was trained
    group = [*CONFIG, "partition_suite", *SETTING]
    rows = suites[[*keys, "partition_suite", *cols]].merge(
        _attacked(res)[[*keys, *cols]], on=keys, how="left", suffixes=("", "_single"), indicator=True
    )
    paired = rows["_merge"] == "both"
    rows = rows[paired | ~paired.groupby([rows[c] for c in group]).transform("any")]
    singles = rows[rows["_merge"] == "both"].drop(columns=cols)
    singles = singles.rename(columns={f"{c}_single": c for c in cols})

    def summary(df: pd.DataFrame, prefix: str) -> pd.DataFrame:
        out = summarise(df, group, SUITE_METRICS, level)
        return out.rename(columns={c: f"{prefix}_{c}" for c in out.columns if c not in group})

    out = summary(rows, "suite").merge(summary(singles, "single"), on=group, how="left")
    seeds = rows.groupby(group, observed=True)["seed"].agg(lambda s: ",".join(map(str, sorted(s))))
    return out.merge(seeds.rename("seeds").reset_index(), on=group, how="left")


# -- labels and order ---------------------------------------------------------------------


def config_label(defense: str, defenders: str, lam: float) -> str:
    """'no defense' or e.g. 'λ=0.1 (deconv)', 'noise, λ=0.5': the name of one defense setting."""
    if defense == "none":
        return "no defense"
    other = "" if defense == "partition" else f"{defense}, "
    return f"{other}λ={lam:g}" + (f" ({defenders})" if defenders else "")


def settings(df: pd.DataFrame) -> list[tuple[str, str, float]]:
    """(defense, defenders, λ) triples: undefended first, then by λ and suite."""
    triples = df[SETTING].drop_duplicates().itertuples(index=False, name=None)
    return sorted(triples, key=lambda t: (t[0] != "none", t[0], t[2], t[1]))


def in_setting(df: pd.DataFrame, setting: Sequence) -> pd.Series:
    """Rows of ``df`` whose (defense, defenders, λ) equal ``setting``."""
    return pd.concat([df[c] == v for c, v in zip(SETTING, setting)], axis=1).all(axis=1)


def natural_key(s: str) -> tuple:
    """Sort ``pool2`` before ``pool10``: partitions and attackers in reading order."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(s)))
