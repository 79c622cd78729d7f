"""What the stronger attacks cost on this CPU: tuned attackers and the white-box ``rmle`` (issue 15).

Per partition of the face CNN (default widths, 64×64 RGB: real LFW with ``--data-root``, else
the embedded crops at 64×64), on activations computed once as the attacker pool does:

- each attacker with fixed hyperparameters (``--epochs``, lr 1e-3, batch 64): train + score;
- the same attacker tuned (``privacy.tuning``: ``--tune`` Optuna candidates, first the fixed
  one, on its validation split): search + score;
- ``rmle`` (its default 300 Adam steps per image) on the ``--n-eval`` evaluation images.

Printed: seconds of each, the ratio tuned / fixed per attacker and rmle / (the partition's mean
fixed attacker); both measured in one process, side by side. Weights are the untrained net's:
the cost of an attack does not depend on them (its SSIM does; see the report's
leakage-by-knowledge table for that).

    python benchmarks/attack_cost.py --data-root ../shared/data/lfw/lfw-deepfunneled
    python benchmarks/attack_cost.py --partitions pool1 --n-train 256 --n-eval 32 --epochs 2 --tune 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import lfw_like, machine_line, print_table  # noqa: E402

from pp_cluster import pipeline  # noqa: E402
from pp_cluster.config import ModelSpec  # noqa: E402
from pp_cluster.nets import build_decoder, split  # noqa: E402
from pp_cluster.nets.decoders import width_of  # noqa: E402
from pp_cluster.privacy.attack import AttackConfig, compute_activations, evaluate_attack, train_attacker  # noqa: E402
from pp_cluster.privacy.tuning import tune_attacker  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, help="real LFW (lfw-deepfunneled); default: the embedded crops")
    p.add_argument("--partitions", default="pool1,pool2,pool3")
    p.add_argument("--attackers", default="deconv,fc,resdec")
    p.add_argument("--n-train", type=int, default=1024, help="attacker training pairs")
    p.add_argument("--n-eval", type=int, default=128, help="evaluation images (rmle optimises each)")
    p.add_argument("--epochs", type=int, default=10, help="the fixed attackers' epochs (the cpu profile's)")
    p.add_argument("--tune", type=int, default=4, help="Optuna candidates per tuned attacker")
    p.add_argument("--threads", type=int, default=1, help="torch threads (an attacker actor has one)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dataset, root, options = lfw_like(args.data_root)
    spec = ModelSpec(
        dataset, "face_cnn", None, 0.0, (), "ssim", 0, 1, 32, root, "none", dataset_options=options
    )
    ds = pipeline.load_data(spec)
    torch.manual_seed(0)
    net = pipeline.build_classifier(spec, ds.image_shape, ds.num_classes).eval()
    x_train, x_eval = ds.train.x[: args.n_train], ds.test.x[: args.n_eval]
    print(
        f"{machine_line()}; {dataset}, {len(x_train)} attacker pairs, {len(x_eval)} eval images, "
        f"{args.threads} thread(s), fixed {args.epochs} epochs, tuned {args.tune} candidates"
    )
    rows = []
    for partition in args.partitions.split(","):
        local, _ = split(net, partition)
        h_train, h_eval = compute_activations(local, x_train), compute_activations(local, x_eval)
        base = AttackConfig(epochs=args.epochs, batch_size=64, lr=1e-3, seed=0)
        fixed_times = []
        for name in args.attackers.split(","):

            def build(opts, name=name):
                return build_decoder(name, net, partition, ds.value_range, **opts)

            t0 = time.perf_counter()
            attacker, _ = train_attacker(build({}), h_train, x_train, ds.value_range, base)
            evaluate_attack(attacker, h_eval, x_eval, ds.value_range, with_dpd=False)
            fixed = time.perf_counter() - t0
            t0 = time.perf_counter()
            attacker, _, chosen = tune_attacker(
                build, h_train, x_train, ds.value_range, base, args.tune, width=width_of(name, net)
            )
            evaluate_attack(attacker, h_eval, x_eval, ds.value_range, with_dpd=False)
            tuned = time.perf_counter() - t0
            fixed_times.append(fixed)
            rows.append([partition, name, fixed, tuned, tuned / fixed, "", ""])
            print(f"  {partition} {name}: fixed {fixed:.1f} s, tuned {tuned:.1f} s", flush=True)
        rmle = build_decoder("rmle", net, partition, ds.value_range)
        rmle.fit_closed_form(h_train, x_train)
        t0 = time.perf_counter()
        evaluate_attack(rmle, h_eval, x_eval, ds.value_range, with_dpd=False)
        seconds = time.perf_counter() - t0
        mean_fixed = sum(fixed_times) / len(fixed_times)
        rows.append([partition, rmle.describe(), "", "", "", seconds, seconds / mean_fixed])
        print(f"  {partition} rmle: {seconds:.1f} s ({seconds / len(x_eval):.2f} s per image)", flush=True)
    print_table(
        ["partition", "attacker", "fixed s", "tuned s", "tuned / fixed", "rmle s", "rmle / mean fixed"], rows
    )


if __name__ == "__main__":
    main()
