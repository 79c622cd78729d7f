"""Does the defense move attacks the paper's way on real MNIST? (issue 2, acceptance 6)

A short CPU run of Section V-B: ``mnist_mlp`` split after ``fc2``, one two-layer ReLU
defender (App. A's ``mnist_a1`` shape, as in V-B (1)), loss CE - λ·(1 - SSIM), trained
with the paper's MNIST recipe (Adam 1e-4 / 1e-3, batch 32) for a few epochs at each λ;
then attackers trained on the *frozen* activations of the training images, scored on the
test images. The paper's direction: attacker SSIM falls as λ grows while test accuracy
stays (Table I). Not a test: it prints a table and a verdict.

    python benchmarks/mnist_direction.py                       # ../shared/data/mnist
    python benchmarks/mnist_direction.py --lams 0,1,3,10 --limit-train 60000
    python benchmarks/mnist_direction.py --update simultaneous   # the one-pass Algorithm 1
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from pp_cluster.data import load_dataset
from pp_cluster.data.attacker import attacker_data
from pp_cluster.nets import build_decoder, build_net, split
from pp_cluster.privacy import (
    AttackConfig,
    compute_activations,
    evaluate_attack,
    recipe,
    train_attacker,
    train_defended,
)

REPO = Path(__file__).resolve().parents[1]
PARTITION = "fc2"


def get_args_parser() -> argparse.ArgumentParser:
    shared = Path(os.environ.get("PP_SHARED_DATA", REPO.parent / "shared" / "data"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, default=shared / "mnist", help="folder with the MNIST idx files")
    p.add_argument("--lams", default="0,1,10", help="comma-separated λ grid; 0 = no defender")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument(
        "--recipe",
        default="paper",
        help="the MNIST recipe (paper: Adam 1e-4, batch 32; fast: one-cycle 1e-3, batch 128)",
    )
    p.add_argument("--limit-train", type=int, default=20000, help="stratified training subset (time)")
    p.add_argument("--defender", default="mnist_a1")
    p.add_argument("--attackers", default="mnist_a1,mnist_a3", help="comma-separated decoder names")
    p.add_argument("--attack-epochs", type=int, default=5)
    p.add_argument(
        "--update",
        choices=("alternating", "simultaneous"),
        default="alternating",
        help="Algorithm 1's order (the paper's) or the one-pass simultaneous update",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    return p


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    ds = load_dataset("mnist", args.data_root, limit_train=args.limit_train)
    attack_train, attack_eval = attacker_data(ds, "train", 1.0, args.seed)
    lams = [float(v) for v in args.lams.split(",")]
    attackers = args.attackers.split(",")
    print(
        f"MNIST {len(ds.train)} train / {len(ds.test)} test, split at {PARTITION}, defender {args.defender}, "
        f"{args.epochs} epochs ({args.recipe} recipe), {args.update} update; "
        f"attackers {attackers} ({args.attack_epochs} epochs on frozen activations)"
    )

    rows = []
    for lam in lams:
        torch.manual_seed(args.seed)
        net = build_net("mnist_mlp", ds.image_shape, ds.num_classes)
        local, remote = split(net, PARTITION)
        defenders = [build_decoder(args.defender, net, PARTITION, ds.value_range)] if lam > 0 else []
        cfg = recipe("mnist", args.recipe, lam=lam, epochs=args.epochs, seed=args.seed, update=args.update)
        result = train_defended(net, local, remote, defenders, ds.train, ds.test, ds.value_range, cfg)
        if result.status != "ok":
            print(f"λ={lam:g}: diverged at epoch {result.diverged_epoch}")
            continue
        h_train = compute_activations(local, attack_train.x)
        h_eval = compute_activations(local, attack_eval.x)
        for name in attackers:
            torch.manual_seed(args.seed)
            attacker = build_decoder(name, net, PARTITION, ds.value_range)
            attacker, history = train_attacker(
                attacker,
                h_train,
                attack_train.x,
                ds.value_range,
                AttackConfig(epochs=args.attack_epochs, seed=args.seed),
            )
            metrics = evaluate_attack(
                attacker,
                h_eval,
                attack_eval.x,
                ds.value_range,
                classifier=net,
                y_eval=attack_eval.y,
                n_keep=0,
                with_dpd=False,
            ).metrics
            rows.append(
                {
                    "lam": lam,
                    "test_acc": result.test_acc,
                    "attacker": name,
                    "mse": metrics["mse"],
                    "ssim": metrics["ssim"],
                    "reprint_acc": metrics["reprint_acc"],
                    "train_s": result.seconds,
                    "attack_s": history["seconds"],
                }
            )
            r = rows[-1]
            print(
                f"λ={lam:g} {name}: acc {r['test_acc']:.4f} mse {r['mse']:.4f} ssim {r['ssim']:.3f} "
                f"reprint {r['reprint_acc']:.3f} train {r['train_s']:.0f}s attack {r['attack_s']:.0f}s",
                flush=True,
            )

    print("\n| λ | test acc | attacker | attacker MSE | SSIM | reprint acc | train s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['lam']:g} | {r['test_acc']:.4f} | {r['attacker']} | {r['mse']:.4f} | {r['ssim']:.3f} "
            f"| {r['reprint_acc']:.3f} | {r['train_s']:.0f} |"
        )

    base = {r["attacker"]: r for r in rows if r["lam"] == 0}
    verdicts = []
    for lam in sorted({r["lam"] for r in rows} - {0.0}):
        at = [r for r in rows if r["lam"] == lam and r["attacker"] in base]
        if not at:
            continue
        lower = all(r["ssim"] < base[r["attacker"]]["ssim"] for r in at)
        drop = base[at[0]["attacker"]]["test_acc"] - at[0]["test_acc"]
        verdicts.append((lam, lower and drop <= 0.01, lower, drop))
    if not verdicts:
        print("\nno λ > 0 next to a λ = 0 baseline: nothing to compare")
        return
    for lam, ok, lower, drop in verdicts:
        print(
            f"λ={lam:g}: every attacker's SSIM {'lower' if lower else 'NOT lower'} than at λ=0; "
            f"test accuracy {-drop * 100:+.2f} points -> {'holds' if ok else 'does not hold'}"
        )
    holding = [f"{lam:g}" for lam, ok, _, _ in verdicts if ok]
    print(
        "paper's direction (SSIM lower at λ>0, test acc within 1 point): "
        + (f"HOLDS at λ = {', '.join(holding)}" if holding else "DOES NOT HOLD at any λ tried")
    )


if __name__ == "__main__":
    main(get_args_parser().parse_args())
