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
With ``TrainConfig.update="simultaneous"`` (rows marked so) each defender runs one forward
and one backward per step, which give both its own gradient and the λ-gradient at h:
[3 (L + R) + sum_k 3 F_k] / 3 (L + R). Target: one defender <= 1.8x a plain step.

``--compare-old-ssim`` adds a row for one defender trained against the torchmetrics SSIM
that ``metrics.ssim_per_sample`` used before 2026-11-26 (patched in for that run only), and
a micro-benchmark of one SSIM forward + backward (batch 32) old vs new. ``--dataset mnist``
times the MNIST MLP split at fc2 with the mnist_a1 defender (MNIST recipe: Adam, batch 32),
where the 28x28 SSIM is a large share of a step.

    python benchmarks/defense_cost.py --quick --compare-old-ssim
    python benchmarks/defense_cost.py --quick --compare-old-ssim --dataset mnist
    python benchmarks/defense_cost.py --rounds 3 --epochs 5 --partition pool3
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _common import SHARED_DATA, lfw_like, machine_line, print_table

from pp_cluster.data import load_dataset
from pp_cluster.data.base import Split
from pp_cluster.nets import activation_shape, build_decoder, build_net, flops_per_sample, split
from pp_cluster.privacy import metrics, recipe, train_defended

# Per data set: arch, default partition, the one defender, the default 4-defender suite,
# and the --quick training subset (sized so an epoch is a few seconds to a minute).
PROFILES = {
    "lfw-like": dict(
        arch="face_cnn",
        partition="pool2",
        defender="deconv",
        suite4="deconv,resdec,deconv,resdec",
        quick_limit=96,
    ),
    "mnist": dict(
        arch="mnist_mlp",
        partition="fc2",
        defender="mnist_a1",
        suite4="mnist_a1,mnist_a2,mnist_a3,mnist_a4",
        quick_limit=2048,
    ),
}


