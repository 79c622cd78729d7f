"""The results page: one Markdown file generated from a results root's tables alone, with the
paper's own numbers beside ours (``python -m analysis.report ROOT --markdown docs/results_lfw.md``).

It is deterministic so that it can be committed beside the reference tables and checked byte
for byte: no time of generation, no machine-specific paths (the tables are linked relative to
the page), sorted rows, fixed-seed bootstraps. It needs no matplotlib: tables, not figures.
Also home of the small Markdown helpers the report shares.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs

from analysis import paper
from analysis.tables import (
    CONFIG,
    DIFF_METRICS,
    SETTING,
    Missing,
    Results,
    best_defenders,
    config_label,
    epsilon,
    falling_prefix,
    figure5_data,
    figure5_directions,
    frontiers,
    leakage_by_family,
    leakage_by_family_paired,
    leakage_gains,
    load,
    natural_key,
    paired_differences,
    settings,
    suite_vs_single,
    table_i,
    table_i_shape,
    table_ii,
    table_iii,
)
from analysis.uncertainty import METHODS, N_RESAMPLES, t_crit, wilson
from pp_cluster.results.fs import resolve
from pp_cluster.results.rules import BASELINE_ATTACKERS, NOT_WHITE_BOX, TUNED, succeeded, white_box_attackers

# Optional, beside the tables: how the run was made. RUN_KEYS are shown first (the tables fill in
# date, machine and wall time when it has none), any other key after them as it is.
RUN_FILE = "run.json"
RUN_KEYS = {
    "command": "command",
    "date": "date",
    "machine": "machine",
    "wall_seconds": "wall time",
    "notes": "notes",
}
METHOD_NAMES = {"t": "t over seeds", "bootstrap": "bootstrap", "wilson": "Wilson", "newcombe": "Newcombe"}


# -- Markdown helpers -----------------------------------------------------------------------


def md_table(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (pandas' ``to_markdown`` needs tabulate, which we do not depend on)."""
    cells = df.astype(object).where(df.notna(), "").astype(str)
    rows = [list(map(str, df.columns)), ["---"] * len(df.columns), *cells.values.tolist()]
    return "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows)


def fmt(x: float, spec: str = ".3f") -> str:
    return "–" if pd.isna(x) else format(x, spec)


def pct(x: float) -> str:
    return "–" if pd.isna(x) else f"{100 * x:.1f}%"


def interval(mean: float, lo: float = math.nan, hi: float = math.nan, kind: str = "value") -> str:
    """'0.812 [0.790, 0.834]': a number and its 95 % interval ('–' without a number, no brackets
    without an interval). ``kind`` "rate" prints percent, "count" whole images, "value" 3 decimals."""
    if pd.isna(mean):
        return "–"
    if kind == "rate":
        mean, lo, hi, spec, bound = 100 * mean, 100 * lo, 100 * hi, ".1f", ".1f"
    elif kind == "count":
        spec, bound = (".0f" if float(mean).is_integer() else ".1f"), ".1f"
    else:
        spec = bound = ".3f"
    text = format(mean, spec)
    return text if pd.isna(lo) or pd.isna(hi) else f"{text} [{format(lo, bound)}, {format(hi, bound)}]"


# How each column prints (:func:`interval`'s ``kind``); anything else is a "value".
KINDS = {"test_acc": "rate", "reprint_acc": "rate", "n_cg": "count", "n_df": "count"}


def cell(row: pd.Series, metric: str) -> str:
    """:func:`interval` of the ``<metric>_mean`` / ``_ci_lo`` / ``_ci_hi`` columns of a summary row
    (a ``<metric>_baseline`` prints as its metric)."""
    kind = KINDS.get(metric.removesuffix("_baseline"), "value")
    return interval(row[f"{metric}_mean"], row[f"{metric}_ci_lo"], row[f"{metric}_ci_hi"], kind)


def method(row: pd.Series, metric: str) -> str:
    name = row[f"{metric}_ci_method"]
    return "–" if pd.isna(name) else METHOD_NAMES[name]


def sorted_rows(df: pd.DataFrame, then: Callable[[pd.Series], int] = lambda r: 0) -> list[pd.Series]:
    """Rows by partition (reading order), setting (undefended first, then by λ), then ``then``."""
    order = {s: i for i, s in enumerate(settings(df))}
    return sorted(
        (r for _, r in df.iterrows()),
        key=lambda r: (natural_key(r["partition"]), order[(r["defense"], r["defenders"], r["lam"])], then(r)),
    )


def per_config(df: pd.DataFrame, render: Callable[[pd.DataFrame, str], str]) -> str:
    """``render(rows, dataset)`` for each (sweep, dataset, arch), under a bold heading."""
    parts = []
    for (sweep, dataset, arch), g in df.groupby(CONFIG[:3], observed=True, sort=True):
        parts.append(f"**{dataset} / {arch}** (sweep `{sweep}`)\n\n{render(g, dataset)}")
    return "\n\n".join(parts)


# -- Tables I and II in the paper's layout (the report and the MNIST page) -----------------


