"""Why the paper's MNIST λ (0–500) and ours (0–3) differ: the distance's gradient, measured.

λ only matters through the ratio of the two gradients on the local layers θ_l in Algorithm 1,
‖λ·∇θ_l d‖ / ‖∇θ_l CE‖ (Adam removes the overall scale, not this ratio). This script trains the
MNIST MLP (fast recipe, split at fc2) and a ``mnist_a1`` defender on its activations, then
measures on training batches of 32 (the paper's batch size) the gradient norms on θ_l of the
task loss and of several readings of the paper's distance:

* ours: d = 1 − SSIM (scikit-image's, data_range 1 on [0, 1] images), mean over the batch;
* the same SSIM with the constants of data_range 255 (C = (K·255)²) on [0, 1] images — the
  default of the widely used ``pytorch_msssim.ssim`` and what an SSIM loss computes when the
  range is not passed;
* Eq. 4 read as a sum over the batch (λ·Σᵢ d, no 1/m);
* MSE, mean over the batch.

It prints each variant's gradient norm relative to ours: a paper λ on that reading pulls θ_l as
hard as our λ = paper λ × that factor. Not a test: a table, measured in one process.

    python benchmarks/mnist_lambda_scale.py                    # ../shared/data/mnist
    python benchmarks/mnist_lambda_scale.py --limit-train 60000 --epochs 10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, machine_line, print_table  # noqa: E402

from pp_cluster.data import load_dataset  # noqa: E402
from pp_cluster.nets import build_decoder, build_net, split  # noqa: E402
from pp_cluster.privacy import AttackConfig, compute_activations, recipe, train_attacker, train_defended  # noqa: E402
from pp_cluster.privacy.metrics import ssim_per_sample, to_unit  # noqa: E402

PARTITION = "fc2"


def variants(value_range):
    """name -> (x, rec) -> scalar distance of a batch, differentiable in rec."""

    def ssim_at(data_range: float):
        return lambda x, rec: (1 - ssim_per_sample(x, rec, value_range, data_range=data_range)).mean()

    def mse(x, rec):
        return (to_unit(rec, value_range) - to_unit(x, value_range)).pow(2).mean()

    ours = ssim_at(1.0)
    return {
        "ours: 1 − SSIM (data_range 1), batch mean": ours,
        "1 − SSIM at data_range 255 on [0, 1] images, batch mean": ssim_at(255.0),
        "1 − SSIM (data_range 1), batch sum (Eq. 4 without 1/m)": lambda x, rec: ours(x, rec) * len(x),
        "MSE, batch mean": mse,
    }


def grad_norm(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> float:
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return float(torch.sqrt(sum((g.detach() ** 2).sum() for g in grads if g is not None)))


def measure(
    net, local, defender, x, y, value_range, batches: int, batch: int, seed: int
) -> dict[str, list[float]]:
    params = [p for p in local.parameters() if p.requires_grad]
    fns = variants(value_range)
    out: dict[str, list[float]] = {"task loss (CE)": [], **{k: [] for k in fns}}
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x), generator=gen)[: batches * batch].view(batches, batch)
    net.eval(), defender.eval()
    for b in idx:
        xb, yb = x[b], y[b]
        out["task loss (CE)"].append(grad_norm(F.cross_entropy(net(xb), yb), params))
        for name, fn in fns.items():
            out[name].append(grad_norm(fn(xb, defender(local(xb))), params))
    return out


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    print(machine_line())
    ds = load_dataset("mnist", args.data_root, limit_train=args.limit_train)
    torch.manual_seed(args.seed)
    net = build_net("mnist_mlp", ds.image_shape, ds.num_classes)
    local, remote = split(net, PARTITION)
    stages = {}
    # at initialisation, with a defender trained on the untrained net's activations
    for stage, epochs in (("initialisation", 0), (f"after {args.epochs} undefended epochs", args.epochs)):
        if epochs:
            cfg = recipe("mnist", "fast", epochs=epochs, seed=args.seed)
            result = train_defended(net, local, remote, [], ds.train, ds.test, ds.value_range, cfg)
            stage += f" (test acc {result.test_acc:.4f})"
        torch.manual_seed(args.seed)
        defender = build_decoder("mnist_a1", net, PARTITION, ds.value_range)
        h = compute_activations(local, ds.train.x)
        defender, _ = train_attacker(
            defender, h, ds.train.x, ds.value_range, AttackConfig(epochs=args.defender_epochs, seed=args.seed)
        )
        for p in defender.parameters():
            p.requires_grad_(False)
        stages[stage] = measure(
            net, local, defender, ds.train.x, ds.train.y, ds.value_range, args.batches, 32, args.seed
        )

    for stage, norms in stages.items():
        ours = np.asarray(norms["ours: 1 − SSIM (data_range 1), batch mean"])
        ce = np.asarray(norms["task loss (CE)"])
        rows = []
        for name, v in norms.items():
            v = np.asarray(v)
            rel = v / ours  # per batch, then the median: robust to a batch where a norm is ~0
            rows.append([name, f"{np.median(v):.3g}", f"{np.median(v / ce):.3g}", f"{np.median(rel):.3g}"])
        print(
            f"\nMNIST MLP at {PARTITION}, {len(ds.train)} training images, {stage}; "
            f"gradient norms on θ_l, median over {args.batches} batches of 32"
        )
        print_table(
            [
                "term",
                "‖∇θ_l‖",
                "÷ ‖∇θ_l CE‖",
                "÷ ours (a paper λ on this reading acts as our λ = paper λ × this)",
            ],
            rows,
        )
        print(
            "λ at which the distance's gradient equals the task's (median ‖∇CE‖ / ‖∇d‖), ours: "
            f"{np.median(ce / ours):.3g}"
        )


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data-root", type=Path, default=SHARED_DATA / "mnist", help="folder with the MNIST idx files"
    )
    p.add_argument("--limit-train", type=int, default=20000, help="stratified training subset (time)")
    p.add_argument("--epochs", type=int, default=3, help="undefended training before the second measurement")
    p.add_argument("--defender-epochs", type=int, default=3)
    p.add_argument("--batches", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    return p


if __name__ == "__main__":
    main(get_args_parser().parse_args())
