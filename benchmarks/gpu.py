"""Models per hour on one GPU: trials packed per GPU, AMP + channels-last, and the projected
wall time of the paper's full LFW experiment (issue 8, target 5). Needs a CUDA GPU.

For each setting -- {AMP bf16 + channels-last off, on} x {1, 2, 4, 8} trials packed on the
one GPU (fractional ``gpus_per_trial``) -- one grid sweep of k models (face CNN split at
pool2, λ = 0.1, one deconv defender: the paper's LFW configuration; seeds 0..k-1, so all
k train at once) runs through ``run_sweep`` on a local Ray cluster started once. Measured:
the sweep's wall time, each model's steady per-epoch seconds (the ``epochs`` table, epoch
1 dropped), and GPU utilisation sampled once a second by ``nvidia-smi`` during the sweep.

Projection to 250 epochs: a sweep's wall = fixed + epochs x epoch time, so
fixed = wall - E x epoch; models/hour(250) = 3600 k / (fixed + 250 x epoch x s), where s
scales the measured epoch to the paper's 1,896 LFW training images (2,370 x 0.8; s = 1 on
real LFW, ~12 on the embedded 160 crops: epoch time taken as proportional to images).
The full experiment (3 partitions x λ {0, 0.1} x 5 seeds = 30 models, 3 attackers each,
50 attacker epochs) is projected from the best setting's models/hour plus the measured
attacker seconds per epoch scaled the same way, with no overlap of attacks and training
(an upper bound). The card's name is printed with every figure.
Targets: 4 packed >= 2x the models/hour of 1; full experiment <= 30 min on one H100.

    python benchmarks/gpu.py                      # ~6 min; --quick packs 1 and 4 only
    python benchmarks/gpu.py --data-root ../shared/data/lfw
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import enter_repo_root, lfw_like, machine_line, print_table

from pp_cluster.config import Resources
from pp_cluster.profiles import LFW_GRID

PAPER_TRAIN_IMAGES = round(2370 * 0.8)  # 34 people with >= 30 images, 20% held out
PAPER_MODELS = 3 * 2 * 5  # partitions x λ x seeds (Section V-C, 5 runs averaged)
PAPER_EPOCHS, PAPER_ATTACK_EPOCHS, PAPER_ATTACKERS = 250, 50, 3
POOL_GPUS = 0.05  # the attacker actor's share of the GPU


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="pack 1 and 4 only, AMP off and on")
    p.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="real LFW folder; default: scikit-image's LFW crops at 64x64 RGB",
    )
    p.add_argument("--packs", default="1,2,4,8", help="trials per GPU (ignored with --quick)")
    p.add_argument("--epochs", type=int, default=6, help="epochs per model; the first is dropped")
    return p


class Utilisation:
    """``nvidia-smi -l 1`` in the background; ``stop()`` returns the mean utilisation in %."""

    def __init__(self) -> None:
        self._proc = None
        if shutil.which("nvidia-smi"):
            self._proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-l", "1"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )

    def stop(self) -> float | None:
        if self._proc is None:
            return None
        self._proc.terminate()
        out, _ = self._proc.communicate(timeout=10)
        samples = [float(v) for v in out.split() if v.replace(".", "", 1).isdigit()]
        return sum(samples) / len(samples) if samples else None


def packed_gpus(k: int) -> float:
    """The largest per-trial share (3 decimals) that lets k trials and the pool fit one GPU (a
    one-worker trial trains in its own process and holds just that share)."""
    return math.floor((1.0 - POOL_GPUS) / k * 1000) / 1000


def main(args: argparse.Namespace) -> None:
    if not torch.cuda.is_available():
        raise SystemExit(
            "gpu.py measures GPU throughput and needs a CUDA GPU; torch sees none here "
            "(torch.cuda.is_available() is False). Run it on a GPU machine."
        )
    if args.epochs < 2:
        raise ValueError(f"--epochs must be >= 2 (the first is dropped), got {args.epochs}")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    enter_repo_root()
    import ray

    from pp_cluster.farm.sweep import run_sweep
    from pp_cluster.results.store import ResultStore

    packs = [1, 4] if args.quick else [int(v) for v in args.packs.split(",")]
    card = torch.cuda.get_device_name(0)
    dataset, root, options = lfw_like(args.data_root)
    print(machine_line())
    print(
        f"GPU: {card}; {dataset} {options}; face_cnn split at pool2, λ=0.1, deconv defender, "
        f"{args.epochs} epochs per model; packs {packs}",
        flush=True,
    )

    ray.init(
        address="local",
        num_gpus=1,
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    rows, results = [], {}
    try:
        with tempfile.TemporaryDirectory(prefix="pp_gpu_") as tmp:
            for fast in (False, True):
                for k in packs:
                    spec = LFW_GRID.with_(
                        name=f"gpu-k{k}-fast{int(fast)}",
                        dataset=dataset,
                        data_root=root,
                        dataset_options=options,
                        partitions=("pool2",),
                        lams=(0.1,),
                        seeds=tuple(range(k)),
                        epochs=args.epochs,
                        attackers=("deconv",),
                        attack_epochs=2,
                        results=os.path.join(tmp, "results"),
                        train_overrides={"amp": fast, "channels_last": fast},
                        resources=Resources(
                            use_gpu=True,
                            gpus_per_trial=packed_gpus(k),
                            cpus_per_worker=1.0,
                            pool_size=1,
                            attacker_cpus=1.0,
                            attacker_gpus=POOL_GPUS,
                            max_failures=0,
                        ),
                    )
                    util = Utilisation()
                    t0 = time.perf_counter()
                    outcome = run_sweep(spec, verbose=False)
                    wall = time.perf_counter() - t0
                    busy = util.stop()
                    if outcome.n_errored:
                        raise RuntimeError(
                            f"{outcome.n_errored} of {k} trials errored (pack {k}, fast {fast})"
                        )
                    store = ResultStore(spec.results_uri())
                    epochs = store.read("epochs", spec.name)
                    attacks = store.read("attacks", spec.name)
                    epoch_s = float(epochs[epochs["epoch"] > 1]["seconds"].median())
                    attack_epoch_s = float(attacks["train_seconds"].median()) / spec.attack_epochs
                    results[(fast, k)] = (wall, epoch_s, attack_epoch_s)
                    print(
                        f"  pack {k}, AMP+channels-last {'on' if fast else 'off'}: wall {wall:.1f} s, "
                        f"epoch {epoch_s:.2f} s, GPU busy {busy if busy is None else round(busy)} %",
                        flush=True,
                    )
                    rows.append(
                        [
                            k,
                            packed_gpus(k),
                            "on" if fast else "off",
                            f"{wall:.1f}",
                            f"{epoch_s:.3f}",
                            "n/a" if busy is None else f"{busy:.0f}",
                        ]
                    )
    finally:
        ray.shutdown()

    from pp_cluster.data import load_dataset

    ds = load_dataset(dataset, root, **options)
    scale = PAPER_TRAIN_IMAGES / len(ds.train)
    mph = {}
    for (fast, k), (wall, epoch_s, _) in results.items():
        fixed = max(0.0, wall - args.epochs * epoch_s)
        mph[(fast, k)] = 3600 * k / (fixed + PAPER_EPOCHS * epoch_s * scale)
    for r, key in zip(rows, results):
        r.append(f"{mph[key]:.1f}")
    print()
    print(f"GPU: {card}; epoch scaled x{scale:.1f} to {PAPER_TRAIN_IMAGES} training images")
    print_table(
        (
            "trials / GPU",
            "GPU share",
            "AMP+CL",
            "sweep wall s",
            "epoch s",
            "GPU util %",
            "models / hour (250 ep)",
        ),
        rows,
    )
    best = max(mph, key=mph.get)
    train_h = PAPER_MODELS / mph[best]
    attack_h = (PAPER_MODELS * PAPER_ATTACKERS * PAPER_ATTACK_EPOCHS * results[best][2] * scale) / 3600
    for fast in (False, True):
        if (fast, 1) in mph and (fast, 4) in mph:
            print(
                f"GPU {card}: 4 packed / 1 per GPU (AMP+CL {'on' if fast else 'off'}) = "
                f"{mph[(fast, 4)] / mph[(fast, 1)]:.2f}x models/hour (target >= 2x)"
            )
    print(
        f"GPU {card}: projected full paper LFW experiment ({PAPER_MODELS} models x {PAPER_EPOCHS} epochs + "
        f"{PAPER_MODELS * PAPER_ATTACKERS} attackers x {PAPER_ATTACK_EPOCHS} epochs) at pack {best[1]}, "
        f"AMP+CL {'on' if best[0] else 'off'}: {(train_h + attack_h) * 60:.0f} min "
        f"(training {train_h * 60:.0f} + attacks {attack_h * 60:.0f}; target <= 30 min on one H100)"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main(get_args_parser().parse_args())