def _groups(df: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    return [(k, g) for k, g in df.groupby(CONFIG, observed=True, sort=True)]


def _heading(key: tuple) -> str:
    sweep, dataset, arch, partition = key
    return f"**{dataset} / {arch} / {partition}** (sweep `{sweep}`)"


def seeds_note(df: pd.DataFrame, col: str) -> str:
    n = df[col]
    seeds = f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"
    return (
        f"Mean over {seeds} seed(s) and its 95 % interval: t over seeds where there are two or more, else "
        "the single run's (bootstrap over images for SSIM/MSE, Wilson for accuracy and counts); the method "
        "of each is in the CSV (`*_ci_method`)."
    )


def table_i_md(t: pd.DataFrame) -> str:
    """Paper layout: λ across, model accuracy then 'MSE/SSIM' per attacker down. A λ trained
    with more than one single-defender suite gets one column per suite."""
    parts = []
    for key, g in _groups(t):
        cols = sorted(g[["lam", "defenders"]].drop_duplicates().itertuples(index=False, name=None))
        shared = {lam for lam, _ in cols if sum(c[0] == lam for c in cols) > 1}
        heads = [f"{lam:g}" + (f" ({d})" if lam in shared else "") for lam, d in cols]
        cells = {c: g[(g["lam"] == c[0]) & (g["defenders"] == c[1])].set_index("attacker") for c in cols}
        rows = [["model accuracy, %", *[cell(cells[c].iloc[0], "test_acc") for c in cols]]]
        for attacker in sorted(g["attacker"].unique(), key=natural_key):
            rows.append(
                [
                    f"MSE / SSIM {attacker}",
                    *[
                        f"{cell(cells[c].loc[attacker], 'mse')} / {cell(cells[c].loc[attacker], 'ssim')}"
                        if attacker in cells[c].index
                        else "–"
                        for c in cols
                    ],
                ]
            )
        body = pd.DataFrame(rows, columns=["defender weight λ", *heads])
        parts.append(f"{_heading(key)}\n\n{md_table(body)}\n\n{seeds_note(g, 'ssim_n')}")
    return "\n\n".join(parts)


def _suite_label(present: str, defenders: str, lam: float) -> str:
    return "no defender" if present == "none" else f"{present} ({defenders}), λ={lam:g}"


def table_ii_md(t: pd.DataFrame) -> str:
    """Paper layout: defender configurations across; accuracy, then MSE and SSIM per attacker."""
    order = {"none": 0, "single": 1, "multiple": 2}
    parts = []
    for key, g in _groups(t):
        suites = sorted(
            g[["defenders_present", "defenders", "lam"]].drop_duplicates().itertuples(index=False),
            key=lambda s: (order[s[0]], s[2], s[1]),
        )
        labels = [_suite_label(*s) for s in suites]
        attackers = sorted(g["attacker"].unique(), key=natural_key)
        rows = []
        by_suite = [
            g[(g["defenders_present"] == s[0]) & (g["defenders"] == s[1]) & (g["lam"] == s[2])]
            for s in suites
        ]
        rows.append(["model accuracy, %", *[cell(s.iloc[0], "test_acc") for s in by_suite]])
        for metric in ("mse", "ssim"):
            for attacker in attackers:
                vals = [s[s["attacker"] == attacker] for s in by_suite]
                rows.append(
                    [
                        f"{metric.upper()} {attacker}",
                        *[cell(v.iloc[0], metric) if len(v) else "–" for v in vals],
                    ]
                )
        body = pd.DataFrame(rows, columns=["defenders present", *labels])
        parts.append(f"{_heading(key)}\n\n{md_table(body)}\n\n{seeds_note(g, 'ssim_n')}")
    return "\n\n".join(parts)


# -- the page -------------------------------------------------------------------------------


def source_label(root: str, page: Path | str) -> str:
    """How the page names its tables: a URI as it is, a local path relative to the page's folder
    (a working link, the same on every machine)."""
    if "://" in root:
        return root
    return Path(os.path.relpath(Path(root).resolve(), Path(page).resolve().parent)).as_posix()


def run_info(root: str) -> dict:
    """The optional ``run.json`` beside the tables; {} without one."""
    fs, path = resolve(root)
    path = f"{path.rstrip('/')}/{RUN_FILE}"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return {}
    with fs.open_input_stream(path) as f:
        return json.loads(f.read().decode())


def _values(s: pd.Series) -> str:
    vals = sorted({str(v) for v in s.dropna()}, key=natural_key)
    return ", ".join(vals) if vals else "–"


def _duration(seconds: float) -> str:
    return f"{seconds:,.0f} s ({seconds / 3600:.2f} h)" if seconds >= 3600 else f"{seconds:,.0f} s"


def provenance_md(res: Results, info: dict) -> str:
    """How the run was made: ``run.json`` where it says, otherwise what the tables record."""
    m, a = res.models, res.attacks
    start = m["started_at"].min()
    end = pd.concat([m["finished_at"], a["finished_at"]]).max()
    machines = sorted({f"{h} ({g if isinstance(g, str) else 'CPU'})" for h, g in zip(m["host"], m["gpu"])})
    derived = {
        "date": f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} UTC (models.started_at … last finished_at)",
        "machine": ", ".join(machines) + " (models.host, models.gpu)",
        "wall_seconds": _duration((end - start).total_seconds()) + " (first start to last finish)",
    }
    out = []
    if "command" in info:
        out += ["The run was made with:", "", "```", info["command"].strip(), "```", ""]
    else:
        out += [
            f"No `{RUN_FILE}` beside the tables, so the command that made the run is not recorded; "
            "what follows is what the tables themselves record.",
            "",
        ]
    rows = []
    for key, label in RUN_KEYS.items():
        if key == "command":
            continue
        if key in info:
            value = _duration(float(info[key])) if key == "wall_seconds" else str(info[key])
            rows.append((label, value))
        elif key in derived:
            rows.append((label, derived[key]))
    rows += [
        (key, v if isinstance(v, str) else json.dumps(v, sort_keys=True))
        for key, v in sorted(info.items())
        if key not in RUN_KEYS
    ]
    status = ", ".join(f"{k} {v}" for k, v in sorted(m["status"].value_counts().items()))
    a_status = ", ".join(f"{k} {v}" for k, v in sorted(a["status"].value_counts().items()))
    rows += [
        ("sweeps", _values(m["sweep"])),
        ("data set / classifier", f"{_values(m['dataset'])} / {_values(m['arch'])}"),
        ("recipe", _values(m["recipe"])),
        ("epochs", _values(m["epochs"])),
        ("seeds", _values(m["seed"])),
        ("defenses", _values(m["defense"])),
        ("λ", _values(m["lam"].map(lambda x: f"{x:g}"))),
        ("partitions attacked", _values(a["partition"])),
        ("attackers", _values(a["attacker"])),
        ("test images (models.n_test)", _values(m["n_test"])),
        ("images per attack (attacks.n_eval)", _values(a["n_eval"])),
        ("models", f"{len(m)} ({status})"),
        ("attacks", f"{len(a)} ({a_status})"),
        ("pp_cluster / torch", f"{_values(m['package_version'])} / {_values(m['torch_version'])}"),
        ("git commit", _values(m["git_sha"])),
    ]
    out.append(md_table(pd.DataFrame(rows, columns=["", "value"])))
    return "\n".join(out)


