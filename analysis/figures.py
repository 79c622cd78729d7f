"""The paper's figures, the frontier plot and training curves (matplotlib, Agg canvas).

Every function takes the tidy frame built in :mod:`analysis.tables`, writes one PNG per
(sweep, dataset) into ``out`` and returns the paths, so the report can link them. Figures
are drawn on their own Agg canvases, not through pyplot: importing this module leaves a
notebook's backend and pyplot's global figure list alone.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps, rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import Bbox
from PIL import Image

from analysis.tables import PAPER_DEFENSES, SETTING, config_label, in_setting, natural_key, settings

STYLE = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "savefig.dpi": 150,
}
# (column, axis label with unit, scale applied before plotting)
FIG5_PANELS = [
    ("test_acc", "test accuracy (%)", 100.0),
    ("reprint_acc", "reprint accuracy (%)", 100.0),
    ("ssim", "SSIM (1 = identical)", 1.0),
    ("mse", "MSE (pixels in [0, 1])", 1.0),
    ("dpd", "DPD (LPIPS distance)", 1.0),
]
FIG5_TITLES = [
    "accuracy",
    "reprint accuracy",
    "SSIM of best attack",
    "MSE of best attack",
    "DPD of best attack",
]


def _color(i: int) -> tuple:
    return colormaps["tab10"](i % 10)


def _figure(**kw) -> Figure:
    fig = Figure(**kw)
    FigureCanvasAgg(fig)  # attaches itself: savefig and get_renderer work without pyplot
    return fig


def model_label(partition: str, defense: str, lam: float, suite: str = "") -> str:
    """A frontier point's label: partition and λ (and defender ``suite`` when given), or the
    other defense's name."""
    if defense not in PAPER_DEFENSES:
        return f"{partition}, {defense}"
    return f"{partition}, λ={lam:g}" + (f" [{suite}]" if suite else "")


def _slug(*parts: object) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9.-]+", "-", str(p)).strip("-") for p in parts)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, bbox_inches="tight")
    return path


def _per_dataset(df: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    return [(s, d, g) for (s, d), g in df.groupby(["sweep", "dataset"], observed=True, sort=True)]


def figure4(data: pd.DataFrame, out: Path, n_images: int = 8) -> list[Path]:
    """Originals over reconstructions of the strongest (max SSIM) attacker, one row pair per
    partition × defense; ``data`` comes from :func:`analysis.tables.figure4_data`."""
    paths = []
    for sweep, dataset, g in _per_dataset(data):
        configs = sorted(
            g.groupby([*SETTING, "partition"], observed=True, sort=False),
            key=lambda kv: (kv[0][0] != "none", kv[0][0], kv[0][2], kv[0][1], natural_key(kv[0][3])),
        )
        n_cols = min(n_images, int(g.groupby("attack_id")["index"].nunique().max()))
        with rc_context(STYLE):
            # Square cells in (original, reconstruction) pairs with a gap between pairs; no margins:
            # bbox_inches="tight" grows the canvas to fit the row labels.
            n = len(configs)
            fig = _figure(figsize=(1.1 * n_cols, 2.5 * n))
            grid = fig.add_gridspec(
                3 * n - 1,
                n_cols,
                height_ratios=([1, 1, 0.3] * n)[:-1],
                hspace=0.06,
                wspace=0.06,
                left=0,
                right=1,
                bottom=0,
                top=1,
            )
            for r, ((defense, defenders, lam, partition), rows) in enumerate(configs):
                rows = rows.sort_values("index").head(n_cols)
                first = rows.iloc[0]
                labels = (
                    f"{partition}, {config_label(defense, defenders, lam)}\noriginal",
                    f"reconstruction\n{first['attacker']}, SSIM {first['ssim']:.2f}",
                )
                for k, (col, label) in enumerate(zip(("original", "reconstruction"), labels)):
                    for c in range(n_cols):
                        ax = fig.add_subplot(grid[3 * r + k, c], xticks=[], yticks=[])
                        if c < len(rows):
                            img = np.asarray(Image.open(io.BytesIO(rows.iloc[c][col])))
                            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
                        else:
                            ax.axis("off")
                        if c == 0:
                            ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=10)
            fig.suptitle(
                f"Figure 4 — reconstructions by the strongest attacker\n{dataset}, sweep {sweep}",
                y=1.0,
                va="bottom",
            )
            paths.append(_save(fig, out / f"figure4_{_slug(sweep, dataset)}.png"))
    return paths