def torchmetrics_ssim_per_sample(x, x_rec, value_range):
    """``metrics.ssim_per_sample`` as it was until 2026-11-26: torchmetrics' uniform 7x7
    SSIM with K2 scaled for skimage's sample covariance and skimage's border crop."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    metrics._check_pair(x, x_rec)
    a, b = metrics.to_unit(x_rec.float(), value_range), metrics.to_unit(x.float(), value_range)
    _, full = structural_similarity_index_measure(
        a,
        b,
        gaussian_kernel=False,
        kernel_size=7,
        data_range=1.0,
        k1=0.01,
        k2=0.03 * np.sqrt(48 / 49),
        return_full_image=True,
    )
    return full[..., 3:-3, 3:-3].mean(dim=(1, 2, 3))


@contextlib.contextmanager
def old_ssim(on: bool):
    """Route the training distance through the old SSIM (``distance_per_sample`` looks
    ``ssim_per_sample`` up in the module at call time)."""
    saved = metrics.ssim_per_sample
    if on:
        metrics.ssim_per_sample = torchmetrics_ssim_per_sample
    try:
        yield
    finally:
        metrics.ssim_per_sample = saved


def ssim_call_ms(ds, repeats: int = 15) -> dict[str, tuple[float, float]]:
    """Fastest of ``repeats`` interleaved SSIM forward + backward calls on a batch of 32
    training images against noisy copies, per implementation: (wall ms, process CPU ms)."""
    x = ds.train.x[:32].float()
    gen = torch.Generator().manual_seed(0)
    lo, hi = ds.value_range
    r = (x + 0.1 * (hi - lo) * torch.randn(x.shape, generator=gen)).clamp(lo, hi)
    impls = {"new": metrics.ssim_per_sample, "old (torchmetrics)": torchmetrics_ssim_per_sample}
    best = {name: [float("inf"), float("inf")] for name in impls}
    for _ in range(repeats):
        for name, fn in impls.items():
            rr = r.clone().requires_grad_(True)
            t0, c0 = time.perf_counter(), time.process_time()
            fn(x, rr, ds.value_range).mean().backward()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            best[name] = [min(best[name][0], wall), min(best[name][1], cpu)]
    return {name: (v[0] * 1e3, v[1] * 1e3) for name, v in best.items()}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="1 round of 2 epochs on 96 (LFW-like) or 2048 (MNIST) training images (minutes on 2 cores)",
    )
    p.add_argument(
        "--dataset",
        choices=tuple(PROFILES),
        default="lfw-like",
        help="lfw-like: face_cnn on LFW-like 64x64 RGB; mnist: the MNIST MLP on real MNIST",
    )
    p.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="real LFW folder (default: scikit-image's LFW crops at 64x64 RGB), or the MNIST "
        "folder (default: $PP_SHARED_DATA/mnist)",
    )
    p.add_argument(
        "--partition", default=None, help="split point (default: the paper's: face_cnn pool2, mnist_mlp fc2)"
    )
    p.add_argument("--defender", default=None, help="the one defender (default: deconv / mnist_a1)")
    p.add_argument(
        "--suite4",
        default=None,
        help="the 4-defender suite (default deconv,resdec,deconv,resdec; the dense decoders have "
        "~1e8 weights at pool1-pool3)",
    )
    p.add_argument(
        "--compare-old-ssim",
        action="store_true",
        help="also time one defender against the torchmetrics SSIM used before 2026-11-26",
    )
    p.add_argument("--lam", type=float, default=0.1, help="λ of the defended runs (LFW recipe: 0.1)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=5, help="epochs per run; the first is dropped")
    p.add_argument("--limit-train", type=int, default=None, help="first N training images (--quick: 96)")
    p.add_argument("--threads", type=int, default=2)
    return p


def step_seconds(
    ds,
    arch: str,
    partition: str,
    suite: tuple[str, ...],
    lam: float,
    epochs: int,
    old: bool = False,
    update: str = "alternating",
) -> tuple[list[float], list[float]]:
    """Per-step seconds of epochs 2..``epochs`` of one fresh, seeded ``train_defended`` run
    (``old``: against the torchmetrics SSIM): (wall, process CPU). Wall is the epoch rows'
    ``seconds``; CPU is ``time.process_time`` between ``on_epoch`` calls. On a loaded machine
    CPU time is the steadier of the two with ``--threads 1`` (with 2 threads it also counts
    OpenMP's spin-waiting, which grows with the load)."""
    torch.manual_seed(0)
    net = build_net(arch, ds.image_shape, ds.num_classes)
    local, remote = split(net, partition)
    defenders = [build_decoder(d, net, partition, ds.value_range) for d in suite]
    cfg = recipe(ds.name, lam=lam if suite else 0.0, epochs=epochs, batch_size=32, seed=0, update=update)
    tiny_test = Split(ds.test.x[:2], ds.test.y[:2])
    marks = [time.process_time()]
    with old_ssim(old):
        result = train_defended(
            net,
            local,
            remote,
            defenders,
            ds.train,
            tiny_test,
            ds.value_range,
            cfg,
            on_epoch=lambda row, state: marks.append(time.process_time()),
        )
    if result.status != "ok":
        raise RuntimeError(f"training with defenders {suite} diverged at epoch {result.diverged_epoch}")
    batches = len(ds.train) // cfg.batch_size + (len(ds.train) % cfg.batch_size >= 2)
    cpu = [(b - a) / batches for a, b in zip(marks[1:-1], marks[2:])]
    return [row["seconds"] / batches for row in result.epochs[1:]], cpu


def flop_floor(ds, arch: str, partition: str, suite: tuple[str, ...], update: str = "alternating") -> float:
    """See the module docstring: FLOPs of a defended step over a plain step's."""
    net = build_net(arch, ds.image_shape, ds.num_classes)
    local, remote = split(net, partition)
    h_shape = activation_shape(net, partition)
    plain = 3 * (flops_per_sample(local, ds.image_shape) + flops_per_sample(remote, h_shape))
    f = [flops_per_sample(build_decoder(d, net, partition, ds.value_range), h_shape) for d in suite]
    if update == "simultaneous":
        return (plain + sum(3 * v for v in f)) / plain
    return (plain + sum(4 * v for v in f) + (statistics.mean(f) if f else 0)) / plain


def main(args: argparse.Namespace) -> None:
    if args.epochs < 2 or args.rounds < 1:
        raise ValueError(
            f"need --epochs >= 2 (the first is dropped) and --rounds >= 1, got {args.epochs}, {args.rounds}"
        )
    prof = PROFILES[args.dataset]
    partition = args.partition or prof["partition"]
    defender = args.defender or prof["defender"]
    suite4 = tuple((args.suite4 or prof["suite4"]).split(","))
    if len(suite4) != 4:
        raise ValueError(f"--suite4 must name 4 decoders, got {suite4}")
    rounds, epochs, limit = (
        (1, 2, prof["quick_limit"]) if args.quick else (args.rounds, args.epochs, args.limit_train)
    )
    torch.set_num_threads(args.threads)
    if args.dataset == "mnist":
        dataset, root, options = "mnist", args.data_root or SHARED_DATA / "mnist", {}
    else:
        dataset, root, options = lfw_like(args.data_root)
    ds = load_dataset(dataset, root, **options)
    if limit is not None:
        ds = dataclasses.replace(ds, train=Split(ds.train.x[:limit], ds.train.y[:limit]))
    one = f"1 ({defender})"
    four = f"4 ({','.join(suite4)})"
    configs = {
        "0 (plain, λ=0)": ((), False, "alternating"),
        one: ((defender,), False, "alternating"),
        f"{one}, simultaneous": ((defender,), False, "simultaneous"),
        four: (suite4, False, "alternating"),
        f"{four}, simultaneous": (suite4, False, "simultaneous"),
    }
    if args.compare_old_ssim:
        configs[f"{one}, old torchmetrics SSIM"] = ((defender,), True, "alternating")
    print(machine_line())
    print(
        f"{dataset} {tuple(ds.image_shape)}, {len(ds.train)} train images, {prof['arch']} split at {partition}, "
        f"λ={args.lam:g}, {rounds} rounds x {epochs} epochs, {args.threads} threads"
    )
    if args.compare_old_ssim:
        ms = ssim_call_ms(ds)
        new_ms, old_ms = ms["new"], ms["old (torchmetrics)"]
        print(
            f"SSIM forward + backward, batch 32, fastest of 15 interleaved calls: new {new_ms[0]:.1f} ms wall / "
            f"{new_ms[1]:.1f} ms CPU, old (torchmetrics) {old_ms[0]:.1f} ms wall / {old_ms[1]:.1f} ms CPU; "
            f"old / new = {old_ms[0] / new_ms[0]:.2f}x wall, {old_ms[1] / new_ms[1]:.2f}x CPU",
            flush=True,
        )

    wall: dict[str, list[float]] = {name: [] for name in configs}
    cpu: dict[str, list[float]] = {name: [] for name in configs}
    for r in range(rounds):
        for name, (suite, old, update) in configs.items():
            w, c = step_seconds(ds, prof["arch"], partition, suite, args.lam, epochs, old, update)
            wall[name] += w
            cpu[name] += c
            print(
                f"  round {r + 1} {name}: {statistics.median(wall[name]) * 1e3:.0f} ms/step wall, "
                f"{statistics.median(cpu[name]) * 1e3:.0f} ms/step CPU so far",
                flush=True,
            )

    med = {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in configs}
    plain = med["0 (plain, λ=0)"]
    rows = []
    for name, (suite, _, update) in configs.items():
        w, c = med[name]
        spread = (max(wall[name]) - min(wall[name])) / w
        rows.append(
            (
                name,
                f"{w * 1e3:.1f}",
                f"{spread:.0%}",
                f"{w / plain[0]:.2f}x",
                f"{c * 1e3:.1f}",
                f"{c / plain[1]:.2f}x",
                f"{flop_floor(ds, prof['arch'], partition, suite, update):.2f}x",
            )
        )
    print()
    print_table(
        (
            "defenders",
            "wall ms / step (median)",
            "wall spread (max-min)/median",
            "vs plain (wall)",
            "CPU ms / step (median)",
            "vs plain (CPU)",
            "FLOP floor",
        ),
        rows,
    )
    print(
        f"one defender / plain step = {rows[1][3]} wall, {rows[1][5]} CPU (FLOP floor {rows[1][6]}; "
        "target <= 1.8x): Algorithm 1 as the paper states it (alternating)"
    )
    print(
        f"one defender / plain step = {rows[2][3]} wall, {rows[2][5]} CPU (FLOP floor {rows[2][6]}; "
        "target <= 1.8x): update='simultaneous'"
    )
    if args.compare_old_ssim:
        print(f"one defender, old SSIM / plain step = {rows[5][3]} wall, {rows[5][5]} CPU")
    print(machine_line())


if __name__ == "__main__":
    main(get_args_parser().parse_args())