def methods_md(res: Results) -> str:
    """Which interval each number has, and how wide the test set makes them."""
    n_test = sorted({int(n) for n in res.models["n_test"].dropna()})
    widths = ", ".join(f"n = {n}: ±{_half_width(n):.1f} points" for n in sorted({*n_test, 40, 474}))
    baselines = ", ".join(f"`{b}`" for b in BASELINE_ATTACKERS)
    return "\n".join(
        [
            "Every number is a mean with its 95 % interval in brackets; the *interval* column names the method:",
            "",
            f"- **t over seeds** where a setting has two or more seeds: {METHODS['t']}.",
            f"- **bootstrap** for a single run's SSIM and MSE: {METHODS['bootstrap']}. For the worst case, each "
            "resample recomputes every attacker's mean and takes the strongest, so the interval includes the "
            "choice of attacker.",
            f"- **Wilson** for a single run's test accuracy (from `test_acc` and `n_test`), reprint accuracy "
            f"(`n_eval`) and #CG / #DF (out of #TI): {METHODS['wilson']}.",
            f"- **Newcombe** for a single pair's difference in accuracy or #CG: {METHODS['newcombe']}.",
            "",
            f"A small test set gives wide intervals. A Wilson interval around 90 % accuracy is, half-width, "
            f"{widths}; {' and '.join(map(str, n_test)) or 'no'} test image(s) stand behind this run's accuracies "
            "(the paper's LFW test set has 474). With one seed, an interval covers evaluation noise only, not "
            f"training noise; with two, the t quantile is {t_crit(pd.Series([2])).iloc[0]:.1f} (one degree of freedom), "
            "so those intervals are very wide and may reach past a metric's range (above 100 %, below 0): they are "
            "shown as computed.",
            "",
            f"*Worst case* = per model and partition the strongest attacker on each metric (max SSIM and reprint "
            f"accuracy, min MSE and DPD), over successful attacks. The no-information baseline ({baselines}: the "
            "mean training image, whatever the input) is shown beside it and never counts as an attacker.",
        ]
    )


def _half_width(n: int, p: float = 0.9) -> float:
    """Half the width, in percentage points, of the Wilson interval of accuracy ``p`` on ``n`` images."""
    lo, hi = wilson(p * n, n)
    return 50 * (hi - lo)


FIG5_PANELS = {
    "test_acc": "Test accuracy, %",
    "reprint_acc": "Reprint accuracy, %: the classifier on the strongest attacker's reconstructions",
    "ssim": "Worst-case SSIM (1 = identical; higher leaks more)",
    "mse": "Worst-case MSE, pixels in [0, 1] (lower leaks more)",
    "dpd": "Worst-case DPD, LPIPS distance (lower leaks more)",
}


WHITE_BOX_REPRINT = (
    "White-box attackers (rmle) are left out of this panel: a white-box reconstruction is optimised "
    "until the local partition maps it to the observed activation, so the rest of the network "
    "classifies it as it classified the input, whatever the image looks like; its reprint accuracy "
    "repeats the test accuracy and says nothing of how recognisable it is."
)


def _has_white_box(res: Results) -> bool:
    names = res.attacks["attacker"].astype(str).str.removesuffix(TUNED)
    return bool(names.isin(white_box_attackers()).any())


def _nulls(res: Results, metric: str) -> str:
    """How many successful attacks lack ``metric``, and why (DPD records its reason)."""
    ok = res.attacks[succeeded(res.attacks)]
    null = ok[metric].isna()
    reasons = sorted(ok.loc[null, "dpd_reason"].dropna().unique()) if metric == "dpd" else []
    why = f"; `attacks.dpd_reason`: {'; '.join(f'“{r}”' for r in reasons)}" if reasons else ""
    if null.all():
        return (
            f"Not measured in this run: `attacks.{metric}` is null for all {len(ok)} successful attacks{why}."
        )
    return f"`attacks.{metric}` is null for {null.sum()} of {len(ok)} successful attacks{why}."


