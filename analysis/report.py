"""``python -m analysis.report RESULTS_ROOT [--out DIR] [--sweep NAME] [--markdown PAGE] [--activation-maps]``
(``pp-farm report`` is the same command).

Writes DIR/report.md (Markdown tables, linked PNG figures), DIR/report.html (the same page,
self-contained: figures embedded), every table as CSV beside them, the per-image metrics as
DIR/per_image.parquet, and a "Missing" section naming each artefact the tables hold no input
for; with --markdown, PAGE, the deterministic results page of :mod:`analysis.results_md` (no
figures). The activation maps (Figures 6/8/9) are drawn from the models' saved weights, of the
embedded public data sets only unless --activation-maps.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs

from analysis.results_md import (
    cell,
    family_md,
    family_paired_md,
    fmt,
    gains_md,
    interval,
    md_table,
    paired_md,
    seeds_note,
    table_i_md,
    table_ii_md,
    write_markdown,
)
from analysis.tables import (
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
    leakage_by_family_paired,
    leakage_gains,
    load,
    natural_key,
    paired_differences,
    partition_suites,
    per_image,
    settings,
    table_i,
    table_ii,
    table_iii,
)
from analysis.uncertainty import METHODS
from pp_cluster.cli import add_report_args
from pp_cluster.profiles import PUBLIC_DATASETS
from pp_cluster.results.fs import redact, resolve
from pp_cluster.results.rules import succeeded


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
            f"{seeds_note(g, 'n_cg_n')}"
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


def per_image_md(t: pd.DataFrame) -> str:
    """Per partition, the image an attacker rebuilt best (highest SSIM) and the one it rebuilt
    worst (lowest), over every non-baseline attack there; ``t`` is :func:`analysis.tables.per_image`."""
    real = t[~t["baseline"]].dropna(subset=["partition", "ssim"])
    groups = sorted(
        real.groupby(["sweep", "dataset", "partition"], sort=False),
        key=lambda kv: (kv[0][0], kv[0][1], natural_key(kv[0][2])),
    )
    rows = []
    for (sweep, dataset, partition), g in groups:
        for which, i in (("best", g["ssim"].idxmax()), ("worst", g["ssim"].idxmin())):
            r = g.loc[i]
            setting = config_label(r["defense"], r["defenders"], r["lam"])
            rows.append(
                [sweep, dataset, partition, which, setting, r["seed"], r["attacker"], r["index"]]
                + [fmt(r["ssim"]), fmt(r["mse"], ".4f")]
            )
    cols = ["sweep", "dataset", "partition", "reconstructed", "configuration", "seed", "attacker"]
    body = pd.DataFrame(rows, columns=[*cols, "image index", "SSIM", "MSE"])
    return (
        f"{md_table(body)}\n\nThe best- and worst-reconstructed image at each partition: the highest and "
        "lowest per-image SSIM of any attacker but the baseline, over every model attacked there. The image "
        "index is its place in the evaluation order (the same for every attack of a sweep; the "
        "reconstructions table's `index`)."
    )


# -- Figures 6, 8, 9: hidden activations with and without the defense --------------------
# The tables hold no activations: the models are loaded from the results root (their
# ``_ray/train-*/state.pt``) and run on one test image.

ACTIVATION_PARTITIONS = ("pool1", "pool2")  # the paper's (V-C(3)): deeper maps are hard to read
# Activation maps of a face are images of that person: drawn by default only for the embedded
# public data sets (PUBLIC_DATASETS), any other only with --activation-maps (as reconstructions
# of real data are opt-in).
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


# -- report.html: the same page, self-contained ---------------------------------------------
# No Markdown library is a dependency, and the report writes a small subset of Markdown: headings,
# paragraphs, pipe tables (md_table), "- " lists, images, links, **bold**, *italic* and `code`.
# This renders exactly that subset; images become inline base64 PNGs, so the page travels alone.

HTML_STYLE = """
body { font-family: system-ui, sans-serif; line-height: 1.45; max-width: 1200px; margin: 2em auto;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.table { overflow-x: auto; }
img { max-width: 100%; height: auto; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


def _img(alt: str, src: str, base: Path) -> str:
    path = base / html.unescape(src)
    if src.endswith(".png") and path.is_file():
        src = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{alt}" src="{src}">'


def _inline(text: str, base: Path) -> str:
    """Markdown text as escaped HTML; `code` spans are kept verbatim."""
    codes: list[str] = []

    def keep(m: re.Match) -> str:
        codes.append(f"<code>{html.escape(m.group(1))}</code>")
        return f"\x00{len(codes) - 1}\x00"

    text = html.escape(re.sub(r"`([^`]+)`", keep, text))
    text = re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", lambda m: _img(m.group(1), m.group(2), base), text)
    text = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"(?<![\w*])\*(\S(?:.*?\S)?)\*(?![\w*])", r"<em>\1</em>", text)
    return re.sub(r"\x00(\d+)\x00", lambda m: codes[int(m.group(1))], text)


def _kind(line: str) -> str:
    """The block a line belongs to: "" (blank), "h", "table", "list" or "p"."""
    if not line.strip():
        return ""
    if re.match(r"#{1,6} ", line):
        return "h"
    return "table" if line.startswith("|") else "list" if line.startswith("- ") else "p"


def _heading_html(lines: list[str], base: Path) -> str:
    hashes, text = lines[0].split(" ", 1)
    return f"<h{len(hashes)}>{_inline(text, base)}</h{len(hashes)}>"


def _table_html(lines: list[str], base: Path) -> str:
    r"""A pipe table of :func:`md_table`: header, ``---`` row, rows; ``\|`` is a pipe in a cell."""

    def row(line: str, tag: str) -> str:
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
        return "<tr>" + "".join(f"<{tag}>{_inline(c, base)}</{tag}>" for c in cells) + "</tr>"

    body = "\n".join(row(line, "td") for line in lines[2:])
    return f'<div class="table"><table>\n<thead>{row(lines[0], "th")}</thead>\n<tbody>\n{body}\n</tbody></table></div>'


def _list_html(lines: list[str], base: Path) -> str:
    return "<ul>\n" + "\n".join(f"<li>{_inline(line[2:], base)}</li>" for line in lines) + "\n</ul>"


def _paragraph_html(lines: list[str], base: Path) -> str:
    return f"<p>{_inline(' '.join(lines), base)}</p>"


def report_html(md: str, base: Path) -> str:
    """The report's Markdown ``md`` as one self-contained HTML page; its images are read from ``base``."""
    blocks: list[tuple[str, list[str]]] = []  # (kind, lines): consecutive lines of one kind
    for line in md.splitlines():
        kind = _kind(line)
        if blocks and blocks[-1][0] == kind and kind not in ("", "h"):
            blocks[-1][1].append(line)
        else:
            blocks.append((kind, [line]))
    render = {"h": _heading_html, "table": _table_html, "list": _list_html, "p": _paragraph_html}
    body = "\n".join(render[kind](lines, base) for kind, lines in blocks if kind)
    title = next((line[2:] for line in md.splitlines() if line.startswith("# ")), "report")
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{HTML_STYLE}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


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
    """Build every artefact the tables allow; returns the path of report.md (report.html beside
    it). ``activation_maps`` draws Figures 6/8/9 for data sets beyond the embedded public ones
    (images of people)."""
    from analysis import figures  # matplotlib: only this report draws; the results page does not

    res = load(root, sweep)
    out.mkdir(parents=True, exist_ok=True)
    sections = ["# Privacy-partitioning sweep report"]
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

    def images_metrics() -> str:
        t = per_image(res)
        t.to_parquet(out / "per_image.parquet", index=False)
        return (
            f"Parquet: [per_image.parquet](per_image.parquet), {len(t)} rows: one per successful attack and "
            "evaluation image, its SSIM and MSE beside the model's setting (`analysis.tables.per_image`)."
            f"\n\n{per_image_md(t)}"
        )

    # The pictures first where a sweep kept them (on by default for the embedded public data).
    artefact("Figure 4 — original vs reconstructed images", fig4)
    sections += ["## Summary", _summary(res)]
    artefact(
        "Table I — accuracy and attacker MSE/SSIM per defender weight λ",
        table(table_i, table_i_md, "table_i"),
    )
    artefact("Table II — no, single and multiple defenders", table(table_ii, table_ii_md, "table_ii"))
    artefact(
        "Table III — gender estimation from reconstructions", table(table_iii, table_iii_md, "table_iii")
    )
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
    artefact(
        "Leakage by attacker knowledge — how much each step raises one model's worst case",
        table(leakage_gains, gains_md, "leakage_gains"),
    )
    artefact(
        "Leakage by attacker knowledge, defended minus undefended, paired by seed",
        table(leakage_by_family_paired, family_paired_md, "leakage_by_family_paired"),
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
    artefact("Per-image metrics — the best- and worst-reconstructed images", images_metrics)
    sections += [
        "## Missing",
        "\n".join(f"- {m}" for m in missing) if missing else "Nothing: every artefact was built.",
    ]
    text = "\n\n".join(sections) + "\n"
    path = out / "report.md"
    path.write_text(text)
    (out / "report.html").write_text(report_html(text, out), encoding="utf-8")
    return path


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], prog="python -m analysis.report")
    add_report_args(p)
    return p


def run(args: argparse.Namespace, prog: str = "analysis.report") -> int:
    """Write what ``args`` (:func:`pp_cluster.cli.add_report_args`) asks for: 0, or 2 with a
    message naming a mistyped root or sweep."""
    t0 = time.perf_counter()
    try:
        if args.out is not None:
            path = build_report(args.root, args.out, args.sweep, args.activation_maps)
            print(f"report: {path}, {path.with_suffix('.html')} ({time.perf_counter() - t0:.1f} s)")
        if args.markdown is not None:
            print(f"results page: {write_markdown(args.root, args.markdown, args.sweep)}")
    except (FileNotFoundError, ValueError) as e:  # a mistyped root or sweep: a message, not a traceback
        print(f"{prog}: error: {redact(str(e))}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.out is None and args.markdown is None:
        parser.error("nothing to write: give --out DIR, --markdown PAGE or both")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
