"""Fused vs unfused Adam in training (privacy.defense.build_optimizer), paired in one process.

build_optimizer uses torch's fused Adam/AdamW on CPU and CUDA: one pass over the weights per
step instead of one per elementwise op; the same update rule. This prints the fastest training
step of each (plain and with one defender) on the MNIST MLP (fast recipe, batch 128) and the face
CNN (fast recipe, batch 32), the two interleaved so that load drift hits both, and the test
accuracy each reaches, which should agree.

    python benchmarks/optimizer_fused.py                        # ../shared/data/mnist, embedded faces
    python benchmarks/optimizer_fused.py --threads 2 --rounds 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import LFW_SUBSET_64, SHARED_DATA, machine_line, print_table  # noqa: E402

import pp_cluster.privacy.defense as defense  # noqa: E402
from pp_cluster.data import load_dataset  # noqa: E402
from pp_cluster.data.base import Split  # noqa: E402
from pp_cluster.nets import build_decoder, build_net, split  # noqa: E402
from pp_cluster.privacy import recipe, train_defended  # noqa: E402

CASES = {  # name: (dataset, arch, partition, defender, batch)
    "MNIST MLP": ("mnist", "mnist_mlp", "fc2", "mnist_a1", 128),
    "face CNN": ("lfw-subset", "face_cnn", "pool2", "deconv", 32),
}


def step_ms(ds, arch, partition, defender, batch, lam, fused, steps) -> tuple[float, float]:
    """(fastest step in ms over ``steps`` batches after a warm-up epoch, test accuracy)."""
    defense.FUSED_ADAM_DEVICES = ("cpu", "cuda") if fused else ()
    torch.manual_seed(0)
    net = build_net(arch, ds.image_shape, ds.num_classes)
    local, remote = split(net, partition)
    defenders = [build_decoder(defender, net, partition, ds.value_range)] if lam else []
    cfg = recipe(ds.name, "fast", lam=lam, epochs=2, batch_size=batch, seed=0, augment="none")
    train = Split(ds.train.x[: batch * steps], ds.train.y[: batch * steps])
    result = train_defended(net, local, remote, defenders, train, ds.test, ds.value_range, cfg)
    return min(e["seconds"] for e in result.epochs) / steps * 1e3, result.test_acc


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    print(machine_line())
    rows = []
    for name, (dataset, arch, partition, defender, batch) in CASES.items():
        if dataset == "mnist":
            ds = load_dataset("mnist", args.mnist_root, limit_train=batch * args.steps)
        else:
            ds = load_dataset(dataset, None, **LFW_SUBSET_64)
        for lam in (0.0, 1.0):
            best = {True: (float("inf"), 0.0), False: (float("inf"), 0.0)}
            for _ in range(args.rounds):
                for fused in (True, False):
                    ms, acc = step_ms(ds, arch, partition, defender, batch, lam, fused, args.steps)
                    best[fused] = (min(best[fused][0], ms), acc)
            label = f"{name}, {'1 defender (' + defender + ')' if lam else 'plain'}"
            (f_ms, f_acc), (u_ms, u_acc) = best[True], best[False]
            rows.append(
                [label, f"{u_ms:.1f}", f"{f_ms:.1f}", f"{u_ms / f_ms:.2f}x", f"{u_acc:.3f} / {f_acc:.3f}"]
            )
    defense.FUSED_ADAM_DEVICES = ("cpu", "cuda")
    print(
        f"\nfastest training step of {args.steps} per epoch, {args.rounds} rounds, {args.threads} thread(s)"
    )
    print_table(
        ["step", "unfused Adam ms", "fused Adam ms", "unfused / fused", "test acc unfused / fused"], rows
    )


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mnist-root", type=Path, default=SHARED_DATA / "mnist")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    return p


if __name__ == "__main__":
    main(get_args_parser().parse_args())