def figure5_md(
    res: Results,
    described: dict[str, str] = paper.FIGURE5,
    where: str = "Figure 5, LFW",
    panels: str = "abcde",
) -> str:
    """Figure 5 as one table per criterion, the mean-image baseline beside SSIM and MSE, and
    what the paper says of each panel (``described``: a–e for LFW, f–j for CIFAR-10)."""
    t = figure5_data(res)
    parts = []
    for (metric, title), panel in zip(FIG5_PANELS.items(), panels):
        if t[f"{metric}_mean"].isna().all():
            body = _nulls(res, metric)
        else:

            def render(g: pd.DataFrame, _: str, metric: str = metric) -> str:
                rows = []
                for r in sorted_rows(g):
                    row = {
                        "partition": r["partition"],
                        "setting": config_label(r["defense"], r["defenders"], r["lam"]),
                        "seeds": r[f"{metric}_n"],
                        "ours [95 % CI]": cell(r, metric),
                        "interval": method(r, metric),
                    }
                    if metric != "test_acc":
                        row["strongest attacker"] = r[f"{metric}_attackers"] or "–"
                    if f"{metric}_baseline_mean" in r:
                        row["mean-image baseline [95 % CI]"] = cell(r, f"{metric}_baseline")
                    rows.append(row)
                return md_table(pd.DataFrame(rows))

            body = per_config(t, render)
            if metric == "dpd" and t["dpd_mean"].isna().any():
                body += "\n\n" + _nulls(res, metric)
            if metric in NOT_WHITE_BOX and _has_white_box(res):
                body += "\n\n" + WHITE_BOX_REPRINT
        parts.append(
            f"### ({panel}) {title}\n\n{body}\n\nPaper ({where}; no values printed): {described[metric]}."
        )
    return "\n\n".join(parts)


DIFF_NAMES = {"ssim": "worst-case SSIM", "test_acc": "test accuracy, %", "n_cg": "#CG"}


def paired_cells(r: pd.Series, what: str, label: str, kind: str = "value") -> dict[str, str]:
    """One row of a paired table (:func:`analysis.tables.paired_differences` and the paired
    knowledge ladder): partition, setting, ``what`` = ``label``, then the pairs, both means and
    the difference with its interval, its method and whether it excludes 0."""
    sig = r["significant"]
    return {
        "partition": r["partition"],
        "setting": config_label(r["defense"], r["defenders"], r["lam"]),
        what: label,
        "pairs (seeds)": f"{r['n_pairs']} ({r['seeds']})",
        "defended": interval(r["defended"], kind=kind),
        "undefended": interval(r["undefended"], kind=kind),
        "defended − undefended [95 % CI]": interval(r["diff"], r["diff_ci_lo"], r["diff_ci_hi"], kind),
        "interval": "–" if pd.isna(r["ci_method"]) else METHOD_NAMES[r["ci_method"]],
        "significant": "–" if pd.isna(sig) else ("**yes**" if sig else "no"),
    }


def paired_md(d: pd.DataFrame) -> str:
    """:func:`analysis.tables.paired_differences` as one table per (sweep, data set, classifier)."""

    def render(g: pd.DataFrame, _: str) -> str:
        rows = []
        for r in sorted_rows(g, then=lambda r: DIFF_METRICS.index(r["metric"])):
            kind = KINDS.get(r["metric"], "value")
            rows.append(paired_cells(r, "metric", DIFF_NAMES[r["metric"]], kind))
        return md_table(pd.DataFrame(rows))

    return (
        f"{per_config(d, render)}\n\nEach defended model is paired with the undefended model of the same seed "
        "(and recipe), attacked at the same partition. *Significant* means the paired 95 % interval of the "
        "difference excludes 0; with one pair the SSIM interval is a paired bootstrap (the same images "
        "resampled for both models)."
    )


def table_iii_md(res: Results) -> str:
    """Table III with intervals, the paper's counts beside (its #TI is 474 test images)."""
    try:
        t = table_iii(res)
    except Missing as e:
        ref = pd.DataFrame(
            [
                {
                    "partition": p,
                    "setting": "no defense" if d == "none" else "λ=0.1 (deconv)",
                    "paper #CG / #DF / #TI": " / ".join(map(str, v)),
                }
                for (d, p), v in paper.TABLE_III.items()
            ]
        )
        return f"{e}.\n\nThe paper's Table III (LFW), for reference:\n\n{md_table(ref)}"

    def render(g: pd.DataFrame, dataset: str) -> str:
        rows = []
        for r in sorted_rows(g):
            row = {
                "partition": r["partition"],
                "setting": config_label(r["defense"], r["defenders"], r["lam"]),
                "seeds": r["n_cg_n"],
                "#CG [95 % CI]": cell(r, "n_cg"),
                "#DF [95 % CI]": cell(r, "n_df"),
                "#TI": fmt(r["n_ti_mean"], ".0f"),
                "#CG / #TI": pct(r["n_cg_mean"] / r["n_ti_mean"]),
                "interval": method(r, "n_cg"),
                "mean-image #CG": fmt(r.get("n_cg_baseline_mean", float("nan")), ".0f"),
            }
            ref = paper.TABLE_III.get((r["defense"], r["partition"])) if dataset.startswith("lfw") else None
            row["paper #CG / #DF / #TI"] = " / ".join(map(str, ref)) if ref else "–"
            row["paper #CG / #TI"] = pct(ref[0] / ref[2]) if ref else "–"
            rows.append(row)
        return md_table(pd.DataFrame(rows))

    return (
        f"{per_config(t, render)}\n\n#CG correctly gendered faces, #DF detected faces, #TI images examined; per "
        "model and partition the attacker with the most #CG (baselines excluded). *Mean-image #CG* is the "
        "no-information baseline's count on the same models: a constant mean face is detected and gendered "
        "too, so an attacker leaks gender only as far as it beats that count. The paper's defended "
        "column is λ = 0.1 with one deconv defender after 250 epochs; compare rates (#CG / #TI) when the "
        "test sets differ in size."
    )


