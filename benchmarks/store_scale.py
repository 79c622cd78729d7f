"""The results store at scale: a simulated sweep of N models and 5 attacks each (rows only, no
training) on local disk (and, with --s3, on a local S3 server at --s3-models), timed before
and after `pp-farm compact`:

- `pp-farm status ROOT`                           (subprocess, wall seconds)
- `python -m analysis.report ROOT --markdown P`  (subprocess, wall seconds)
- one trial's reads (its model row and attacks by key), in-process: seconds and the
  filesystem calls they made (listings, lookups, opens), which must not grow with N.

Rows look like real ones: an undefended model per seed attacked at 3 partitions, defended
models at their own; 64 per-image SSIM/MSE values per attack.

    python benchmarks/store_scale.py [--models 10000] [--s3 --s3-models 1000] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pp_cluster.results.store import ResultStore, provenance  # noqa: E402

SWEEP = "scale"
ATTACKERS = ("deconv", "fc", "sparse_fc", "resdec", "mean_image")
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def _model(i: int) -> dict:
    """Models in groups of 10, as a grid sweep has them: per (seed, learning rate) one
    undefended model and 3 partitions × 3 λ defended ones."""
    group, j = divmod(i, 10)
    lam = 0.0 if j == 0 else (0.1, 0.3, 1.0)[(j - 1) // 3]
    return {
        "model_id": f"m{i:06d}",
        "trial_id": f"t{i}",
        "seed": group % 5,
        "dataset": "lfw",
        "arch": "face_cnn",
        "partition": None if lam == 0 else ("pool1", "pool2", "pool3")[(j - 1) % 3],
        "recipe": "fast",
        "lam": lam,
        "defenders": "" if lam == 0 else "deconv",
        "distance": "ssim",
        "defense": "none" if lam == 0 else "partition",
        "epochs": 30,
        "lr": 2e-3 * (1 + group // 5),
        "batch_size": 32,
        "test_acc": 0.85 + 0.001 * (i % 50),
        "n_test": 474,
        "train_acc": 0.95,
        "final_task_loss": 0.3,
        "final_distance": 0.4,
        "status": "ok",
        "train_seconds": 700.0,
        "started_at": NOW,
        "finished_at": NOW,
        "config_json": "{}",
        **provenance(),
    }


def _attacks(i: int, rng: np.random.Generator) -> list[tuple[str, dict]]:
    m = _model(i)
    out = []
    for a, attacker in enumerate(ATTACKERS):
        partition = m["partition"] or ("pool1", "pool2", "pool3")[a % 3]
        ssim = rng.uniform(0.3, 0.9, 64)
        row = {
            "model_id": m["model_id"],
            "attack_id": f"a{i:06d}x{a}",
            "attacker": attacker,
            "partition": partition,
            "attacker_data": "train",
            "attacker_fraction": 1.0,
            "mse": 0.02,
            "ssim": float(ssim.mean()),
            "psnr": 18.0,
            "ssim_images": ssim.tolist(),
            "mse_images": [0.02] * 64,
            "dpd": None,
            "dpd_reason": "no LPIPS weights offline",
            "reprint_acc": 0.5,
            "n_eval": 64,
            "best_epoch": 9,
            "train_seconds": 200.0,
            "status": "ok",
            "host": "h",
            "finished_at": NOW,
        }
        out.append((row["attack_id"], row))
    return out


def _write_range(args: tuple[str, int, int]) -> None:
    root, lo, hi = args
    store = ResultStore(root)
    rng = np.random.default_rng(lo)
    for i in range(lo, hi):
        m = _model(i)
        store.write("models", SWEEP, m["model_id"], [m])
        store.write(
            "epochs",
            SWEEP,
            m["model_id"],
            [
                {
                    "model_id": m["model_id"],
                    "epoch": 30,
                    "task_loss": 0.3,
                    "train_acc": 0.95,
                    "test_acc": m["test_acc"],
                    "seconds": 20.0,
                }
            ],
        )
        for key, row in _attacks(i, rng):
            store.write("attacks", SWEEP, key, [row])


def build(root: str, n: int, workers: int) -> float:
    t0 = time.perf_counter()
    chunks = [(root, lo, min(n, lo + 250)) for lo in range(0, n, 250)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_range, chunks))
    return time.perf_counter() - t0


def _timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{run.stderr[-3000:]}")
    return time.perf_counter() - t0


def trial_reads(root: str, i: int) -> tuple[float, dict]:
    """One trial's reads of model ``i`` (as farm.trial does), timed and counted."""
    from pp_cluster.results.fs import counting, resolve

    fs, base = resolve(root)
    fs, calls = counting(fs)
    store = ResultStore(base, filesystem=fs)
    keys = [f"a{i:06d}x{a}" for a in range(len(ATTACKERS))]
    t0 = time.perf_counter()
    store.read("models", SWEEP, keys=[f"m{i:06d}"])
    rows = store.read("attacks", SWEEP, keys=keys)
    seconds = time.perf_counter() - t0
    assert len(rows) == len(keys), len(rows)
    return seconds, dict(calls)


def measure(root: str, n: int, env: dict, label: str) -> list[dict]:
    page = tempfile.mktemp(suffix=".md")
    out = []
    for phase in ("before", "after"):
        if phase == "after":
            t_compact = _timed([sys.executable, "-m", "pp_cluster.cli", "compact", root], env)
        row = {
            "store": label,
            "models": n,
            "phase": f"{phase} compaction",
            "status_s": _timed([sys.executable, "-m", "pp_cluster.cli", "status", root], env),
            "report_s": _timed([sys.executable, "-m", "analysis.report", root, "--markdown", page], env),
        }
        seconds, calls = trial_reads(root, n // 2)
        row.update(trial_reads_ms=1000 * seconds, **{f"trial_{k}": v for k, v in calls.items()})
        if phase == "after":
            row["compact_s"] = t_compact
        out.append(row)
        print(row, flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--s3", action="store_true", help="also on a local S3 server (moto)")
    p.add_argument("--s3-models", type=int, default=1000)
    p.add_argument("--quick", action="store_true", help="500 models locally, 100 on S3")
    args = p.parse_args()
    if args.quick:
        args.models, args.s3_models = 500, 100
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = f"{tmp}/results"
        print(
            f"writing {args.models} models, {5 * args.models} attacks: {build(root, args.models, args.workers):.0f} s",
            flush=True,
        )
        rows += measure(root, args.models, env, "local disk")
    if args.s3:
        import boto3
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        s3_env = {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": "127.0.0.1,localhost",
        }
        os.environ.update(s3_env)
        env.update(s3_env)
        boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"]).create_bucket(Bucket="scale")
        root = "s3://scale/results"
        print(
            f"writing {args.s3_models} models to S3: {build(root, args.s3_models, args.workers):.0f} s",
            flush=True,
        )
        rows += measure(root, args.s3_models, env, "S3 (moto, local)")
        server.stop()
    cols = [
        "store",
        "models",
        "phase",
        "status_s",
        "report_s",
        "trial_reads_ms",
        "trial_list",
        "trial_info",
        "trial_open",
        "compact_s",
    ]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print(
            "| "
            + " | ".join(f"{r[c]:.2f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols)
            + " |"
        )
    local = [r for r in rows if r["store"] == "local disk"]
    print(
        f"\nratio status before/after compaction: {local[0]['status_s'] / local[1]['status_s']:.2f}; "
        f"report: {local[0]['report_s'] / local[1]['report_s']:.2f}"
    )


if __name__ == "__main__":
    main()
