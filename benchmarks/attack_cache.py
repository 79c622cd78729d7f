"""Attacker zoo on cached activations vs the naive way, per partition point (issue 8, target 2).

Cached (what the farm does): ``pipeline.attack_inputs`` runs the local partition once over
the attacker's training and evaluation images, then ``pipeline.run_attack`` trains and
scores each attacker of the zoo on those arrays. Naive: every attacker re-runs the local
partition (eval mode, no grad) on every batch of every epoch, on every validation pass and
on the evaluation images. Same attacker, seed, epochs, batch size and validation split,
so both arms do the same attacker arithmetic; the final validation MSE of each arm is
printed (equal up to float rounding) to show that. The classifier is freshly initialised (its weights do not change
the cost). Target: >= 1.5x at pool3 of face_cnn on LFW-like 64x64 RGB images.

    python benchmarks/attack_cache.py --quick
    python benchmarks/attack_cache.py --data-root ../shared/data/lfw --epochs 20
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from _common import Timer, lfw_like, machine_line, print_table
from pp_cluster import pipeline
from pp_cluster.config import AttackSpec, ModelSpec
from pp_cluster.data.attacker import attacker_data
from pp_cluster.nets import activation_shape, build_decoder, clip_to_range, flops_per_sample
from pp_cluster.privacy.attack import AttackConfig, compute_activations, evaluate_attack
from pp_cluster.privacy.defense import build_optimizer
from pp_cluster.privacy.metrics import to_unit

ZOO = ("deconv", "fc", "sparse_fc")  # the paper's LFW attackers (V-C)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 attacker epoch (a few minutes on 2 cores)")
    p.add_argument("--data-root", type=Path, default=None,
                   help="real LFW folder; default: scikit-image's LFW crops at 64x64 RGB")
    p.add_argument("--partitions", default="pool1,pool2,pool3")
    p.add_argument("--epochs", type=int, default=10, help="attacker epochs (ignored with --quick: 1)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    return p


def naive_attack(attack: AttackSpec, local: nn.Module, net: nn.Module, spec: ModelSpec,
                 value_range: tuple[float, float], x_train: torch.Tensor, x_eval: torch.Tensor,
                 y_eval: torch.Tensor) -> float:
    """``train_attacker`` + ``evaluate_attack`` with the local partition in the loop: the
    same seeded permutation, held-out validation pairs and best-epoch selection, but
    ``h = f_local(x)`` recomputed wherever the cached arm reads a stored activation.
    Returns the evaluation MSE (the ``mse`` column of the cached arm's row)."""
    cfg = AttackConfig(epochs=attack.epochs, batch_size=attack.batch_size, lr=attack.lr, seed=spec.seed)
    local.eval()

    def h_of(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return local(x)

    torch.manual_seed(spec.seed)
    attacker = build_decoder(attack.attacker, net, spec.partition, value_range)
    n_val = max(1, round(len(x_train) * cfg.val_fraction))
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    perm = torch.randperm(len(x_train), generator=gen)
    x_val, train_idx = x_train[perm[:n_val]], perm[n_val:]
    optimizer = build_optimizer(cfg.optimizer, attacker.parameters(), cfg.lr)
    best, best_state = math.inf, attacker.state_dict()
    for _ in range(cfg.epochs):
        attacker.train()
        order = train_idx[torch.randperm(len(train_idx), generator=gen)]
        for i in range(0, len(order), cfg.batch_size):
            x = x_train[order[i : i + cfg.batch_size]]
            loss = F.mse_loss(to_unit(attacker(h_of(x)), value_range), to_unit(x, value_range))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        attacker.eval()
        with torch.no_grad():
            rec = torch.cat([attacker(h_of(x_val[i : i + 4 * cfg.batch_size]))
                             for i in range(0, len(x_val), 4 * cfg.batch_size)])
        val = float(F.mse_loss(to_unit(clip_to_range(rec, value_range), value_range), to_unit(x_val, value_range)))
        if val < best:
            best, best_state = val, {k: v.detach().clone() for k, v in attacker.state_dict().items()}
    attacker.load_state_dict(best_state)
    result = evaluate_attack(attacker, compute_activations(local, x_eval), x_eval, value_range,
                             classifier=net, y_eval=y_eval, n_keep=0)
    return float(result.metrics["mse"])


def flop_ceiling(model: pipeline.Model, partition: str, image_shape: tuple[int, ...]) -> float:
    """The most caching can save, per training image and epoch: naive / cached =
    sum_a (3 F_a + F_local) / sum_a 3 F_a (an attacker step is forward + backward, about 3x
    its forward; the local partition only runs forward). Optimizer updates and evaluation
    are left out, so heavy-parameter attackers (the dense ones) sit below this line."""
    f_local = flops_per_sample(model.local, image_shape)
    h_shape = activation_shape(model.net, partition)
    f_att = [flops_per_sample(build_decoder(a, model.net, partition, (-1.0, 1.0)), h_shape) for a in ZOO]
    return sum(3 * f + f_local for f in f_att) / sum(3 * f for f in f_att)


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    epochs = 1 if args.quick else args.epochs
    dataset, root, options = lfw_like(args.data_root)
    attacks = [AttackSpec(attacker=a, epochs=epochs, batch_size=args.batch_size) for a in ZOO]
    base = ModelSpec(dataset=dataset, arch="face_cnn", partition="pool1", lam=0.0, defenders=(),
                     distance="ssim", seed=0, epochs=1, batch_size=32, data_root=root, dataset_options=options)
    ds = pipeline.load_data(base)
    train, evaluation = attacker_data(ds, "train", 1.0, base.seed)
    shape = (ds.image_shape, ds.num_classes, ds.value_range)
    print(machine_line())
    print(f"{dataset} {tuple(ds.image_shape)}: attacker trains on {len(train)} images, scored on "
          f"{len(evaluation)}; zoo {', '.join(ZOO)}, {epochs} epochs, batch {args.batch_size}, "
          f"{args.threads} threads")

    rows = []
    for partition in args.partitions.split(","):
        spec = dataclasses.replace(base, partition=partition)
        model = pipeline.build_model(spec, ds)
        model.net.eval()
        # Alternate the arms per attacker, so load drift on a shared machine hits both.
        cached_s = naive_s = 0.0
        with Timer() as t:
            inputs = pipeline.attack_inputs(model.local, ds, "train", 1.0, spec.seed)
        cached_s += t.seconds
        cached_val, naive_val = [], []
        for attack in attacks:
            with Timer() as t:
                row, _ = pipeline.run_attack(attack, model.net, spec, shape, inputs, seed=spec.seed)
            cached_s += t.seconds
            with Timer() as t:
                naive_val.append(naive_attack(attack, model.local, model.net, spec, ds.value_range,
                                              train.x, evaluation.x, evaluation.y))
            naive_s += t.seconds
            cached_val.append(row["mse"])
        h = inputs.h_train.shape[1:]
        rows.append((partition, "x".join(map(str, h)), f"{cached_s:.1f}", f"{naive_s:.1f}",
                     f"{naive_s / cached_s:.2f}x", f"{flop_ceiling(model, partition, ds.image_shape):.2f}x"))
        print(f"  {partition}: cached {cached_s:.1f} s, naive {naive_s:.1f} s; eval MSE per attacker "
              f"cached {', '.join(f'{v:.4f}' for v in cached_val)} | naive "
              f"{', '.join(f'{v:.4f}' for v in naive_val)}", flush=True)

    print()
    print_table(("partition", "activation", "cached s", "naive s", "naive / cached", "FLOP ceiling"), rows)
    last = rows[-1]
    print(f"speed-up from cached activations at {last[0]}: {last[4]} (FLOP ceiling {last[5]}; "
          "target >= 1.5x at pool3)")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