def frontier_md(res: Results, said: str | None = paper.FRONTIER) -> str:
    points, hv = frontiers(res)

    def render(g: pd.DataFrame, _: str) -> str:
        front = g[g["on_frontier"]].sort_values(
            ["test_acc", "ssim"], ascending=[False, True], kind="mergesort"
        )
        rows = [
            {
                "partition": r["partition"] if isinstance(r["partition"], str) else "input",
                "setting": _point_setting(r),
                "seed": r["seed"],
                "test accuracy, % [95 % CI]": interval(
                    r["test_acc"], r["test_acc_ci_lo"], r["test_acc_ci_hi"], "rate"
                ),
                "worst-case SSIM [95 % CI]": interval(r["ssim"], r["ssim_ci_lo"], r["ssim_ci_hi"]),
                "strongest attacker": r["ssim_attacker"],
            }
            for _, r in front.iterrows()
        ]
        h = hv[(hv["sweep"] == g["sweep"].iloc[0]) & (hv["dataset"] == g["dataset"].iloc[0])].iloc[0]
        return (
            f"{md_table(pd.DataFrame(rows))}\n\n{h['n_pareto']} of {h['n_models']} (model, partition) points are "
            f"Pareto-optimal; hypervolume {h['hypervolume']:.3f} (area dominated up to accuracy 0, SSIM 1)."
        )

    return (
        f"{per_config(points, render)}\n\nA point is one trained model at one partition "
        "(an undefended model is a point at each partition), placed by its test accuracy and worst-case SSIM; "
        "Pareto-optimal = no other point is at least as accurate and leaks no more."
        + (f"\n\nPaper: {said}." if said else "")
    )


# The knowledge ladder's steps (rules.FAMILIES), as both ladder tables head them.
LADDER = ("(1) defenders' family", "(2) + unseen families", "(3) + white-box", "(4) + tuned")


def per_sweep_text(texts: dict[str, str]) -> str:
    """One text when every sweep has the same, else each sweep's, named."""
    if len(set(texts.values())) <= 1:
        return next(iter(texts.values()), "")
    return "; ".join(f"sweep `{sweep}`: {text}" for sweep, text in texts.items())


def family_md(t: pd.DataFrame) -> str:
    """One row per partition × setting: the worst-case SSIM as each kind of attacker joins."""
    body = t[["sweep", "dataset", "partition"]].copy()
    body.insert(2, "configuration", [config_label(*s) for s in t[SETTING].itertuples(index=False)])
    rows = [r for _, r in t.iterrows()]
    for k, head in enumerate(LADDER, start=1):
        body[head] = [cell(r, f"step{k}") if r[f"step{k}_attackers"] else "–" for r in rows]
    body["seeds"] = t["step1_n"].where(t["step1_n"] > 0, t["step2_n"])
    who = per_sweep_text(
        {
            sweep: "; ".join(
                f"({k}) {g[f'step{k}_attackers'].iloc[0] or 'none in this sweep'}" for k in range(1, 5)
            )
            for sweep, g in t.groupby("sweep", observed=True, sort=True)
        }
    )
    return (
        f"{md_table(body)}\n\nWorst-case (strongest) SSIM over the attackers of every step so far; a step "
        f"with no attacker in the sweep shows –. Attackers: {who}. The defenders' family is every decoder "
        "the sweep's models were defended with; a claim that a defense holds should rest on steps 2–4, "
        "which it never trained against. Mean and 95 % interval (method in the CSV)."
    )


