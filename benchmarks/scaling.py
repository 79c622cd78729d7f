"""Does a sweep's cost grow linearly in its trials? And what does a 1,000-trial spec cost the driver?
(issue 8, target 4)

Memory: a 1,000-model grid (2 partitions x 10 λ x 50 seeds) is validated, expanded with
``SweepSpec.grid_points()``, turned into the Tune param space ``run_sweep`` builds, and
resolved into its 1,000 trial configs by Tune's own variant generator -- everything the
driver does before the first trial starts, but nothing is run. Reported: the tracemalloc
peak of those steps and the growth of the process's peak RSS (``resource.getrusage``),
next to the absolute peak RSS (torch + Ray imports included).

Time: one local Ray cluster (4 logical CPUs, started once and not timed), then grid sweeps
of 1, 2, 4, 8 trials (seeds) of a tiny face CNN on the embedded LFW crops, each through
``run_sweep`` into a fresh results folder. A quadratic is fitted to wall(n); its n^2 term
is the super-linear part, reported with its share of wall(8).
Targets: linear (no material n^2 term), < 500 MB.

    python benchmarks/scaling.py --quick
    python benchmarks/scaling.py --trials 1,2,4,8,16 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
import tracemalloc

import numpy as np
from _common import enter_repo_root, machine_line, print_table

from pp_cluster.config import Resources, SweepSpec

MB = 1024 * 1024


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1, 2, 4, 8 trials once (a few minutes on 2 cores)")
    p.add_argument("--trials", default="1,2,4,8", help="sweep sizes (ignored with --quick)")
    p.add_argument("--repeats", type=int, default=2, help="sweeps per size; the median is used (--quick: 1)")
    p.add_argument("--num-cpus", type=int, default=4, help="logical CPUs of the local Ray cluster")
    return p


def big_spec(results: str) -> SweepSpec:
    return SweepSpec(
        name="mem1000",
        dataset="lfw-subset",
        arch="face_cnn",
        partitions=("pool1", "pool2"),
        lams=tuple([0.0] + [10.0**e for e in np.linspace(-3, 1, 9)]),
        seeds=tuple(range(50)),
        epochs=1,
        results=results,
    )


def expansion_memory(results: str) -> tuple[int, float, float, float]:
    """(configs, tracemalloc peak MB, peak-RSS growth MB, peak RSS MB) of expanding ``big_spec``."""
    from ray.tune.search.variant_generator import generate_variants

    from pp_cluster.farm.sweep import _param_space

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    tracemalloc.start()
    spec = big_spec(results).validate()
    points = spec.grid_points()
    configs = [cfg for _, cfg in generate_variants(_param_space(spec, use_gpu=False))]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if len(points) != len(configs):
        raise RuntimeError(f"{len(points)} grid points but Tune resolved {len(configs)} configs")
    return len(configs), peak / MB, rss1 - rss0, rss1


def tiny_sweep(results: str, n: int, tag: str) -> SweepSpec:
    return SweepSpec(
        name=f"scale{n}-{tag}",
        dataset="lfw-subset",
        dataset_options={"size": 16},
        arch="face_cnn",
        arch_options={"widths": (4, 8, 8, 8), "fc": 16},
        partitions=("pool1",),
        lams=(0.0,),
        attackers=("deconv", "fc"),
        seeds=tuple(range(n)),
        epochs=1,
        batch_size=32,
        attack_epochs=1,
        results=results,
        resources=Resources(pool_size=2, attacker_cpus=0.5, cpus_per_worker=1.0),
    )


def main(args: argparse.Namespace) -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    enter_repo_root()
    sizes = [1, 2, 4, 8] if args.quick else [int(v) for v in args.trials.split(",")]
    repeats = 1 if args.quick else args.repeats
    if len(sizes) < 3 or min(sizes) < 1 or repeats < 1:
        raise ValueError(
            f"need >= 3 positive sweep sizes and --repeats >= 1 to fit a quadratic, got {sizes}, {repeats}"
        )
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="pp_scaling_") as tmp:
        n_cfg, traced, rss_growth, rss = expansion_memory(tmp)
        print(
            f"1,000-trial spec: {n_cfg} Tune configs; tracemalloc peak {traced:.1f} MB, "
            f"peak RSS +{rss_growth:.1f} MB (process peak RSS {rss:.0f} MB, imports included)",
            flush=True,
        )

        import ray

        from pp_cluster.farm.sweep import run_sweep, train_runtime_env

        # The farm's own Ray Train settings, as when run_sweep starts the cluster itself.
        ray.init(
            address="local",
            num_cpus=args.num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            runtime_env=train_runtime_env(),
        )
        walls: dict[int, list[float]] = {n: [] for n in sizes}
        try:
            for r in range(repeats):
                for n in sizes:
                    spec = tiny_sweep(os.path.join(tmp, f"r{r}"), n, f"r{r}")
                    t0 = time.perf_counter()
                    outcome = run_sweep(spec, verbose=False)
                    walls[n].append(time.perf_counter() - t0)
                    if outcome.n_errored:
                        raise RuntimeError(f"{outcome.n_errored} of {n} trials errored")
                    print(f"  {n} trials: {walls[n][-1]:.1f} s  (load {os.getloadavg()[0]:.1f})", flush=True)
        finally:
            ray.shutdown()

    n = np.array(sizes, dtype=float)
    wall = np.array([statistics.median(walls[k]) for k in sizes])
    c2, c1, c0 = np.polyfit(n, wall, 2)
    b1, b0 = np.polyfit(n, wall, 1)
    rows = [(k, f"{w:.1f}", f"{w / k:.1f}", f"{b0 + b1 * k:.1f}") for k, w in zip(sizes, wall)]
    print()
    print_table(("trials", "wall s (median)", "s / trial", "linear fit s"), rows)
    print(f"linear fit: {b0:.1f} s + {b1:.2f} s/trial; quadratic fit: {c0:.1f} + {c1:.2f} n + {c2:.3f} n^2")
    share = c2 * n[-1] ** 2 / wall[-1]
    print(
        f"super-linear term at n={sizes[-1]}: {c2 * n[-1] ** 2:+.1f} s = {share:+.0%} of wall "
        f"(target: ~0, i.e. linear); 1,000-trial spec: {traced:.1f} MB traced, +{rss_growth:.1f} MB RSS "
        f"(target < 500 MB)"
    )


if __name__ == "__main__":
    main(get_args_parser().parse_args())
