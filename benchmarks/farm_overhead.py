"""What does the farm cost over a plain loop doing the same work? (issue 8, target 1)

The same models and attacks -- the quick LFW profile cut to 2 partitions x λ {0, 1} =
4 models x 3 attackers -- run twice in one process: (i) as a plain sequential loop over
the science functions (``pipeline.load_data`` once, then per model ``train_model``,
``attack_inputs`` and ``run_attack`` per attacker, torch on all cores); (ii) through
``run_sweep``, which starts a local Ray cluster (4 logical CPUs, so up to four trials and the two attacker
actors share the 2 cores, one torch thread each), into a fresh results folder. Reported:
wall(farm) / wall(plain) (the farm's wall includes starting Ray), the per-trial overhead
(wall difference / trials), and the in-trial overhead the farm records itself: a model row's
(finished_at - started_at) - train_seconds, i.e. the TorchTrainer start, the per-epoch
checkpoints and the object-store reads. Target: farm / plain <= 1.15 when the plain run
takes >= 3 minutes (the full default; --quick is smaller and the target does not apply).

    python benchmarks/farm_overhead.py --quick
    python benchmarks/farm_overhead.py                 # plain run >= 3 min on 2 cores
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
from _common import Timer, enter_repo_root, machine_line, print_table

from pp_cluster import pipeline
from pp_cluster.config import Resources, SweepSpec
from pp_cluster.profiles import LFW_GRID_QUICK

PLAIN_MIN_SECONDS = 180


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="4 epochs, 2 attacker epochs (the target does not apply)"
    )
    p.add_argument("--epochs", type=int, default=60, help="training epochs per model (ignored with --quick)")
    p.add_argument("--attack-epochs", type=int, default=10, help="attacker epochs (ignored with --quick)")
    p.add_argument("--num-cpus", type=int, default=4, help="logical CPUs of the local Ray cluster")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of the plain loop")
    p.add_argument(
        "--checkpoint-interval",
        type=float,
        default=Resources().checkpoint_interval_s,
        help="the farm's Resources.checkpoint_interval_s (0 = a checkpoint every epoch)",
    )
    return p


def plain_loop(spec: SweepSpec) -> float:
    """The sweep's models and attacks, one after another, no Ray; returns wall seconds."""
    with Timer() as t:
        ds = pipeline.load_data(spec.model_spec(spec.partitions[0], 0.0, spec.seeds[0]))
        shape = (ds.image_shape, ds.num_classes, ds.value_range)
        for point in spec.grid_points():
            ms = spec.model_spec(**point)
            model, result = pipeline.train_model(ms, ds)
            if result.status != "ok":
                raise RuntimeError(f"plain loop: model {point} diverged")
            inputs = pipeline.attack_inputs(
                model.local, ds, spec.attacker_data, spec.attacker_fraction, ms.seed
            )
            for attack in spec.attack_specs():
                pipeline.run_attack(attack, model.net, ms, shape, inputs, seed=ms.seed)
    return t.seconds


def farm_run(spec: SweepSpec, num_cpus: int) -> tuple[float, float]:
    """(run_sweep s incl. starting a local Ray cluster, mean in-trial overhead s) of the same
    sweep on the farm, started as a user's ``python sweeps/...`` starts it: ``run_sweep``
    brings up the local cluster itself, with the farm's Ray Train settings."""
    from pp_cluster.farm.sweep import run_sweep
    from pp_cluster.results.store import ResultStore

    with Timer() as sweep:
        outcome = run_sweep(spec, num_cpus=num_cpus, verbose=False)
    if outcome.n_errored:
        raise RuntimeError(f"farm: {outcome.n_errored} of {outcome.n_trials} trials errored")
    models = ResultStore(spec.results_uri()).read("models", spec.name)
    in_trial = (
        (models["finished_at"] - models["started_at"]).dt.total_seconds() - models["train_seconds"]
    ).mean()
    return sweep.seconds, float(in_trial)


def main(args: argparse.Namespace) -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    enter_repo_root()
    epochs, attack_epochs = (4, 2) if args.quick else (args.epochs, args.attack_epochs)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="pp_overhead_") as tmp:
        spec = LFW_GRID_QUICK.with_(
            name="farm_overhead",
            partitions=("pool1", "pool2"),
            epochs=epochs,
            attack_epochs=attack_epochs,
            results=os.path.join(tmp, "results"),
            resources=Resources(
                pool_size=2,
                attacker_cpus=0.5,
                cpus_per_worker=1.0,
                checkpoint_interval_s=args.checkpoint_interval,
            ),
        )
        n_models, n_attacks = len(spec.grid_points()), len(spec.attackers)
        print(machine_line())
        print(
            f"{spec.dataset} {dict(spec.dataset_options)}, face_cnn {dict(spec.arch_options)}: {n_models} models x "
            f"{n_attacks} attackers, {epochs} epochs, {attack_epochs} attacker epochs; plain loop "
            f"{args.threads} torch threads, farm {args.num_cpus} logical CPUs",
            flush=True,
        )
        plain = plain_loop(spec)
        print(f"  plain loop: {plain:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
        farm, in_trial = farm_run(spec, args.num_cpus)
        print(f"  farm: run_sweep incl. Ray start {farm:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)

    print()
    print_table(
        ("run", "wall s", "vs plain"),
        [
            ("plain loop", f"{plain:.1f}", "1.00"),
            ("farm (run_sweep, incl. Ray start)", f"{farm:.1f}", f"{farm / plain:.2f}"),
        ],
    )
    print(
        f"per-trial overhead: {(farm - plain) / n_models:+.1f} s (wall difference / {n_models} trials); "
        f"in-trial (TorchTrainer start, checkpoints) {in_trial:.1f} s per model; "
        f"checkpoint interval {spec.resources.checkpoint_interval_s:g} s"
    )
    applies = (
        "applies" if plain >= PLAIN_MIN_SECONDS else f"does not apply: plain run < {PLAIN_MIN_SECONDS} s"
    )
    print(f"wall(farm) / wall(plain) = {farm / plain:.2f} (target <= 1.15; {applies})")
    print(machine_line())


if __name__ == "__main__":
    main(get_args_parser().parse_args())