def gains_md(t: pd.DataFrame) -> str:
    """:func:`analysis.tables.leakage_gains`: one row per attacked model, each step's rise of its
    worst case, and the whole climb from step 1."""

    def gain(g: pd.DataFrame, start: int, end: int) -> str:
        hit = g[(g["from_step"] == start) & (g["step"] == end)]
        if hit.empty:
            return "–"
        r = hit.iloc[0]
        text = "+" + interval(r["gain"], r["gain_ci_lo"], r["gain_ci_hi"])
        return f"**{text}**" if not pd.isna(r["significant"]) and bool(r["significant"]) else text

    def render(g: pd.DataFrame, _: str) -> str:
        steps = sorted(set(g.loc[g["from_step"] == g["step"] - 1, "step"]))
        last = int(g["step"].max())
        models = g.drop_duplicates(["model_id", "partition"])
        rows = []
        for r in sorted_rows(models, then=lambda r: r["seed"]):
            mine = g[(g["model_id"] == r["model_id"]) & (g["partition"] == r["partition"])]
            first = mine.loc[mine["from_step"] == mine["from_step"].min()].iloc[0]
            row = {
                "partition": r["partition"],
                "setting": config_label(r["defense"], r["defenders"], r["lam"]),
                "seed": r["seed"],
                LADDER[0]: interval(
                    *first[["before", "before_ci_lo", "before_ci_hi"]]
                ),  # a step that adds no one repeats step 1
            }
            for k in steps:
                row[f"({k}) raises it by"] = gain(mine, k - 1, k)
            if len(steps) >= 2:
                row[f"(1) → ({last})"] = gain(mine, 1, last)
            rows.append(row)
        return md_table(pd.DataFrame(rows))

    steps = t[t["from_step"] == t["step"] - 1]
    who = per_sweep_text(
        {
            sweep: "; ".join(
                f"({k}) {names}"
                for k, names in g.drop_duplicates("step")
                .sort_values("step")[["step", "attackers"]]
                .itertuples(index=False)
            )
            for sweep, g in steps.groupby("sweep", observed=True, sort=True)
        }
    )
    return (
        f"{per_config(t, render)}\n\nPer model: its worst-case SSIM over the defenders' family, and how much "
        f"each later step of the ladder raises it (who joins: {who}). Each rise has a 95 % paired bootstrap "
        "interval over the test images (the same images resampled for every attacker of the model); bold: "
        "the interval excludes 0, so that step's attackers recover more than every attacker before them. "
        "A rise is never negative (a maximum over more attackers); – : the model lacks that step's attacks."
    )


def family_paired_md(d: pd.DataFrame) -> str:
    """:func:`analysis.tables.leakage_by_family_paired`: per partition and defended setting, the
    defense's paired effect on the worst case at each step of the knowledge ladder."""

    def render(g: pd.DataFrame, _: str) -> str:
        rows = []
        for r in sorted_rows(g, then=lambda r: r["step"]):
            who = f"{LADDER[int(r['step']) - 1]} ({r['attackers']})"
            rows.append(paired_cells(r, "attackers so far", who))
        return md_table(pd.DataFrame(rows))

    return (
        f"{per_config(d, render)}\n\nThe worst-case SSIM of each step of the ladder above, defended minus the "
        "undefended model of the same seed attacked at the same partition (a step the sweep has no attacker "
        "for is left out). The defense holds against an attacker who knows that much where the whole "
        "interval is below 0; a claim should rest on steps 2–4."
    )


def _point_setting(r: pd.Series) -> str:
    """A frontier point's setting; DP pixelation is named by its ε (it releases pixelated inputs)."""
    if r["defense"] != "dp_pixelation":
        return config_label(r["defense"], r["defenders"], r["lam"])
    eps = epsilon(pd.Series([r["config_json"]])).iloc[0]
    return "DP pixelation" + ("" if pd.isna(eps) else f", ε={eps:g}")


# -- the MNIST page (Tables I and II) ---------------------------------------------------------

MNIST_DATASETS = ("mnist", "digits")
# How our λ relates to the paper's: measured by benchmarks/mnist_lambda_scale.py (README there).
LAMBDA_SCALE = (
    "Our λ is not the paper's. λ acts through the ratio of the distance's gradient to the task "
    "loss's on the local layers (Adam removes the overall scale, not this ratio); Eq. 2–4 average "
    "both over the batch, as we do, so the paper's λ = 100–500 cannot mean the same distance. "
    "`python benchmarks/mnist_lambda_scale.py` measures that gradient for several readings of "
    "the paper's distance (numbers in `benchmarks/README.md`): an SSIM computed with the constants "
    "of data_range 255 on [0, 1] images (the default of the widely used `pytorch_msssim.ssim`) "
    "has a gradient 0.0024–0.0075× ours, so the paper's λ = 100–500 would pull the local layers as "
    "hard as our λ ≈ 0.25–3.7, the range where our Table I lives; a batch sum (Eq. 4 without "
    "1/m) goes the other way (32× ours). We cannot confirm which the paper ran: it gives no code. "
    "Our budget is also shorter (10 epochs of a one-cycle Adam at 1e-3 against 500 at 1e-4)."
)


CHECK_NAMES = {
    "accuracy": "accuracy cost under 2 points: defended − undefended test accuracy, points",
    "defense": "the defense lowers the strongest attacker's SSIM: defended − undefended",
    "depth": "deeper partitions leak less: worst-case SSIM, deeper − shallower partition",
}


def _paper_direction(r: pd.Series) -> str:
    if r["check"] == "accuracy":
        drop = paper.CIFAR_ACC_DROP.get(r["partition"])
        return "–" if drop is None else f"{-drop:.1f}"
    return "below 0"