def activation_maps(data: pd.DataFrame, out: Path) -> list[Path]:
    """Figures 6, 8 and 9: one test image (left) and its hidden activations at each partition,
    the undefended model's row over the defended one's, the first channels in grey-scale;
    ``data`` comes from :func:`analysis.report.activation_maps_data`. A row's maps share one
    grey scale, that model's own darkest to brightest value over the channels drawn, so a
    channel the defense switched off shows flat and dark beside its active ones (the paper's
    reading) while two models of different activation scales stay comparable."""
    paths = []
    for sweep, dataset, g in _per_dataset(data):
        rows = sorted(
            g.itertuples(index=False),
            key=lambda r: (natural_key(r.partition), r.defense != "none", r.lam, r.defenders),
        )
        n_cols = 1 + max(len(r.maps) for r in rows)
        with rc_context(STYLE):
            fig = _figure(figsize=(0.9 * n_cols, 1.1 * len(rows)))
            grid = fig.add_gridspec(
                len(rows), n_cols, hspace=0.3, wspace=0.06, left=0, right=1, bottom=0, top=1
            )
            for i, r in enumerate(rows):
                first = i == 0 or rows[i - 1].partition != r.partition  # the partition's channels named
                ax = fig.add_subplot(grid[i, 0], xticks=[], yticks=[])
                ax.imshow(r.image, cmap="gray" if r.image.ndim == 2 else None, vmin=0, vmax=1)
                ax.set_ylabel(
                    f"{r.partition}, {config_label(r.defense, r.defenders, r.lam)}\nseed {r.seed}",
                    rotation=0,
                    ha="right",
                    va="center",
                    fontsize=10,
                )
                lo, hi = float(r.maps.min()), float(r.maps.max())
                for c, fmap in enumerate(r.maps, start=1):
                    ax = fig.add_subplot(grid[i, c], xticks=[], yticks=[])
                    ax.imshow(fmap, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
                    if first:
                        ax.set_title(f"ch {c - 1}", fontsize=8)
            fig.suptitle(
                f"Figures 6, 8, 9 — hidden activations without and with the defense\n{dataset}, sweep {sweep}",
                y=1 + 0.3 / fig.get_figheight(),  # above the channel names
                va="bottom",
            )
            paths.append(_save(fig, out / f"activations_{_slug(sweep, dataset)}.png"))
    return paths


def _grouped_bars(ax: Axes, g: pd.DataFrame, col: str, scale: float, configs: list, colors: dict) -> None:
    """One bar per setting at each partition with its 95 % interval as whiskers."""
    partitions = sorted(g["partition"].unique(), key=natural_key)
    width = min(0.8 / max(len(configs), 1), 0.35)
    for k, cfg in enumerate(configs):
        sub = g[in_setting(g, cfg)].set_index("partition").reindex(partitions)
        mean = sub[f"{col}_mean"].to_numpy(float) * scale
        if np.isnan(mean).all():
            continue
        x = np.arange(len(partitions)) + (k - (len(configs) - 1) / 2) * width
        ax.bar(x, mean, width, color=colors[cfg], label=config_label(*cfg))
        mid, half = _interval(sub, col, scale)
        shown = ~np.isnan(mid)
        ax.errorbar(x[shown], mid[shown], yerr=half[shown], fmt="none", ecolor="black", capsize=3, lw=1)
    ax.set_xticks(np.arange(len(partitions)), partitions)
    ax.set_xlim(-0.6, len(partitions) - 0.4)
    ax.set_xlabel("partition point")


def _interval(df: pd.DataFrame, col: str, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Middle and half-width of ``<col>_ci_lo/_hi`` (NaN where there is none), for whiskers that
    span the interval itself: a bootstrap interval of a worst case need not contain the mean."""
    lo, hi = df[f"{col}_ci_lo"].to_numpy(float) * scale, df[f"{col}_ci_hi"].to_numpy(float) * scale
    return (lo + hi) / 2, (hi - lo) / 2


def figure5(data: pd.DataFrame, out: Path) -> list[Path]:
    """Up to five panels per data set (accuracy, reprint accuracy, SSIM, MSE, DPD): best attack
    per model, mean over seeds with 95 % intervals, one bar per defense configuration at each
    partition. A criterion without values (DPD offline, reprint accuracy without labels) gets no
    panel, and a line under the figure names it; the others keep the paper's panel letters."""
    paths = []
    for sweep, dataset, g in _per_dataset(data):
        configs = settings(g)
        colors = {cfg: _color(i) for i, cfg in enumerate(configs)}
        panels = [
            (f"({'abcde'[i]}) {title}", *panel)
            for i, (panel, title) in enumerate(zip(FIG5_PANELS, FIG5_TITLES))
            if g[f"{panel[0]}_mean"].notna().any()
        ]
        empty = [t for (c, _, _), t in zip(FIG5_PANELS, FIG5_TITLES) if g[f"{c}_mean"].isna().all()]
        with rc_context(STYLE):
            fig = _figure(figsize=(3.6 * len(panels), 3.8), layout="constrained")
            axes = np.atleast_1d(fig.subplots(1, len(panels)))
            for ax, (title, col, ylabel, scale) in zip(axes, panels):
                ax.set_title(title)
                ax.set_ylabel(ylabel)
                _grouped_bars(ax, g, col, scale, configs, colors)
            if empty:
                fig.supxlabel(f"not drawn, no values in these tables: {', '.join(empty)}", color="0.4")
            n = g["ssim_n"]
            seeds = f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"
            handles = [Rectangle((0, 0), 1, 1, color=colors[c]) for c in configs]
            fig.legend(
                handles,
                [config_label(*c) for c in configs],
                loc="outside upper center",
                ncol=len(configs),
                title=f"{dataset} (sweep {sweep}) — mean over {seeds} seed(s), "
                "95 % interval (t over seeds; one seed: bootstrap over images or Wilson)",
            )
            paths.append(_save(fig, out / f"figure5_{_slug(sweep, dataset)}.png"))
    return paths


def figure7(data: pd.DataFrame, out: Path) -> list[Path]:
    """DP image pixelation: SSIM and classification accuracy against ε (mean, 95 % interval)."""
    paths = []
    for sweep, dataset, g in _per_dataset(data):
        g = g.sort_values("epsilon")
        eps = g["epsilon"].to_numpy(float)
        with rc_context(STYLE):
            fig = _figure(figsize=(9, 3.6), layout="constrained")
            axes = fig.subplots(1, 2)
            for ax, col, ylabel, scale in (
                (axes[0], "ssim", "SSIM (1 = identical)", 1.0),
                (axes[1], "test_acc", "classification accuracy (%)", 100.0),
            ):
                ax.plot(eps, g[f"{col}_mean"] * scale, marker="o")
                mid, half = _interval(g, col, scale)
                ax.errorbar(eps, mid, yerr=half, fmt="none", ecolor="C0", capsize=3)
                ax.set_xlabel("privacy parameter ε")
                ax.set_ylabel(ylabel)
                if eps.min() > 0 and eps.max() / eps.min() > 20:
                    ax.set_xscale("log")
                ax.grid(alpha=0.3)
            fig.suptitle(f"Figure 7 — DP image pixelation, {dataset} (sweep {sweep})")
            paths.append(_save(fig, out / f"figure7_{_slug(sweep, dataset)}.png"))
    return paths


def place_labels(
    ax: Axes,
    xs: Sequence[float],
    ys: Sequence[float],
    texts: Sequence[str],
    avoid: np.ndarray | None = None,
    fontsize: float = 9,
) -> None:
    """Annotate points without overlapping labels: each label takes the first candidate offset
    (growing rings of eight directions) whose box stays inside the axes and clears every label
    already placed, every labelled point and every ``avoid`` point (data coordinates: other
    markers, samples along lines). Where no spot is free it takes the least bad one, counting
    an overlap with a label ten times one with a marker."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    pts = np.column_stack([xs, ys])
    if avoid is not None and len(avoid):
        pts = np.vstack([pts, avoid])
    r = 4 * fig.dpi / 72  # a marker's half size in display pixels
    markers = [Bbox.from_extents(px - r, py - r, px + r, py + r) for px, py in ax.transData.transform(pts)]
    placed: list[Bbox] = []
    dirs = [(-1, 1), (1, -1), (1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
    candidates = [(dx * d, dy * d) for d in (6, 14, 24, 36, 50, 70) for dx, dy in dirs]
    for x, y, s in zip(xs, ys, texts):
        best = None
        for dx, dy in candidates:
            t = ax.annotate(
                s,
                (x, y),
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=fontsize,
                ha="left" if dx > 0 else "right" if dx < 0 else "center",
                va="bottom" if dy > 0 else "top" if dy < 0 else "center",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
                arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6} if abs(dx) + abs(dy) > 20 else None,
            )
            box = t.get_window_extent(renderer).padded(2)
            inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            clashes = (
                10 * sum(box.overlaps(o) for o in placed)
                + sum(box.overlaps(o) for o in markers)
                + (0 if inside else 1000)
            )
            if best is None or clashes < best[0]:
                if best is not None:
                    best[1].remove()
                best = (clashes, t, box)
            else:
                t.remove()
            if clashes == 0:
                break
        placed.append(best[2])


def _staircase(x: np.ndarray, y: np.ndarray, n: int = 25) -> np.ndarray:
    """Points along the ``step(where="post")`` line through (x, y), so labels can avoid it."""
    corners = np.column_stack([np.repeat(x, 2)[1:], np.repeat(y, 2)[:-1]])
    t = np.linspace(0, 1, n)[:, None, None]
    return (corners[:-1] + t * (corners[1:] - corners[:-1])).reshape(-1, 2)


MARKERS = "osD^vP*Xph"


def _setting_key(defense: str, lam: float) -> str:
    """What a frontier point's marker shape tells: λ of the paper's defense, else the defense."""
    return f"λ={lam:g}" if defense in PAPER_DEFENSES else defense


def frontier_plot(points: pd.DataFrame, hv: pd.DataFrame, out: Path) -> list[Path]:
    """All models in the (worst-case SSIM, accuracy) plane, coloured by partition, shaped by λ
    (or by the defense, for other defenses); the Pareto set filled, joined by its staircase and
    labelled by partition and λ."""
    paths = []
    # DP-pixelation models release pixelated inputs, not activations: no partition, "input".
    for sweep, dataset, g in _per_dataset(points.assign(partition=points["partition"].fillna("input"))):
        partitions = sorted(g["partition"].unique(), key=natural_key)
        colors = {p: _color(i) for i, p in enumerate(partitions)}
        key = pd.Series([_setting_key(d, lam) for d, lam in zip(g["defense"], g["lam"])], index=g.index)
        other = ~g["defense"].isin(PAPER_DEFENSES)  # shapes: the λ in order, then other defenses
        order = g.assign(key=key, other=other).sort_values(["other", "lam", "defense"])["key"].unique()
        shapes = {k: MARKERS[i % len(MARKERS)] for i, k in enumerate(order)}
        front = g[g["on_frontier"]].sort_values("ssim")
        # Name the defender suite only where λ alone would not tell two configurations apart.
        many_suites = g.loc[g["defenders"] != "", "defenders"].nunique() > 1
        with rc_context(STYLE):
            fig = _figure(figsize=(7.5, 5.2), layout="constrained")
            ax = fig.subplots()
            ax.step(
                front["ssim"],
                front["test_acc"] * 100,
                where="post",
                color="0.3",
                lw=1,
                zorder=1,
                label="Pareto frontier",
            )
            for (p, k), sub in g.groupby([g["partition"], key], sort=False):
                rest, best = sub[~sub["on_frontier"]], sub[sub["on_frontier"]]
                m = shapes[k]
                ax.scatter(
                    rest["ssim"],
                    rest["test_acc"] * 100,
                    s=30,
                    marker=m,
                    facecolors="none",
                    edgecolors=[colors[p]],
                )
                ax.scatter(
                    best["ssim"],
                    best["test_acc"] * 100,
                    s=55,
                    marker=m,
                    color=colors[p],
                    edgecolors="black",
                    zorder=3,
                )
            ax.set_xlabel("worst-case attacker SSIM (lower = more private)")
            ax.set_ylabel("test accuracy (%)")
            ax.margins(0.15)
            ax.grid(alpha=0.3)
            row = hv[(hv["sweep"] == sweep) & (hv["dataset"] == dataset)].iloc[0]
            ax.set_title(
                f"{dataset} (sweep {sweep}): {row['n_pareto']} of {row['n_models']} (model, partition) "
                f"points on the frontier, hypervolume {row['hypervolume']:.3f}"
            )
            dot = dict(linestyle="none", markersize=7)
            handles = [
                *ax.get_legend_handles_labels()[0],  # the staircase
                *[Rectangle((0, 0), 1, 1, color=colors[p], label=p) for p in partitions],
                *[Line2D([], [], marker=m, color="0.4", label=k, **dot) for k, m in shapes.items()],
            ]
            ax.legend(
                handles=handles, title="partition (colour), setting (shape); filled = Pareto", loc="best"
            )
            fig.canvas.draw()
            fig.set_layout_engine("none")  # freeze the layout: labels are placed in display space
            fx, fy = front["ssim"].to_numpy(float), (front["test_acc"] * 100).to_numpy(float)
            others = np.column_stack([g["ssim"], g["test_acc"] * 100]).astype(float)
            labels = [
                model_label(*t[:3], t[3] if many_suites else "")
                for t in front[["partition", "defense", "lam", "defenders"]].itertuples(index=False)
            ]
            place_labels(ax, fx, fy, labels, avoid=np.vstack([others, _staircase(fx, fy)]))
            paths.append(_save(fig, out / f"frontier_{_slug(sweep, dataset)}.png"))
    return paths


CURVES: list[tuple[str, str, Callable[[pd.Series], pd.Series]]] = [
    ("task_loss", "task loss (cross-entropy)", lambda s: s),
    ("distance", "closest defender's distance", lambda s: s),
    ("test_acc", "test accuracy (%)", lambda s: s * 100),
]
# What the epochs' ``distance`` is, by ``models.distance`` (Eq. 1 of the paper).
DISTANCE_UNITS = {"ssim": "1 − SSIM", "mse": "MSE, pixels in [0, 1]"}


def training_curves(epochs: pd.DataFrame, models: pd.DataFrame, out: Path) -> list[Path]:
    """Task loss, defender distance and test accuracy per epoch, one line per partition ×
    defenders × λ (mean over seeds); an undefended model trains without a partition."""
    cols = ["sweep", "model_id", "dataset", "partition", "defenders", "lam"]
    models = models.assign(partition=models["partition"].fillna("undefended"))
    e = epochs.merge(
        models[[*cols, "distance"]].rename(columns={"distance": "distance_kind"}),
        on=["sweep", "model_id"],
        how="inner",
    )
    paths = []
    for sweep, dataset, g in _per_dataset(e):
        keys = ["partition", "defenders", "lam"]
        lines = sorted(
            g.groupby(keys, observed=True, sort=False),
            key=lambda kv: (natural_key(kv[0][0]), kv[0][1], kv[0][2]),
        )
        with rc_context(STYLE):
            fig = _figure(figsize=(4.2 * len(CURVES) + 2.5, 3.6), layout="constrained")
            axes = fig.subplots(1, len(CURVES))
            for i, ((partition, defenders, lam), sub) in enumerate(lines):
                mean = sub.groupby("epoch")[[c for c, _, _ in CURVES]].mean()
                label = f"{partition}, λ={lam:g}" + (f" [{defenders}]" if defenders else "")
                for ax, (col, _, fn) in zip(axes, CURVES):
                    ax.plot(
                        mean.index,
                        fn(mean[col]),
                        marker="." if len(mean) < 30 else None,
                        color=_color(i),
                        label=label,
                    )
            kinds = g.loc[g["distance"].notna(), "distance_kind"].unique()
            units = " / ".join(DISTANCE_UNITS.get(k, k) for k in sorted(kinds)) or "no defenders"
            for ax, (col, ylabel, _) in zip(axes, CURVES):
                ax.set_xlabel("epoch")
                ax.set_ylabel(f"{ylabel} ({units})" if col == "distance" else ylabel)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.grid(alpha=0.3)
            handles, labels = axes[0].get_legend_handles_labels()
            fig.legend(handles, labels, loc="outside right upper", title="partition, λ [defenders]")
            fig.suptitle(f"Training curves — {dataset} (sweep {sweep}), mean over seeds")
            paths.append(_save(fig, out / f"curves_{_slug(sweep, dataset)}.png"))
    return paths
