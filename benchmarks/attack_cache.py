"""Attacker zoo on cached activations vs the naive way, per partition point (issue 8, target 2).

Cached (what the farm does): ``pipeline.attack_inputs`` runs the local partition once over
the attacker's training and evaluation images, then ``pipeline.run_attack`` trains and
scores each attacker of the zoo on those arrays. Naive: the same ``train_attacker`` and
``evaluate_attack`` calls on images, with the attacker wrapped so that it re-runs the local
partition (eval mode, no grad) on every batch of every epoch, on every validation pass and
on the evaluation images. Same attacker, seed, epochs, batch size and validation split,
so both arms do the same attacker arithmetic; the evaluation MSE of each arm is printed
(equal up to float rounding) to show that. The classifier is freshly initialised (its
weights do not change the cost). Target: >= 1.5x at pool3 of face_cnn on LFW-like 64x64
RGB images.

Both wall and process-CPU seconds are reported; run with ``--threads 1`` on a loaded
machine and read the CPU columns. A per-batch profile (local forward vs each attacker's
training step) gives the bound the speed-up approaches with many epochs:
sum_a (step_a + local) / sum_a step_a.

    python benchmarks/attack_cache.py --quick --threads 1
    python benchmarks/attack_cache.py --partitions pool3 --epochs 5 --threads 1
    python benchmarks/attack_cache.py --data-root ../shared/data/lfw --epochs 20
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import fastest_cpu, lfw_like, machine_line, print_table
from torch import nn

from pp_cluster import pipeline
from pp_cluster.config import AttackSpec, ModelSpec
from pp_cluster.data.attacker import attacker_data
from pp_cluster.nets import activation_shape, build_decoder, flops_per_sample
from pp_cluster.privacy.attack import AttackConfig, attacker_optimizer, evaluate_attack, train_attacker
from pp_cluster.privacy.metrics import to_unit

ZOO = ("deconv", "fc", "sparse_fc")  # the paper's LFW attackers (V-C)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 attacker epoch (a few minutes on 2 cores)")
    p.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="real LFW folder; default: scikit-image's LFW crops at 64x64 RGB",
    )
    p.add_argument("--partitions", default="pool1,pool2,pool3")
    p.add_argument("--epochs", type=int, default=10, help="attacker epochs (ignored with --quick: 1)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    return p


class LocalInTheLoop(nn.Module):
    """``attacker(f_local(x))`` with the local partition frozen (eval mode, no grad): the
    naive attacker. ``local`` is kept out of the module tree, so ``parameters()``,
    ``state_dict()`` (the best-epoch copies) and ``train()`` see only the attacker, and
    ``train_attacker`` / ``evaluate_attack`` do exactly the attacker arithmetic of the
    cached arm, plus the local forward wherever the cached arm reads a stored activation."""

    def __init__(self, local: nn.Module, attacker: nn.Module) -> None:
        super().__init__()
        self.attacker = attacker
        object.__setattr__(self, "local", local.eval())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            h = self.local(x)
        return self.attacker(h)


def naive_attack(
    attack: AttackSpec,
    local: nn.Module,
    net: nn.Module,
    spec: ModelSpec,
    value_range: tuple[float, float],
    x_train: torch.Tensor,
    x_eval: torch.Tensor,
    y_eval: torch.Tensor,
) -> float:
    """``pipeline.run_attack``'s steps (seeded attacker, ``train_attacker`` with its validation
    split and best-epoch selection, ``evaluate_attack``) on images instead of activations,
    the attacker wrapped in :class:`LocalInTheLoop`. Returns the evaluation MSE (the ``mse``
    column of the cached arm's row)."""
    cfg = AttackConfig(epochs=attack.epochs, batch_size=attack.batch_size, lr=attack.lr, seed=spec.seed)
    torch.manual_seed(spec.seed)
    attacker = LocalInTheLoop(local, build_decoder(attack.attacker, net, spec.partition, value_range))
    attacker, _ = train_attacker(attacker, x_train, x_train, value_range, cfg)
    result = evaluate_attack(attacker, x_eval, x_eval, value_range, classifier=net, y_eval=y_eval, n_keep=0)
    return float(result.metrics["mse"])


def per_batch_ms(
    model: pipeline.Model, partition: str, x: torch.Tensor, value_range: tuple[float, float], repeats: int = 3
) -> dict[str, float]:
    """Process-CPU ms of one training batch ``x``: the local forward (eval, no grad) and each
    attacker's step (forward, MSE, backward, optimizer step), fastest of ``repeats``."""

    def best(fn) -> float:
        return fastest_cpu(fn, repeats)[0]

    local = model.local.eval()
    with torch.no_grad():
        out = {"local forward": best(lambda: local(x))}
        h = local(x)
    target = to_unit(x, value_range)
    for name in ZOO:
        torch.manual_seed(0)
        attacker = build_decoder(name, model.net, partition, value_range).train()
        optimizer = attacker_optimizer(AttackConfig(), attacker.parameters())

        def step() -> None:
            loss = F.mse_loss(to_unit(attacker(h), value_range), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        out[f"{name} step"] = best(step)
    return out


class Clock:
    """Accumulates wall and process-CPU seconds over ``with`` blocks. With ``--threads 1``
    CPU time is the steadier figure on a loaded machine (it leaves out time the process
    waited for a core)."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> Clock:
        self._t0, self._c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall += time.perf_counter() - self._t0
        self.cpu += time.process_time() - self._c0


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
    base = ModelSpec(
        dataset=dataset,
        arch="face_cnn",
        partition="pool1",
        lam=0.0,
        defenders=(),
        distance="ssim",
        seed=0,
        epochs=1,
        batch_size=32,
        data_root=root,
        dataset_options=options,
    )
    ds = pipeline.load_data(base)
    train, evaluation = attacker_data(ds, "train", 1.0, base.seed)
    shape = (ds.image_shape, ds.num_classes, ds.value_range)
    print(machine_line())
    print(
        f"{dataset} {tuple(ds.image_shape)}: attacker trains on {len(train)} images, scored on "
        f"{len(evaluation)}; zoo {', '.join(ZOO)}, {epochs} epochs, batch {args.batch_size}, "
        f"{args.threads} threads"
    )

    rows, profile_rows = [], []
    for partition in args.partitions.split(","):
        spec = dataclasses.replace(base, partition=partition)
        model = pipeline.build_model(spec, ds)
        model.net.eval()
        # Alternate the arms per attacker, so load drift on a shared machine hits both.
        cached, naive = Clock(), Clock()
        with cached:
            inputs = pipeline.attack_inputs(model.local, ds, "train", 1.0, spec.seed)
        cached_val, naive_val = [], []
        for attack in attacks:
            with cached:
                row, _ = pipeline.run_attack(attack, model.net, spec, shape, inputs, seed=spec.seed)
            with naive:
                naive_val.append(
                    naive_attack(
                        attack,
                        model.local,
                        model.net,
                        spec,
                        ds.value_range,
                        train.x,
                        evaluation.x,
                        evaluation.y,
                    )
                )
            cached_val.append(row["mse"])
        ms = per_batch_ms(model, partition, train.x[: args.batch_size], ds.value_range)
        steps = sum(v for k, v in ms.items() if k != "local forward")
        bound = (steps + len(ZOO) * ms["local forward"]) / steps
        h = inputs.h_train.shape[1:]
        rows.append(
            (
                partition,
                "x".join(map(str, h)),
                f"{cached.wall:.1f}",
                f"{naive.wall:.1f}",
                f"{naive.wall / cached.wall:.2f}x",
                f"{cached.cpu:.1f}",
                f"{naive.cpu:.1f}",
                f"{naive.cpu / cached.cpu:.2f}x",
                f"{bound:.2f}x",
                f"{flop_ceiling(model, partition, ds.image_shape):.2f}x",
            )
        )
        profile_rows.append(
            (
                partition,
                *(f"{v:.0f}" for v in ms.values()),
                f"{len(ZOO) * ms['local forward'] / (steps + len(ZOO) * ms['local forward']):.0%}",
            )
        )
        print(
            f"  {partition}: cached {cached.wall:.1f} s wall / {cached.cpu:.1f} s CPU, naive {naive.wall:.1f} s "
            f"wall / {naive.cpu:.1f} s CPU; eval MSE per attacker cached "
            f"{', '.join(f'{v:.4f}' for v in cached_val)} | naive {', '.join(f'{v:.4f}' for v in naive_val)}",
            flush=True,
        )

    print()
    print(f"Per training batch of {args.batch_size} (process CPU ms, fastest of 3):")
    print_table(("partition", *(f"{k}" for k in ms), "local share of a naive batch"), profile_rows)
    print()
    print_table(
        (
            "partition",
            "activation",
            "cached s",
            "naive s",
            "naive / cached",
            "cached CPU s",
            "naive CPU s",
            "naive / cached (CPU)",
            "per-batch bound",
            "FLOP ceiling",
        ),
        rows,
    )
    last = rows[-1]
    print(
        f"speed-up from cached activations at {last[0]}: {last[4]} wall, {last[7]} CPU (bound from per-batch "
        f"times {last[8]}, FLOP ceiling {last[9]}; target >= 1.5x at pool3)"
    )
    print(machine_line())


if __name__ == "__main__":
    main(get_args_parser().parse_args())
