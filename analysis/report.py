"""``python -m analysis.report RESULTS_ROOT --out DIR [--sweep NAME]``

Writes DIR/report.md (Markdown tables, linked PNG figures), every table as CSV beside it,
and a "Missing" section naming each artefact the tables hold no input for.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from analysis import figures
from analysis.figures import config_label, settings
from analysis.tables import (
    CI_METHOD, CONFIG, FIG5_METRICS, SETTING, Missing, Results, figure4_data, figure5_data, figure7_data, frontiers, in_setting, load,
    natural_key, table_i, table_ii, table_iii,
)


def md_table(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (pandas' ``to_markdown`` needs tabulate, which we do not depend on)."""
    cells = df.astype(object).where(df.notna(), "").astype(str)
    rows = [list(map(str, df.columns)), ["---"] * len(df.columns), *cells.values.tolist()]
    return "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows)


def _fmt(x: float, spec: str = ".3f") -> str:
    return "–" if pd.isna(x) else format(x, spec)


def _pct(x: float) -> str:
    return "–" if pd.isna(x) else f"{100 * x:.1f}%"


def _groups(df: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    return [(k, g) for k, g in df.groupby(CONFIG, observed=True, sort=True)]


def _heading(key: tuple) -> str:
    sweep, dataset, arch, partition = key
    return f"**{dataset} / {arch} / {partition}** (sweep `{sweep}`)"


def _seeds_note(df: pd.DataFrame, col: str) -> str:
    n = df[col]
    seeds = f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"
    return f"Mean over {seeds} seed(s); std and 95 % CI ({CI_METHOD}) in the CSV."


def table_i_md(t: pd.DataFrame) -> str:
    """Paper layout: λ across, model accuracy then 'MSE/SSIM' per attacker down. A λ trained
    with more than one single-defender suite gets one column per suite."""
    parts = []
    for key, g in _groups(t):
        cols = sorted(g[["lam", "defenders"]].drop_duplicates().itertuples(index=False, name=None))
        shared = {lam for lam, _ in cols if sum(c[0] == lam for c in cols) > 1}
        heads = [f"{lam:g}" + (f" ({d})" if lam in shared else "") for lam, d in cols]
        cells = {c: g[(g["lam"] == c[0]) & (g["defenders"] == c[1])].set_index("attacker") for c in cols}
        rows = [["model accuracy", *[_pct(cells[c]["test_acc_mean"].iloc[0]) for c in cols]]]
        for attacker in sorted(g["attacker"].unique(), key=natural_key):
            rows.append([f"MSE/SSIM {attacker}", *[
                f"{_fmt(cells[c].at[attacker, 'mse_mean'])}/{_fmt(cells[c].at[attacker, 'ssim_mean'])}"
                if attacker in cells[c].index else "–" for c in cols]])
        body = pd.DataFrame(rows, columns=["defender weight λ", *heads])
        parts.append(f"{_heading(key)}\n\n{md_table(body)}\n\n{_seeds_note(g, 'ssim_n')}")
    return "\n\n".join(parts)


def _suite_label(present: str, defenders: str, lam: float) -> str:
    return "no defender" if present == "none" else f"{present} ({defenders}), λ={lam:g}"


def table_ii_md(t: pd.DataFrame) -> str:
    """Paper layout: defender configurations across; accuracy, then MSE and SSIM per attacker."""
    order = {"none": 0, "single": 1, "multiple": 2}
    parts = []
    for key, g in _groups(t):
        suites = sorted(g[["defenders_present", "defenders", "lam"]].drop_duplicates().itertuples(index=False),
                        key=lambda s: (order[s[0]], s[2], s[1]))
        labels = [_suite_label(*s) for s in suites]
        attackers = sorted(g["attacker"].unique(), key=natural_key)
        rows = []
        by_suite = [g[(g["defenders_present"] == s[0]) & (g["defenders"] == s[1]) & (g["lam"] == s[2])] for s in suites]
        rows.append(["model accuracy", *[_pct(s["test_acc_mean"].iloc[0]) for s in by_suite]])
        for metric in ("mse", "ssim"):
            for attacker in attackers:
                vals = [s.loc[s["attacker"] == attacker, f"{metric}_mean"] for s in by_suite]
                rows.append([f"{metric.upper()} {attacker}", *[_fmt(v.iloc[0]) if len(v) else "–" for v in vals]])
        body = pd.DataFrame(rows, columns=["defenders present", *labels])
        parts.append(f"{_heading(key)}\n\n{md_table(body)}\n\n{_seeds_note(g, 'ssim_n')}")
    return "\n\n".join(parts)


def table_iii_md(t: pd.DataFrame) -> str:
    """Paper layout: partitions across, defense configurations down, '#CG / #DF / #TI' cells."""
    parts = []
    for (sweep, dataset, arch), g in t.groupby(["sweep", "dataset", "arch"], observed=True, sort=True):
        partitions = sorted(g["partition"].unique(), key=natural_key)
        means = g[["n_cg_mean", "n_df_mean", "n_ti_mean"]].to_numpy(float)
        spec = ".0f" if np.all(np.isnan(means) | (means % 1 == 0)) else ".1f"
        rows = []
        for setting in settings(g):
            c = g[in_setting(g, setting)].set_index("partition")
            rows.append([config_label(*setting), *[
                " / ".join(_fmt(c.at[p, f"{m}_mean"], spec) for m in ("n_cg", "n_df", "n_ti")) if p in c.index else "–"
                for p in partitions]])
        body = pd.DataFrame(rows, columns=["#CG / #DF / #TI", *partitions])
        parts.append(f"**{dataset} / {arch}** (sweep `{sweep}`)\n\n{md_table(body)}\n\n"
                     f"#CG correctly gendered, #DF detected faces, #TI total images; strongest attacker per model. "
                     f"{_seeds_note(g, 'n_cg_n')}")
    return "\n\n".join(parts)


def figure5_md(t: pd.DataFrame) -> str:
    body = t[["sweep", "dataset", "partition"]].copy()
    body.insert(2, "configuration", [config_label(*s) for s in t[SETTING].itertuples(index=False)])
    for m in FIG5_METRICS:
        body[m] = [f"{_fmt(a)} ± {_fmt(s)}" if not pd.isna(a) else "–" for a, s in zip(t[f"{m}_mean"], t[f"{m}_std"])]
    body["seeds"] = t["ssim_n"]
    return md_table(body)


def frontier_md(points: pd.DataFrame, hv: pd.DataFrame) -> str:
    front = points[points["on_frontier"]].sort_values(["sweep", "dataset", "test_acc"], ascending=[True, True, False])
    cols = ["sweep", "dataset", "partition", "defense", "lam", "defenders", "seed", "test_acc", "ssim",
            "ssim_attacker"]
    body = front[cols].assign(test_acc=front["test_acc"].map(_pct), ssim=front["ssim"].map(_fmt))
    return (f"{md_table(hv.assign(hypervolume=hv['hypervolume'].map(_fmt)))}\n\n"
            f"Hypervolume: area dominated in (test accuracy, worst-case SSIM) up to the reference point "
            f"(accuracy 0, SSIM 1); 1 would be a perfect, leak-free model.\n\n{md_table(body)}")


def _summary(res: Results) -> str:
    m, a = res.models, res.attacks
    lines = [
        f"- results root: `{res.root}`" + (f", sweep `{res.sweep}`" if res.sweep else ""),
        f"- sweeps: {', '.join(f'`{s}`' for s in sorted(m['sweep'].dropna().unique())) or 'none'}",
        f"- models: {len(m)} ({', '.join(f'{k}: {v}' for k, v in m['status'].value_counts().items()) or 'none'})",
        f"- attacks: {len(a)} ({', '.join(f'{k}: {v}' for k, v in a['status'].value_counts().items()) or 'none'})",
        f"- attacker data: {', '.join(sorted(a['attacker_data'].dropna().unique())) or 'n/a'}",
        f"- epochs rows: {len(res.epochs)}",
        "- \"best attack\" = per model the strongest attacker on each metric (max SSIM / reprint accuracy / PSNR, "
        "min MSE / DPD), over successful attacks only",
        f"- confidence intervals: 95 %, {CI_METHOD}",
    ]
    bad = m[m["status"] != "ok"]
    if len(bad):
        lines.append("\nModels that did not finish:\n")
        bad = bad.assign(error=bad["error"].fillna("").str.slice(0, 120))
        lines.append(md_table(bad[["sweep", "model_id", "partition", "lam", "status", "diverged_epoch", "error"]]))
    ok = a[a["status"] == "ok"]
    reasons = ok["dpd_reason"].dropna().unique()
    if len(reasons):
        lines.append(f"\nDPD unavailable for {ok['dpd'].isna().sum()} successful attack(s): "
                     + "; ".join(map(str, reasons)))
    return "\n".join(lines)


def build_report(root: str, out: Path, sweep: str | None = None) -> Path:
    """Build every artefact the tables allow; returns the path of report.md."""
    res = load(root, sweep)
    out.mkdir(parents=True, exist_ok=True)
    sections = ["# Privacy-partitioning sweep report", "## Summary", _summary(res)]
    missing: list[str] = []

    def artefact(title: str, build: Callable[[], str]) -> None:
        try:
            sections.extend([f"## {title}", build()])
        except Missing as e:
            missing.append(str(e))

    def csv(df: pd.DataFrame, name: str) -> str:
        path = out / f"{name}.csv"
        df.to_csv(path, index=False)
        return f"CSV: [{path.name}]({path.name})"

    def images(paths: list[Path]) -> str:
        return "\n\n".join(f"![{p.stem}]({p.name})" for p in paths)

    def table(build: Callable[[Results], pd.DataFrame], render: Callable[[pd.DataFrame], str],
              name: str) -> Callable[[], str]:
        def run() -> str:
            t = build(res)
            return f"{render(t)}\n\n{csv(t, name)}"
        return run

    def fig4() -> str:
        d = figure4_data(res)
        return images(figures.figure4(d, out))

    def fig5() -> str:
        t = figure5_data(res)
        return f"{images(figures.figure5(t, out))}\n\n{figure5_md(t)}\n\n{csv(t, 'figure5')}"

    def fig7() -> str:
        t = figure7_data(res)
        return (f"{images(figures.figure7(t, out))}\n\nε is read from the `epsilon` key of each model's "
                f"`config_json` (the models table has no ε column); SSIM is the strongest attack's.\n\n"
                f"{csv(t, 'figure7')}")

    def front() -> str:
        points, hv = frontiers(res)
        return (f"{images(figures.frontier_plot(points, hv, out))}\n\n{frontier_md(points, hv)}\n\n"
                f"{csv(points.drop(columns=['config_json']), 'frontier')} · {csv(hv, 'hypervolume')}")

    def curves() -> str:
        if res.epochs.empty:
            raise Missing("Training curves: the epochs table is empty")
        return images(figures.training_curves(res.epochs, res.models, out))

    artefact("Table I — accuracy and attacker MSE/SSIM per defender weight λ", table(table_i, table_i_md, "table_i"))
    artefact("Table II — no, single and multiple defenders", table(table_ii, table_ii_md, "table_ii"))
    artefact("Table III — gender estimation from reconstructions", table(table_iii, table_iii_md, "table_iii"))
    artefact("Figure 4 — original vs reconstructed images", fig4)
    artefact("Figure 5 — five criteria per partition × defense", fig5)
    artefact("Figure 7 — DP image pixelation against ε", fig7)
    artefact("Accuracy–privacy frontier", front)
    artefact("Training curves", curves)
    worst = res.models_with_worst().drop(columns=["config_json"], errors="ignore")
    sections.append(f"## Per-model best attacks\n\n{csv(worst, 'models_worst_case')}")
    sections += ["## Missing", "\n".join(f"- {m}" for m in missing) if missing else "Nothing: every artefact was built."]
    path = out / "report.md"
    path.write_text("\n\n".join(sections) + "\n")
    return path


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], prog="python -m analysis.report")
    p.add_argument("root", help="results root (local path or s3://bucket/prefix)")
    p.add_argument("--out", required=True, type=Path, help="directory for report.md, PNGs and CSVs")
    p.add_argument("--sweep", default=None, help="only this sweep (default: every sweep under the root)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    t0 = time.perf_counter()
    path = build_report(args.root, args.out, args.sweep)
    print(f"report: {path} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
