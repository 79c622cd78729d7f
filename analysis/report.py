"""``python -m analysis.report RESULTS_ROOT [--out DIR] [--sweep NAME] [--markdown PAGE] [--activation-maps]``

Writes DIR/report.md (Markdown tables, linked PNG figures), every table as CSV beside it,
and a "Missing" section naming each artefact the tables hold no input for; with --markdown,
PAGE, the deterministic results page of :mod:`analysis.results_md` (no figures). The
activation maps (Figures 6/8/9) are drawn from the models' saved weights, of the embedded
public data sets only unless --activation-maps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs

from analysis.results_md import cell, family_md, fmt, interval, md_table, paired_md, write_markdown
from analysis.tables import (
    CONFIG,
    FIG5_METRICS,
    SETTING,
    Missing,
    Results,
    config_label,
    figure4_data,
    figure5_data,
    figure7_data,
    frontiers,
    in_setting,
    leakage_by_family,
    load,
    natural_key,
    paired_differences,
    partition_suites,
    settings,
    table_i,
    table_ii,
    table_iii,
)
from analysis.uncertainty import METHODS
from pp_cluster.results.fs import redact, resolve
from pp_cluster.results.rules import succeeded


def _groups(df: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    return [(k, g) for k, g in df.groupby(CONFIG, observed=True, sort=True)]


def _heading(key: tuple) -> str:
    sweep, dataset, arch, partition = key
    return f"**{dataset} / {arch} / {partition}** (sweep `{sweep}`)"


def _seeds_note(df: pd.DataFrame, col: str) -> str:
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
        parts.append(f"{_heading(key)}\n\n{md_table(body)}\n\n{_seeds_note(g, 'ssim_n')}")
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
        parts.append(f"{_heading(key)}\n\n{md_table(body)}\n\n{_seeds_note(g, 'ssim_n')}")
    return "\n\n".join(parts)


def table_iii_md(t: pd.DataFrame) -> str:
    """Paper layout: partitions across, defense configurations down, '#CG / #DF / #TI' cells."""
    parts = []
    for (sweep, dataset, arch), g in t.groupby(["sweep", "dataset", "arch"], observed=True, sort=True):
        partitions = sorted(g["partition"].unique(), key=natural_key)
        rows = []
        for setting in settings(g):
            c = g[in_setting(g, setting)].set_index("partition")
            rows.append(
                [
                    config_label(*setting),
                    *[
                        f"{cell(c.loc[p], 'n_cg')} / {cell(c.loc[p], 'n_df')} / {fmt(c.at[p, 'n_ti_mean'], '.0f')}"
                        if p in c.index
                        else "–"
                        for p in partitions
                    ],
                ]
            )
        body = pd.DataFrame(rows, columns=["#CG / #DF / #TI", *partitions])
        parts.append(
            f"**{dataset} / {arch}** (sweep `{sweep}`)\n\n{md_table(body)}\n\n"
            f"#CG correctly gendered, #DF detected faces, #TI total images; strongest attacker per model. "
            f"{_seeds_note(g, 'n_cg_n')}"
        )
    return "\n\n".join(parts)


def figure5_md(t: pd.DataFrame) -> str:
    """One row per partition × setting: each criterion with its interval, the mean-image baseline
    beside the worst-case SSIM and MSE."""
    body = t[["sweep", "dataset", "partition"]].copy()
    body.insert(2, "configuration", [config_label(*s) for s in t[SETTING].itertuples(index=False)])
    rows = [r for _, r in t.iterrows()]
    for m in FIG5_METRICS:
        body[m] = [cell(r, m) for r in rows]
        if m in ("ssim", "mse"):
            body[f"{m} mean-image baseline"] = [cell(r, f"{m}_baseline") for r in rows]
    body["seeds"] = t["ssim_n"]
    return f"{md_table(body)}\n\nAccuracies in %; mean and 95 % interval, method per cell in the CSV (`*_ci_method`)."


def partition_suites_md(t: pd.DataFrame) -> str:
    """One row per suite model setting and partition: its worst-case SSIM and accuracy beside
    those of the models defended at that partition alone."""
    body = t[["sweep", "dataset", "partition_suite", "partition"]].copy()
    body.insert(4, "configuration", [config_label(*s) for s in t[SETTING].itertuples(index=False)])
    rows = [r for _, r in t.iterrows()]
    for m, kind, name in (("ssim", "value", "worst-case SSIM"), ("test_acc", "rate", "test acc., %")):
        for who in ("suite", "single"):
            body[f"{name}, {who}"] = [
                interval(r[f"{who}_{m}_mean"], r[f"{who}_{m}_ci_lo"], r[f"{who}_{m}_ci_hi"], kind)
                for r in rows
            ]
    body["seeds"] = t["seeds"]
    return (
        f"{md_table(body)}\n\nSection IV-F: one network defended at every partition of its suite at once "
        "(λ the same at each), attacked at each; *single* is the model defended at that partition alone, "
        "same defenders and λ, over the same seeds (– where there is none). Mean over the seeds and 95 % "
        "interval (method in the CSV)."
    )


def frontier_md(points: pd.DataFrame, hv: pd.DataFrame) -> str:
    front = points[points["on_frontier"]].sort_values(
        ["sweep", "dataset", "test_acc"], ascending=[True, True, False]
    )
    cols = [
        "sweep",
        "dataset",
        "partition",
        "defense",
        "lam",
        "defenders",
        "seed",
        "test_acc",
        "ssim",
        "ssim_attacker",
    ]
    body = front[cols].assign(
        test_acc=[
            interval(a, lo, hi, "rate")
            for a, lo, hi in front[["test_acc", "test_acc_ci_lo", "test_acc_ci_hi"]].values
        ],
        ssim=[interval(a, lo, hi) for a, lo, hi in front[["ssim", "ssim_ci_lo", "ssim_ci_hi"]].values],
    )
    return (
        f"{md_table(hv.assign(hypervolume=hv['hypervolume'].map(fmt)))}\n\n"
        f"Hypervolume: area dominated in (test accuracy, worst-case SSIM) up to the reference point "
        f"(accuracy 0, SSIM 1); 1 would be a perfect, leak-free model.\n\n{md_table(body)}"
    )


# -- Figures 6, 8, 9: hidden activations with and without the defense --------------------
# The tables hold no activations: the models are loaded from the results root (their
# ``_ray/train-*/state.pt``) and run on one test image.

ACTIVATION_PARTITIONS = ("pool1", "pool2")  # the paper's (V-C(3)): deeper maps are hard to read
# Activation maps of a face are images of that person: drawn by default only for the embedded
# public data sets, any other only with --activation-maps (as reconstructions are opt-in).
PUBLIC_DATASETS = ("lfw-subset", "digits")
ACTIVATION_CHANNELS = 16


def _unit_image(x, value_range: tuple[float, float]):
    """A C×H×W input in ``value_range`` as an H×W (grey) or H×W×3 array in [0, 1]."""
    lo, hi = value_range
    img = ((x - lo) / (hi - lo)).clamp(0, 1).permute(1, 2, 0).numpy()
    return img[..., 0] if img.shape[-1] == 1 else img


def _exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def activation_maps_data(
    res: Results, allow_people: bool = False, channels: int = ACTIVATION_CHANNELS, image: int = 0
) -> tuple[pd.DataFrame, list[str]]:
    """The models and maps of Figures 6, 8 and 9, and why any (sweep, data set) has none.

    Per (sweep, data set) and partition of :data:`ACTIVATION_PARTITIONS` with a finished model
    defended there (the paper's defense; the largest λ, then the lowest seed), that model and
    the lowest-seed undefended one, both split at the partition, each with the first
    ``channels`` channels of its activations of test image ``image`` (the same image for all).
    Data sets outside :data:`PUBLIC_DATASETS` are left out unless ``allow_people``. One row per
    drawn model: CONFIG and SETTING, seed, model_id, n_channels, image_index, ``image`` (the
    input, [0, 1]) and ``maps`` (k×h×w float32)."""
    import torch

    from pp_cluster.config import ModelSpec
    from pp_cluster.models import load_model, state_uri
    from pp_cluster.pipeline import load_data

    storage = f"{res.root.rstrip('/')}/_ray"  # load_model's default: the farm's, without --storage-path
    models = res.models[succeeded(res.models)]
    rows, skipped = [], []
    for (sweep, dataset), g in models.groupby(["sweep", "dataset"], sort=True):
        where = f"Figures 6/8/9 for {dataset} (sweep `{sweep}`)"
        if dataset not in PUBLIC_DATASETS and not allow_people:
            skipped.append(
                f"{where}: activation maps of its images are images of the people in them; "
                "drawn only with --activation-maps"
            )
            continue
        plain = g[g["defense"] == "none"].sort_values(["seed", "model_id"])
        defended = {}
        for p in ACTIVATION_PARTITIONS:
            d = g[(g["defense"] == "partition") & (g["partition"] == p) & (g["lam"] > 0)]
            if len(d):
                d = d.sort_values(["lam", "seed", "model_id"], ascending=[False, True, True])
                defended[p] = d.iloc[0]
        if plain.empty or not defended:
            skipped.append(
                f"{where}: needs a finished undefended model and one defended at "
                f"{' or '.join(ACTIVATION_PARTITIONS)}"
            )
            continue
        ids = [r["model_id"] for r in (plain.iloc[0], *defended.values())]
        absent = [i for i in ids if not _exists(state_uri(storage, i))]
        if absent:
            skipped.append(
                f"{where}: the maps are drawn from the models' saved weights; no state file for "
                f"model(s) {', '.join(absent)} under {redact(storage)} (train-<model id>/state.pt)"
            )
            continue
        try:
            ds = load_data(ModelSpec.from_dict(json.loads(plain.iloc[0]["config_json"])))
            x = ds.test.x[image : image + 1]
            for p, d in defended.items():
                for row in (plain.iloc[0], d):
                    m = load_model(res.root, row["model_id"], partition=p, dataset=ds)
                    with torch.no_grad():
                        h = m.local(x)[0]
                    if h.ndim != 3:
                        raise ValueError(f"{p} of {m.spec.arch} is not a stack of maps ({tuple(h.shape)})")
                    rows.append(
                        {
                            **{c: row[c] for c in ("sweep", "dataset", "arch", *SETTING, "seed", "model_id")},
                            "partition": p,
                            "n_channels": h.shape[0],
                            "image_index": image,
                            "image": _unit_image(x[0], ds.value_range),
                            "maps": h[:channels].float().numpy(),
                        }
                    )
        except (ValueError, FileNotFoundError) as e:  # ModelLoadError is a ValueError
            skipped.append(f"{where}: {e}")
            rows = [r for r in rows if (r["sweep"], r["dataset"]) != (sweep, dataset)]
    return pd.DataFrame(rows), skipped


def _summary(res: Results) -> str:
    m, a = res.models, res.attacks
    lines = [
        f"- results root: `{res.root}`" + (f", sweep `{res.sweep}`" if res.sweep else ""),
        f"- sweeps: {', '.join(f'`{s}`' for s in sorted(m['sweep'].dropna().unique())) or 'none'}",
        f"- models: {len(m)} ({', '.join(f'{k}: {v}' for k, v in m['status'].value_counts().items()) or 'none'})",
        f"- attacks: {len(a)} ({', '.join(f'{k}: {v}' for k, v in a['status'].value_counts().items()) or 'none'})",
        f"- attacker data: {', '.join(sorted(a['attacker_data'].dropna().unique())) or 'n/a'}",
        f"- epochs rows: {len(res.epochs)}",
        '- "best attack" = per model and partition the strongest attacker on each metric (max SSIM / reprint '
        "accuracy / PSNR, min MSE / DPD), over successful attacks only; an undefended model is attacked at every "
        "partition",
        "- 95 % intervals: "
        + "; ".join(f"{k}: {v}" for k, v in METHODS.items() if k != "newcombe")
        + f"; for one pair's accuracy difference, {METHODS['newcombe']}",
        "- the mean-image baseline is shown beside the attackers and never counts as the strongest one",
    ]
    bad = m[~succeeded(m)]
    if len(bad):
        lines.append("\nModels that did not finish:\n")
        bad = bad.assign(error=bad["error"].fillna("").str.slice(0, 120))
        lines.append(
            md_table(bad[["sweep", "model_id", "partition", "lam", "status", "diverged_epoch", "error"]])
        )
    ok = a[succeeded(a)]
    reasons = ok["dpd_reason"].dropna().unique()
    if len(reasons):
        lines.append(
            f"\nDPD unavailable for {ok['dpd'].isna().sum()} successful attack(s): "
            + "; ".join(map(str, reasons))
        )
    return "\n".join(lines)


def build_report(root: str, out: Path, sweep: str | None = None, activation_maps: bool = False) -> Path:
    """Build every artefact the tables allow; returns the path of report.md. ``activation_maps``
    draws Figures 6/8/9 for data sets beyond the embedded public ones (images of people)."""
    from analysis import figures  # matplotlib: only this report draws; the results page does not

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

    def table(
        build: Callable[[Results], pd.DataFrame], render: Callable[[pd.DataFrame], str], name: str
    ) -> Callable[[], str]:
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
        return (
            f"{images(figures.figure7(t, out))}\n\nε is read from the `epsilon` key of each model's "
            f"`config_json` (the models table has no ε column); SSIM is the strongest attack's.\n\n"
            f"{csv(t, 'figure7')}"
        )

    def activations() -> str:
        data, skipped = activation_maps_data(res, allow_people=activation_maps)
        if data.empty:
            raise Missing("; ".join(skipped) or "Figures 6/8/9: no finished models")
        missing.extend(skipped)
        return (
            f"{images(figures.activation_maps(data, out))}\n\nOne test image (index "
            f"{data['image_index'].iloc[0]} of the test split) through each model's local partition: "
            f"the first {ACTIVATION_CHANNELS} channels of its activation at each partition, per row "
            "on that model's own grey scale (darkest to brightest value drawn). The defended model "
            "is the one with the largest λ at that partition, each the lowest seed.\n\n"
            f"{csv(data.drop(columns=['image', 'maps']), 'activation_maps')}"
        )

    def front() -> str:
        points, hv = frontiers(res)
        return (
            f"{images(figures.frontier_plot(points, hv, out))}\n\n{frontier_md(points, hv)}\n\n"
            f"{csv(points.drop(columns=['config_json']), 'frontier')} · {csv(hv, 'hypervolume')}"
        )

    def curves() -> str:
        if res.epochs.empty:
            raise Missing("Training curves: the epochs table is empty")
        return images(figures.training_curves(res.epochs, res.models, out))

    artefact(
        "Table I — accuracy and attacker MSE/SSIM per defender weight λ",
        table(table_i, table_i_md, "table_i"),
    )
    artefact("Table II — no, single and multiple defenders", table(table_ii, table_ii_md, "table_ii"))
    artefact(
        "Table III — gender estimation from reconstructions", table(table_iii, table_iii_md, "table_iii")
    )
    artefact("Figure 4 — original vs reconstructed images", fig4)
    artefact("Figure 5 — five criteria per partition × defense", fig5)
    artefact("Figure 7 — DP image pixelation against ε", fig7)
    artefact("Figures 6, 8, 9 — hidden activations without and with the defense", activations)
    artefact(
        "Defended minus undefended, paired by seed",
        table(paired_differences, paired_md, "paired_differences"),
    )
    artefact(
        "Leakage by attacker knowledge — own family, unseen families, white-box, tuned",
        table(leakage_by_family, family_md, "leakage_by_family"),
    )
    if res.models["partition_suite"].notna().any():  # a sweep axis of its own: shown where swept
        artefact(
            "Partition suites — defended at several partitions at once",
            table(partition_suites, partition_suites_md, "partition_suites"),
        )
    artefact("Accuracy–privacy frontier", front)
    artefact("Training curves", curves)
    worst = res.models_with_worst().drop(columns=["config_json"], errors="ignore")
    sections.append(f"## Per-model best attacks\n\n{csv(worst, 'models_worst_case')}")
    sections += [
        "## Missing",
        "\n".join(f"- {m}" for m in missing) if missing else "Nothing: every artefact was built.",
    ]
    path = out / "report.md"
    path.write_text("\n\n".join(sections) + "\n")
    return path


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], prog="python -m analysis.report")
    p.add_argument("root", help="results root (local path or s3://bucket/prefix)")
    p.add_argument("--out", type=Path, default=None, help="directory for report.md, PNGs and CSVs")
    p.add_argument("--sweep", default=None, help="only this sweep (default: every sweep under the root)")
    p.add_argument(
        "--markdown",
        type=Path,
        default=None,
        metavar="PAGE",
        help="also (or only) write the reproducible results page, tables beside the paper's, to PAGE "
        "(e.g. docs/results.md)",
    )
    p.add_argument(
        "--activation-maps",
        action="store_true",
        help="draw Figures 6/8/9 (hidden activation maps) for data sets other than the embedded public "
        f"ones ({', '.join(PUBLIC_DATASETS)}): maps of a face are images of that person; needs the "
        "models' state files under the root",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.out is None and args.markdown is None:
        parser.error("nothing to write: give --out DIR, --markdown PAGE or both")
    t0 = time.perf_counter()
    try:
        if args.out is not None:
            print(
                f"report: {build_report(args.root, args.out, args.sweep, args.activation_maps)} "
                f"({time.perf_counter() - t0:.1f} s)"
            )
        if args.markdown is not None:
            print(f"results page: {write_markdown(args.root, args.markdown, args.sweep)}")
    except (FileNotFoundError, ValueError) as e:  # a mistyped root or sweep: a message, not a traceback
        print(f"analysis.report: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
