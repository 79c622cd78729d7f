"""fp32 NCHW vs bf16 autocast + channels-last on this CPU: step times, accuracy and leakage (issue 13).

Part 1, step times (always): the face CNN (default widths, real 64×64 LFW or the embedded
crops at 64×64), batch 32; per configuration the fastest step of ``--steps`` after warm-up, in
one process, the two precisions interleaved so load drift hits both: a plain training step
(Algorithm 1 with λ = 0), a defended step (one ``deconv`` defender, alternating update) and
one attacker step (``deconv`` and ``fc`` at the partition, on cached activations).

Part 2, ``--accuracy`` (real LFW, tens of minutes): the CPU profile's undefended model (fast
recipe, its epochs and dropout) trained per seed in both precisions, each then attacked by
``deconv`` and ``resdec`` at the partition, both in the same precision as its model; printed:
test accuracy and the attackers' SSIM per precision (mean ± 95 % t-interval over seeds) and the
paired bf16 − fp32 differences with their intervals. bf16 is only the CPU default if these
agree (the interval of the difference contains 0, or the difference is below the seeds' spread).

    python benchmarks/precision.py                       # step ratios, minutes
    python benchmarks/precision.py --accuracy --seeds 0,1,2
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

from pp_cluster import pipeline, precision  # noqa: E402
from pp_cluster.data.base import Split  # noqa: E402
from pp_cluster.nets import build_decoder, build_net, split  # noqa: E402
from pp_cluster.privacy import AttackConfig, compute_activations, evaluate_attack, recipe, train_attacker  # noqa: E402
from pp_cluster.privacy.defense import train_defended  # noqa: E402
from pp_cluster.profiles import LFW_GRID_CPU  # noqa: E402

# Part 1's configurations: (bf16 autocast, channels-last). fp32 + channels-last separates the
# memory layout's share from bf16's (on a CPU without bf16 units only the layout can help).
STEP_MODES = {
    "fp32 NCHW": (False, False),
    "fp32 + channels-last": (False, True),
    "bf16 + channels-last": (True, True),
}
# Part 2 compares the two defaults a CPU can get.
MODES = {"fp32 NCHW": False, "bf16 + channels-last": True}


def mean_ci(v) -> tuple[float, float]:
    from scipy.stats import t

    v = np.asarray(v, float)
    half = t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return float(v.mean()), float(half)


def fmt(v) -> str:
    m, h = mean_ci(v)
    return f"{m:.3f} ± {h:.3f}" if np.isfinite(h) else f"{m:.3f}"


def train_step_ms(ds, partition: str, defended: bool, mode: tuple[bool, bool], steps: int) -> float:
    """Fastest step (ms) of a short train_defended run on ``steps`` batches, after one warm-up epoch."""
    torch.manual_seed(0)
    net = build_net("face_cnn", ds.image_shape, ds.num_classes)
    local, remote = split(net, partition)
    defenders = [build_decoder("deconv", net, partition, ds.value_range)] if defended else []
    cfg = recipe(
        ds.name,
        "fast",
        lam=1.0 if defended else 0.0,
        epochs=steps + 1,
        batch_size=32,
        seed=0,
        amp=mode[0],
        channels_last=mode[1],
        augment="none",
    )
    one_batch = Split(ds.train.x[:32], ds.train.y[:32])  # an epoch = one step: rows time single steps
    tiny_test = Split(ds.test.x[:2], ds.test.y[:2])
    result = train_defended(net, local, remote, defenders, one_batch, tiny_test, ds.value_range, cfg)
    return min(r["seconds"] for r in result.epochs[1:]) * 1e3


def attack_step_ms(ds, partition: str, attacker: str, mode: tuple[bool, bool], steps: int) -> float:
    torch.manual_seed(0)
    net = build_net("face_cnn", ds.image_shape, ds.num_classes).eval()
    local, _ = split(net, partition)
    x = ds.train.x[:64]
    h = compute_activations(local, x)
    dec = build_decoder(attacker, net, partition, ds.value_range)
    times = []
    for _ in range(steps + 1):  # one epoch of one 64-image batch (val split held out)
        cfg = AttackConfig(epochs=1, batch_size=64, val_fraction=0.01, amp=mode[0], channels_last=mode[1])
        t0 = time.perf_counter()
        train_attacker(dec, h, x, ds.value_range, cfg)
        times.append(time.perf_counter() - t0)
    return min(times[1:]) * 1e3


def step_ratios(ds, partition: str, steps: int) -> None:
    rows = []
    cases = [
        ("plain step", lambda f: train_step_ms(ds, partition, False, f, steps)),
        ("defended step (1 deconv)", lambda f: train_step_ms(ds, partition, True, f, steps)),
        ("attacker step: deconv", lambda f: attack_step_ms(ds, partition, "deconv", f, steps)),
        ("attacker step: fc", lambda f: attack_step_ms(ds, partition, "fc", f, steps)),
    ]
    for name, fn in cases:
        ms = {mode: [] for mode in STEP_MODES}
        for _ in range(2):  # interleaved rounds
            for mode, flags in STEP_MODES.items():
                ms[mode].append(fn(flags))
        fp32, cl, bf16 = (min(ms[m]) for m in STEP_MODES)
        rows.append(
            [name, f"{fp32:.0f}", f"{cl:.0f}", f"{bf16:.0f}", f"{fp32 / cl:.2f}x", f"{fp32 / bf16:.2f}x"]
        )
        print(
            f"  {name}: fp32 {fp32:.0f} ms, fp32 + channels-last {cl:.0f} ms, bf16 {bf16:.0f} ms", flush=True
        )
    print(
        f"\nface CNN at {partition}, batch 32 (attackers 64), {torch.get_num_threads()} threads, fastest of "
        f"{steps} steps × 2 rounds; CPU bf16 matrix units: {precision.cpu_has_bf16_matmul()}"
    )
    print_table(
        [
            "step",
            "fp32 NCHW ms",
            "fp32 + channels-last ms",
            "bf16 + channels-last ms",
            "fp32 / fp32-CL",
            "fp32 / bf16",
        ],
        rows,
    )


def accuracy_both_ways(root: Path, partition: str, seeds: list[int]) -> None:
    prof = LFW_GRID_CPU
    out = {mode: {"acc": [], "deconv": [], "resdec": []} for mode in MODES}
    ds = None
    for seed in seeds:
        for mode, fast in MODES.items():
            spec = prof.with_(
                data_root=str(root),
                dataset_options={"min_faces": 30, "size": 64},
                train_overrides={"amp": fast, "channels_last": fast},
            ).model_spec(None, 0.0, seed)
            ds = ds or pipeline.load_data(spec)
            t0 = time.perf_counter()
            model, result = pipeline.train_model(spec, ds, "cpu")
            out[mode]["acc"].append(result.test_acc)
            local, _ = split(model.net, partition)
            h_train, h_test = compute_activations(local, ds.train.x), compute_activations(local, ds.test.x)
            for name in ("deconv", "resdec"):
                torch.manual_seed(seed)
                dec = build_decoder(name, model.net, partition, ds.value_range)
                cfg = AttackConfig(epochs=prof.attack_epochs, seed=seed, amp=fast, channels_last=fast)
                dec, _ = train_attacker(dec, h_train, ds.train.x, ds.value_range, cfg)
                res = evaluate_attack(dec, h_test, ds.test.x, ds.value_range, with_dpd=False, amp=fast)
                out[mode][name].append(res.metrics["ssim"])
            print(
                f"  seed {seed} {mode}: acc {result.test_acc:.3f}, SSIM deconv {out[mode]['deconv'][-1]:.3f} "
                f"resdec {out[mode]['resdec'][-1]:.3f} [{time.perf_counter() - t0:.0f} s]",
                flush=True,
            )
    rows = []
    for metric in ("acc", "deconv", "resdec"):
        a, b = out["fp32 NCHW"][metric], out["bf16 + channels-last"][metric]
        rows.append(
            [
                {"acc": "test accuracy"}.get(metric, f"{metric} attacker SSIM at {partition}"),
                fmt(a),
                fmt(b),
                fmt(np.subtract(b, a)),
            ]
        )
    print(
        f"\nreal LFW, CPU profile's undefended model ({prof.recipe} recipe, {prof.epochs} epochs), seeds {seeds}; "
        "mean ± 95 % t-interval over seeds"
    )
    print_table(["metric", "fp32 NCHW", "bf16 + channels-last", "paired bf16 − fp32"], rows)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, default=SHARED_DATA / "lfw" / "lfw-deepfunneled")
    p.add_argument("--partition", default="pool2")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--accuracy", action="store_true", help="also part 2 (real LFW, tens of minutes)")
    p.add_argument("--seeds", default="0,1,2")
    return p


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    print(machine_line(), flush=True)
    if args.data_root.is_dir():
        ds = pipeline.load_dataset("lfw", args.data_root, min_faces=30, size=64)
    else:
        print(f"(no {args.data_root}: the embedded LFW crops at 64×64 RGB for the step times)")
        ds = pipeline.load_dataset("lfw-subset", None, size=64, color=True)
    step_ratios(ds, args.partition, args.steps)
    if args.accuracy:
        accuracy_both_ways(args.data_root, args.partition, [int(s) for s in args.seeds.split(",")])
    print(machine_line())


if __name__ == "__main__":
    main(get_args_parser().parse_args())
