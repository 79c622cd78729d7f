"""Calibrate λ* for the CPU profile: a log grid of λ at one partition on real LFW (issue 13).

Runs the CPU profile of ``sweeps/lfw_grid.py`` (fast recipe, real 34-person LFW, 64×64)
through the farm at one partition over a log grid of λ, and prints per λ the test accuracy,
the worst-case attacker SSIM over the non-baseline attackers (with a 95 % bootstrap interval
over the test images), the accuracy cost and the SSIM drop against λ = 0, and the mean-image
baseline. λ* is the largest λ whose accuracy cost stays within ``--max-cost`` (the issue's
3 points) — the strongest defense the utility budget allows.

    python benchmarks/lfw_calibrate.py --lams 0,0.1,0.3,1 --partition pool2 --seeds 0 --attack-epochs 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, enter_repo_root, machine_line, print_table  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, default=SHARED_DATA / "lfw" / "lfw-deepfunneled")
    p.add_argument("--lams", default="0,0.1,0.3,1", help="comma-separated λ grid (log scale; include 0)")
    p.add_argument("--partition", default="pool2")
    p.add_argument("--seeds", default="0")
    p.add_argument("--epochs", type=int, default=None, help="default: the CPU profile's")
    p.add_argument("--attack-epochs", type=int, default=None, help="default: the CPU profile's")
    p.add_argument("--attackers", default="deconv,fc,resdec,mean_image")
    p.add_argument("--results", default="results/calibrate", help="results root (a resumable farm sweep)")
    p.add_argument("--max-cost", type=float, default=0.03, help="accuracy cost allowed for λ*")
    return p


def main(args: argparse.Namespace) -> None:
    enter_repo_root()
    import pandas as pd

    from analysis.tables import worst_case
    from pp_cluster.farm.sweep import run_sweep
    from pp_cluster.profiles import LFW_GRID_CPU

    if not args.data_root.is_dir():
        raise SystemExit(f"--data-root {args.data_root} is not a folder (real LFW, lfw-deepfunneled)")
    lams = tuple(float(v) for v in args.lams.split(","))
    spec = LFW_GRID_CPU.with_(
        name="lfw_calibrate",
        data_root=str(args.data_root),
        partitions=(args.partition,),
        lams=lams,
        seeds=tuple(int(s) for s in args.seeds.split(",")),
        attributes=False,
        dataset_options={"min_faces": 30, "size": 64},
        attackers=tuple(args.attackers.split(",")),
        results=args.results,
        **({"epochs": args.epochs} if args.epochs else {}),
        **({"attack_epochs": args.attack_epochs} if args.attack_epochs else {}),
    )
    print(machine_line(), flush=True)
    t0 = time.time()
    outcome = run_sweep(spec, resume=True)
    models = pd.read_parquet(Path(args.results) / "models", filters=[("sweep", "==", spec.name)])
    attacks = pd.read_parquet(Path(args.results) / "attacks", filters=[("sweep", "==", spec.name)])
    # This spec's attacks only: a results root may also hold attacks of other attacker settings.
    wanted = {a.attack_id(m, args.partition) for m in models["model_id"] for a in spec.attack_specs()}
    attacks = attacks[attacks["attack_id"].isin(wanted)]
    worst = worst_case(attacks.assign(sweep=attacks["sweep"].astype(str)))
    base = attacks[attacks["attacker"] == "mean_image"].groupby("model_id")["ssim"].mean().rename("baseline")
    m = models.assign(sweep=models["sweep"].astype(str))[["sweep", "model_id", "lam", "seed", "test_acc"]]
    m = m.merge(worst, on=["sweep", "model_id"], how="left").join(base, on="model_id")
    per_lam = (
        m.groupby("lam")
        .agg(
            acc=("test_acc", "mean"),
            ssim=("ssim", "mean"),
            lo=("ssim_ci_lo", "mean"),
            hi=("ssim_ci_hi", "mean"),
            attacker=("ssim_attacker", lambda s: ",".join(sorted(set(s)))),
            baseline=("baseline", "mean"),
            n=("seed", "count"),
        )
        .reset_index()
    )
    ref = per_lam.loc[per_lam["lam"] == 0].iloc[0] if (per_lam["lam"] == 0).any() else None
    rows = []
    for r in per_lam.itertuples():
        cost = None if ref is None else ref.acc - r.acc
        drop = None if ref is None else ref.ssim - r.ssim
        rows.append(
            [
                f"{r.lam:g}",
                r.n,
                f"{r.acc:.3f}",
                "-" if cost is None else f"{cost:+.3f}",
                f"{r.ssim:.3f} [{r.lo:.3f}, {r.hi:.3f}]",
                "-" if drop is None else f"{drop:+.3f}",
                r.attacker,
                f"{r.baseline:.3f}",
            ]
        )
    print(
        f"\nreal LFW, {spec.recipe} recipe, {spec.epochs} epochs, partition {args.partition}, seeds {spec.seeds}, "
        f"attackers {', '.join(spec.attackers)}; {outcome.n_trials} models in {time.time() - t0:.0f} s"
    )
    print(
        "worst-case SSIM: the strongest non-baseline attacker; interval: 95 % bootstrap over the "
        f"{int(attacks['n_eval'].max())} test images (per model, then averaged over seeds)"
    )
    print_table(
        [
            "λ",
            "seeds",
            "test acc",
            "acc cost",
            "worst SSIM [95 % CI]",
            "SSIM drop",
            "strongest",
            "mean-image SSIM",
        ],
        rows,
    )
    if ref is not None:
        ok = per_lam[(per_lam["lam"] > 0) & (ref.acc - per_lam["acc"] <= args.max_cost)]
        star = float(ok["lam"].max()) if not ok.empty else None
        print(
            f"\nλ* (largest λ with accuracy cost ≤ {args.max_cost:.0%}): {star if star is not None else 'none'}"
        )


if __name__ == "__main__":
    main(get_args_parser().parse_args())