def directions_md(t: pd.DataFrame) -> str:
    """:func:`analysis.tables.figure5_directions` as one table per (sweep, data set, classifier)."""

    def render(g: pd.DataFrame, _: str) -> str:
        rows = []
        for _i, r in g.iterrows():
            kind = "rate" if r["check"] == "accuracy" else "value"
            rows.append(
                {
                    "claim": CHECK_NAMES[r["check"]],
                    "setting": config_label(r["defense"], r["defenders"], r["lam"]),
                    "partition": r["partition"],
                    "pairs (seeds)": f"{r['n_pairs']} ({r['seeds']})",
                    "ours [95 % CI]": interval(r["diff"], r["diff_ci_lo"], r["diff_ci_hi"], kind),
                    "paper": _paper_direction(r),
                    "holds (mean)": "yes" if r["holds"] else "**no**",
                    "whole interval": "–" if pd.isna(r["certain"]) else ("yes" if r["certain"] else "no"),
                }
            )
        return md_table(pd.DataFrame(rows))

    return (
        f"{per_config(t, render)}\n\nEach claim of Section V-D(1), checked on differences paired by seed "
        "(the defended model minus the undefended one of the same seed; or, for depth, the same setting "
        "and seed at the deeper partition minus the shallower one). *Holds (mean)*: the mean difference is "
        "on the claimed side (accuracy: above −2 points; SSIM: below 0). *Whole interval*: its 95 % interval "
        "is too, so that the claim is not a matter of seeds."
    )


def paper_table_i_md() -> str:
    """The paper's Table I as printed, and how many attackers' SSIM falls strictly over its λ."""
    heads = [f"{lam:g}" for lam in paper.TABLE_I_LAMS]
    rows = [["model accuracy, %", *[f"{a:.1f}" for a in paper.TABLE_I_ACC]]]
    rows += [
        [f"MSE / SSIM {a}", *[f"{m:.3f} / {v:.3f}" for m, v in cells]] for a, cells in paper.TABLE_I.items()
    ]
    falling = {a: falling_prefix([v for _, v in cells]) for a, cells in paper.TABLE_I.items()}
    n4 = sum(k >= 4 for k in falling.values())
    return (
        f"{md_table(pd.DataFrame(rows, columns=['defender weight λ (paper)', *heads]))}\n\n"
        f"In the paper's own table, {n4} of {len(falling)} attackers' SSIM falls strictly over 4 or more "
        "λ values from 0 (per attacker: "
        + ", ".join(f"{a} {k}" for a, k in falling.items())
        + "); its trend is downward overall, not step by step."
    )


def _falls(r: pd.Series) -> str:
    k = r["n_decreasing"]
    if k == 0:
        return "– (no value at the first λ)"
    return f"{k} λ value{'s' if k != 1 else ''} ({r['lams'][0]:g} … {r['decreasing_to']:g})"


def shape_md(t: pd.DataFrame) -> str:
    """:func:`analysis.tables.table_i_shape`: per attacker, mean SSIM per λ and how far it falls."""

    def render(g: pd.DataFrame, _: str) -> str:
        lams = g["lams"].iloc[0]
        rows = [
            {
                "attacker": r["attacker"],
                **{f"λ={lam:g}": fmt(v) for lam, v in zip(r["lams"], r["ssim"])},
                "falls strictly over": _falls(r),
            }
            for r in sorted((r for _, r in g.iterrows()), key=lambda r: natural_key(r["attacker"]))
        ]
        n4 = int((g["n_decreasing"] >= 4).sum())
        first = "0" if lams and lams[0] == 0 else f"{lams[0]:g} (the run has no λ = 0 yet)"
        return (
            f"{md_table(pd.DataFrame(rows))}\n\n**{n4} of {len(g)} attackers**' mean SSIM falls strictly over "
            f"4 or more λ values from {first} (the grid has {len(lams)}; a λ without a result ends the count)."
        )

    return (
        f"{per_config(t, render)}\n\nMean SSIM over seeds (intervals in Table I above). *Falls strictly over "
        "k λ values*: the mean at each of the first k λ values of the grid is below the one before."
    )


def suite_md(d: pd.DataFrame) -> str:
    """:func:`analysis.tables.suite_vs_single` for SSIM and MSE, one table per configuration."""

    def render(g: pd.DataFrame, _: str) -> str:
        parts = []
        for (lam, suite, single), h in g.groupby(["lam", "defenders", "defenders_single"], sort=True):
            rows = []
            for metric in ("ssim", "mse"):
                for _, r in (
                    h[h["metric"] == metric]
                    .sort_values("attacker", key=lambda a: a.map(natural_key))
                    .iterrows()
                ):
                    sig = r["significant"]
                    rows.append(
                        {
                            "metric": metric.upper(),
                            "attacker": r["attacker"],
                            "pairs": r["n_pairs"],
                            "single": fmt(r["single"]),
                            "suite": fmt(r["suite"]),
                            "suite − single [95 % CI]": interval(r["diff"], r["diff_ci_lo"], r["diff_ci_hi"]),
                            "significant": "–" if pd.isna(sig) else ("**yes**" if sig else "no"),
                        }
                    )
            s = h[h["metric"] == "ssim"]
            below = int((s["diff"] < 0).sum())
            parts.append(
                f"λ = {lam:g}, suite ({suite}) against the single defender ({single}):\n\n"
                f"{md_table(pd.DataFrame(rows))}\n\n**The suite's mean SSIM is below the single defender's for "
                f"{below} of {len(s)} attackers** ({int((s['diff_ci_hi'] < 0).sum())} significantly)."
            )
        return "\n\n".join(parts)

    return (
        f"{per_config(d, render)}\n\nEach suite model is paired with the single-defender model of the same seed "
        "and λ; mean over seeds of the difference and its t interval. *Significant*: the interval excludes 0."
    )


