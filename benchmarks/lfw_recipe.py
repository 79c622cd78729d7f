"""Which recipe and widths make the face CNN converge on real LFW in a CPU budget? (issue 13)

Trains the undefended face CNN on the real 34-person split (64×64 RGB, ``../shared/data``) with
each recipe asked for, per seed, and prints per-epoch seconds and test accuracy, the epoch at
which each accuracy threshold is first reached, and the final accuracy over seeds (mean ± 95 %
t-interval). Plain functions of ``pipeline``; no Ray.

    python benchmarks/lfw_recipe.py --recipes fast,paper --epochs 30 --seeds 0,1,2
    python benchmarks/lfw_recipe.py --recipes fast --widths 16,32,64,128 --fc 256
    python benchmarks/lfw_recipe.py --recipes fast --amp off      # fp32 NCHW (the old CPU default)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, machine_line, print_table  # noqa: E402

from pp_cluster import pipeline  # noqa: E402
from pp_cluster.config import ModelSpec  # noqa: E402

THRESHOLDS = (0.5, 0.7, 0.8, 0.85)


def mean_ci(values: list[float]) -> str:
    from scipy.stats import t

    v = np.asarray(values, float)
    if len(v) < 2:
        return f"{v.mean():.3f}"
    half = t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return f"{v.mean():.3f} ± {half:.3f}"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, default=SHARED_DATA / "lfw" / "lfw-deepfunneled")
    p.add_argument("--recipes", default="fast", help="comma-separated recipe names (fast, paper)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seeds", default="0")
    p.add_argument("--widths", default="32,64,128,256", help="face CNN conv widths (4)")
    p.add_argument("--fc", type=int, default=512, help="face CNN hidden FC width")
    p.add_argument("--dropout", type=float, default=0.5, help="face CNN dropout after each hidden FC")
    p.add_argument(
        "--amp",
        choices=("auto", "on", "off"),
        default="auto",
        help="bf16 autocast + channels-last: the device default, forced on, or off (fp32 NCHW)",
    )
    p.add_argument("--lr", type=float, default=None, help="override the recipe's lr")
    p.add_argument("--threads", type=int, default=2)
    return p


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    widths = tuple(int(w) for w in args.widths.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]
    print(machine_line())
    overrides = {} if args.amp == "auto" else {"amp": args.amp == "on", "channels_last": args.amp == "on"}
    if args.lr is not None:
        overrides["lr"] = args.lr
    ds = None
    summary = []
    for name in args.recipes.split(","):
        finals, firsts, secs = [], {t: [] for t in THRESHOLDS}, []
        for seed in seeds:
            spec = ModelSpec(
                dataset="lfw",
                arch="face_cnn",
                partition="pool2",
                lam=0.0,
                defenders=(),
                distance="ssim",
                seed=seed,
                epochs=args.epochs,
                batch_size=32,
                data_root=str(args.data_root),
                defense="none",
                recipe=name,
                dataset_options={"min_faces": 30, "size": 64},
                arch_options={"widths": widths, "fc": args.fc, "dropout": args.dropout},
                train_overrides=overrides,
            )
            ds = ds or pipeline.load_data(spec)
            t0 = time.perf_counter()
            _, result = pipeline.train_model(spec, ds, "cpu")
            accs = [r["test_acc"] for r in result.epochs]
            secs.append(np.median([r["seconds"] for r in result.epochs]))
            finals.append(result.test_acc)
            for t in THRESHOLDS:
                hit = next((r["epoch"] for r in result.epochs if r["test_acc"] >= t), None)
                firsts[t].append(hit)
            print(
                f"recipe {name} seed {seed}: {time.perf_counter() - t0:.0f} s, test acc by epoch "
                + " ".join(f"{a:.2f}" for a in accs),
                flush=True,
            )
        summary.append(
            [
                name,
                args.widths,
                args.fc,
                args.dropout,
                f"{np.mean(secs):.1f}",
                *[",".join("-" if f is None else str(f) for f in firsts[t]) for t in THRESHOLDS],
                mean_ci(finals),
            ]
        )
    print(
        f"\nreal LFW: {len(ds.train)} train / {len(ds.test)} test images, {ds.num_classes} people; "
        f"{args.epochs} epochs; amp {args.amp}; seeds {seeds}"
    )
    print_table(
        [
            "recipe",
            "widths",
            "fc",
            "dropout",
            "s/epoch",
            *[f"first epoch ≥ {t}" for t in THRESHOLDS],
            "final test acc (95 % CI)",
        ],
        summary,
    )


if __name__ == "__main__":
    main(get_args_parser().parse_args())
