"""Step time of Algorithm 1 with 0, 1 and 4 defenders vs plain training (issue 8, target 3).

What is timed: ``train_defended`` itself (the science core, no Ray) on the face CNN split at
``--partition``, LFW recipe (SGD 0.9, lr 0.01, batch 32), LFW-like 64x64 RGB images. A
step's time is an epoch's ``seconds`` (from ``train_defended``'s epoch rows) divided by its
number of batches; the test split is cut to 2 images so the per-epoch accuracy pass adds
almost nothing. Epoch 1 (allocator and kernel warm-up) is dropped; the median over the rest
and over rounds is reported. Rounds alternate the configurations so load drift on a shared
machine hits all of them. "0 defenders" is plain training (λ = 0, no defender): the
baseline, its ratio is 1 by definition and its round-to-round spread shows the noise.

The FLOP floor of a defended step, relative to a plain one (forward + backward ~ 3x forward):
[3 (L + R) + sum_k 4 F_k + mean_k F_k] / 3 (L + R) -- each defender's own step (3 F_k), its
second forward after the update (F_k, step 2 of Algorithm 1), and the backward to h through
the chosen defender (input gradient only, ~F). The SSIM distance is not counted.
Target: one defender <= 1.8x a plain step.

    python benchmarks/defense_cost.py --quick
    python benchmarks/defense_cost.py --rounds 3 --epochs 5 --partition pool3
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from pathlib import Path

import torch

from _common import lfw_like, machine_line, print_table
from pp_cluster.data import load_dataset
from pp_cluster.data.base import Split
from pp_cluster.nets import activation_shape, build_decoder, build_net, flops_per_sample, split
from pp_cluster.privacy import recipe, train_defended


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="1 round of 2 epochs on 96 training images (a few minutes on 2 cores)")
    p.add_argument("--data-root", type=Path, default=None,
                   help="real LFW folder; default: scikit-image's LFW crops at 64x64 RGB")
    p.add_argument("--partition", default="pool2", help="face_cnn split point (the paper's LFW default: pool2)")
    p.add_argument("--suite4", default="deconv,resdec,deconv,resdec",
                   help="the 4-defender suite (the dense decoders have ~1e8 weights at pool1-pool3)")
    p.add_argument("--lam", type=float, default=0.1, help="λ of the defended runs (LFW recipe: 0.1)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=5, help="epochs per run; the first is dropped")
    p.add_argument("--limit-train", type=int, default=None, help="first N training images (--quick: 96)")
    p.add_argument("--threads", type=int, default=2)
    return p


def step_seconds(ds, partition: str, suite: tuple[str, ...], lam: float, epochs: int) -> list[float]:
    """Per-step seconds of epochs 2..``epochs`` of one fresh, seeded ``train_defended`` run."""
    torch.manual_seed(0)
    net = build_net("face_cnn", ds.image_shape, ds.num_classes)
    local, remote = split(net, partition)
    defenders = [build_decoder(d, net, partition, ds.value_range) for d in suite]
    cfg = recipe(ds.name, lam=lam if suite else 0.0, epochs=epochs, batch_size=32, seed=0)
    tiny_test = Split(ds.test.x[:2], ds.test.y[:2])
    result = train_defended(net, local, remote, defenders, ds.train, tiny_test, ds.value_range, cfg)
    if result.status != "ok":
        raise RuntimeError(f"training with defenders {suite} diverged at epoch {result.diverged_epoch}")
    batches = len(ds.train) // cfg.batch_size + (len(ds.train) % cfg.batch_size >= 2)
    return [row["seconds"] / batches for row in result.epochs[1:]]


def flop_floor(ds, partition: str, suite: tuple[str, ...]) -> float:
    """See the module docstring: FLOPs of a defended step over a plain step's."""
    net = build_net("face_cnn", ds.image_shape, ds.num_classes)
    local, remote = split(net, partition)
    h_shape = activation_shape(net, partition)
    plain = 3 * (flops_per_sample(local, ds.image_shape) + flops_per_sample(remote, h_shape))
    f = [flops_per_sample(build_decoder(d, net, partition, ds.value_range), h_shape) for d in suite]
    return (plain + sum(4 * v for v in f) + (statistics.mean(f) if f else 0)) / plain


def main(args: argparse.Namespace) -> None:
    if args.epochs < 2 or args.rounds < 1:
        raise ValueError(f"need --epochs >= 2 (the first is dropped) and --rounds >= 1, got {args.epochs}, {args.rounds}")
    rounds, epochs, limit = (1, 2, 96) if args.quick else (args.rounds, args.epochs, args.limit_train)
    torch.set_num_threads(args.threads)
    dataset, root, options = lfw_like(args.data_root)
    ds = load_dataset(dataset, root, **options)
    if limit is not None:
        ds = dataclasses.replace(ds, train=Split(ds.train.x[:limit], ds.train.y[:limit]))
    suite4 = tuple(args.suite4.split(","))
    if len(suite4) != 4:
        raise ValueError(f"--suite4 must name 4 decoders, got {suite4}")
    configs = {"0 (plain, λ=0)": (), "1 (deconv)": ("deconv",), f"4 ({','.join(suite4)})": suite4}
    print(machine_line())
    print(f"{dataset} {tuple(ds.image_shape)}, {len(ds.train)} train images, face_cnn split at {args.partition}, "
          f"λ={args.lam:g}, {rounds} rounds x {epochs} epochs, {args.threads} threads")

    steps: dict[str, list[float]] = {name: [] for name in configs}
    for r in range(rounds):
        for name, suite in configs.items():
            steps[name] += step_seconds(ds, args.partition, suite, args.lam, epochs)
            print(f"  round {r + 1} {name}: {statistics.median(steps[name]) * 1e3:.0f} ms/step so far", flush=True)

    plain = statistics.median(steps["0 (plain, λ=0)"])
    rows = []
    for name, suite in configs.items():
        s = steps[name]
        spread = (max(s) - min(s)) / statistics.median(s)
        rows.append((name, f"{statistics.median(s) * 1e3:.0f}", f"{spread:.0%}", f"{statistics.median(s) / plain:.2f}x",
                     f"{flop_floor(ds, args.partition, suite):.2f}x"))
    print()
    print_table(("defenders", "ms / step (median)", "spread (max-min)/median", "vs plain", "FLOP floor"), rows)
    print(f"one defender / plain step = {rows[1][3]} (FLOP floor {rows[1][4]}; target <= 1.8x)")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