def best_md(d: pd.DataFrame) -> str:
    """:func:`analysis.tables.best_defenders`, one table per configuration."""

    def render(g: pd.DataFrame, _: str) -> str:
        rows = [
            {
                "λ": f"{r['lam']:g}",
                "suite": r["defenders"],
                "defender": r["defender"],
                "seeds": r["share_final_n"],
                "share of the final epoch's batches, % [95 % CI]": interval(
                    r["share_final_mean"], r["share_final_ci_lo"], r["share_final_ci_hi"], "rate"
                ),
                "share of all batches, % [95 % CI]": interval(
                    r["share_all_mean"], r["share_all_ci_lo"], r["share_all_ci_hi"], "rate"
                ),
            }
            for _, r in g.iterrows()
        ]
        return md_table(pd.DataFrame(rows))

    return (
        f"{per_config(d, render)}\n\nAlgorithm 1 pushes the local layers, on each batch, against the suite's "
        "best defender on that batch (the lowest distance): how often each member was it. Mean over seeds "
        "and t interval; from the epochs table's `best_defender_counts`."
    )


def paper_table_ii_md() -> str:
    rows = [["model accuracy, %", *[f"{a:.1f}" for a in paper.TABLE_II_ACC]]]
    for k, metric in enumerate(("MSE", "SSIM")):
        rows += [[f"{metric} {a}", *[f"{c[k]:.3f}" for c in cells]] for a, cells in paper.TABLE_II.items()]
    return md_table(
        pd.DataFrame(rows, columns=["defenders present (paper, λ = 200)", *paper.TABLE_II_COLUMNS])
    )


def results_markdown(root: str, page: Path | str, sweep: str | None = None) -> str:
    """The page's text for the tables under ``root`` (one ``sweep`` or all), to be written at ``page``."""
    res = load(root, sweep)
    if res.models.empty:
        raise Missing(f"no models under {root!r}")
    sweeps = ", ".join(f"`{s}`" for s in sorted(res.models["sweep"].unique()))
    head = [
        f"# Results of {sweeps} beside the paper",
        f"Generated by `python -m analysis.report TABLES --markdown PAGE` from the tables in "
        f"[`{source_label(root, page)}`]({source_label(root, page)}) alone; regenerating it from the same "
        f"tables gives this page byte for byte (bootstraps: {N_RESAMPLES} resamples, fixed seed).",
        "## How the run was made",
        provenance_md(res, run_info(root)),
        "## How to read the numbers",
        methods_md(res),
    ]
    shared = [
        "## Defended minus undefended, paired by seed",
        _built(lambda: paired_md(paired_differences(res))),
        "## Leakage by attacker knowledge",
        _built(lambda: family_md(leakage_by_family(res))),
        "### How much each step raises one model's worst case",
        _built(lambda: gains_md(leakage_gains(res))),
        "### Does the defense hold as the attacker knows more? Paired by seed",
        _built(lambda: family_paired_md(leakage_by_family_paired(res))),
    ]
    if set(res.models["dataset"]) <= set(MNIST_DATASETS):
        sections = [
            *head,
            "## Table I: accuracy and attacker MSE / SSIM per defender weight λ",
            _built(lambda: table_i_md(table_i(res))),
            "### Table I's shape: does each attacker's SSIM fall as λ grows?",
            _built(lambda: shape_md(table_i_shape(res))),
            "### The paper's Table I",
            paper_table_i_md(),
            "## Table II: no, single and multiple defenders",
            _built(lambda: table_ii_md(table_ii(res))),
            "### The defender suite against the single defender, paired by seed",
            _built(lambda: suite_md(suite_vs_single(res))),
            "### Which suite member was the best defender",
            _built(lambda: best_md(best_defenders(res))),
            "### The paper's Table II",
            paper_table_ii_md(),
            *shared,
            "## How our λ relates to the paper's",
            LAMBDA_SCALE,
            "## Privacy–utility frontier",
            _built(lambda: frontier_md(res, None)),
            f"## The paper's setting\n\n{paper.MNIST_SETTING}.",
        ]
    elif set(res.models["dataset"]) == {"cifar10"}:
        sections = [
            *head,
            "## Figure 5 (f–j): five criteria per partition",
            _built(lambda: figure5_md(res, paper.FIGURE5_CIFAR, "Figure 5, CIFAR-10", panels="fghij")),
            "### Figure 5 (f–j)'s directions, checked",
            _built(lambda: directions_md(figure5_directions(res))),
            *shared,
            "## Privacy–utility frontier",
            _built(lambda: frontier_md(res, paper.FRONTIER_CIFAR)),
            f"## The paper's setting\n\n{paper.CIFAR_SETTING}.",
        ]
    else:
        sections = [
            *head,
            "## Figure 5 (a–e): five criteria per partition",
            _built(lambda: figure5_md(res)),
            *shared,
            "## Table III: gender estimation from the reconstructions",
            table_iii_md(res),
            "## Privacy–utility frontier",
            _built(lambda: frontier_md(res)),
            f"## The paper's setting\n\n{paper.SETTING}.",
        ]
    return "\n\n".join(sections) + "\n"


def _built(build: Callable[[], str]) -> str:
    try:
        return build()
    except Missing as e:
        return f"{e}."


def write_markdown(root: str, page: Path | str, sweep: str | None = None) -> Path:
    """Write :func:`results_markdown` to ``page`` (UTF-8, ``\\n`` line ends on every OS)."""
    page = Path(page)
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(results_markdown(root, page, sweep), encoding="utf-8", newline="\n")
    return page
