"""Per-batch cost of the LFW attacker zoo at pool3, and two candidate speed-ups (issue 8, target 2).

Process-CPU ms and minor page faults (fastest of 4) of one batch of 64 LFW-like 64x64 RGB
images: the local partition's forward (what the naive arm of ``attack_cache.py`` adds per
batch), and each attacker's training step (forward, MSE, backward, fused Adam), its forward +
backward alone and its forward alone; the deconv attacker also in channels-last. Run it twice
to compare the allocator: as is, and with ``THP_MEM_ALLOC_ENABLE=1`` (torch then backs large
CPU tensors with transparent huge pages: fewer page faults). The bound attack_cache's speed-up
approaches with many epochs is sum_a (step_a + local) / sum_a step_a.

    python benchmarks/attack_step_profile.py
    THP_MEM_ALLOC_ENABLE=1 python benchmarks/attack_step_profile.py
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _common import fastest_cpu, machine_line, print_table
from attack_cache import ZOO

from pp_cluster import pipeline
from pp_cluster.config import ModelSpec
from pp_cluster.nets import build_decoder
from pp_cluster.privacy.attack import AttackConfig, attacker_optimizer
from pp_cluster.privacy.metrics import to_unit


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--partition", default="pool3")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    return p


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    spec = ModelSpec(
        dataset="lfw-subset",
        arch="face_cnn",
        partition=args.partition,
        lam=0.0,
        defenders=(),
        distance="ssim",
        seed=0,
        epochs=1,
        batch_size=32,
        dataset_options={"size": 64, "color": True},
    )
    ds = pipeline.load_data(spec)
    model = pipeline.build_model(spec, ds)
    x, vr = ds.train.x[: args.batch_size], ds.value_range
    local = model.local.eval()
    with torch.no_grad():
        h = local(x)
        local_ms, local_faults = fastest_cpu(lambda: local(x), 4)
    target = to_unit(x, vr)
    print(machine_line())
    rows = [("local forward (no grad)", f"{local_ms:.0f}", local_faults, "", "", "", "")]
    steps = {}
    for name in ZOO:
        for channels_last in (False, True) if name == "deconv" else (False,):
            torch.manual_seed(0)
            attacker = build_decoder(name, model.net, args.partition, vr).train()
            hh = h
            if channels_last:
                attacker = attacker.to(memory_format=torch.channels_last)
                hh = h.contiguous(memory_format=torch.channels_last)
            optimizer = attacker_optimizer(AttackConfig(), attacker.parameters())

            def fwd_bwd() -> None:
                loss = F.mse_loss(to_unit(attacker(hh), vr), target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()

            def step() -> None:
                fwd_bwd()
                optimizer.step()

            def fwd() -> None:
                with torch.no_grad():
                    attacker(hh)

            label = f"{name} (channels-last)" if channels_last else name
            s, fb, f = (fastest_cpu(fn, 4) for fn in (step, fwd_bwd, fwd))
            steps[label] = s[0]
            rows.append((f"{label} step", f"{s[0]:.0f}", s[1], f"{fb[0]:.0f}", fb[1], f"{f[0]:.0f}", f[1]))
            print(f"  {label}: step {s[0]:.0f} ms", flush=True)
    print()
    print_table(
        (
            "batch of 64 at " + args.partition,
            "CPU ms",
            "page faults",
            "fwd+bwd ms",
            "faults",
            "fwd ms",
            "faults",
        ),
        rows,
    )
    for labels in (ZOO, tuple("deconv (channels-last)" if a == "deconv" else a for a in ZOO)):
        total = sum(steps[k] for k in labels)
        print(
            f"bound for zoo {', '.join(labels)}: (steps + {len(labels)} x local) / steps = "
            f"{(total + len(labels) * local_ms) / total:.2f}x"
        )


if __name__ == "__main__":
    main(get_args_parser().parse_args())
