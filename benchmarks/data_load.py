"""Cold vs warm load time of the real LFW task (what every Ray worker pays per trial).

Cold: a fresh, empty cache folder, so every JPEG is decoded. Warm: the same call again,
served from the uint8 .npz cache. Targets on 2 cores: warm <= 1 s, cold <= 60 s. The OS
page cache is not dropped, so "cold" means cold for our cache, not for the disk.

    python benchmarks/data_load.py [--root ../shared/data/lfw] [--repeats 3] [--disjoint]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from pp_cluster.data import load_dataset

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = Path(os.environ.get("PP_SHARED_DATA", REPO.parent / "shared" / "data")) / "lfw"


def timed_load(root: Path, options: dict) -> tuple[float, dict]:
    start = time.perf_counter()
    ds = load_dataset("lfw", root, **options)
    return time.perf_counter() - start, ds.meta


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="LFW folder or its parent")
    p.add_argument("--repeats", type=int, default=3, help="warm loads; the median is reported")
    p.add_argument("--disjoint", action="store_true", help="also load the disjoint split (3000 images)")
    args = p.parse_args()
    options = {"min_faces": 30, "size": 64, "disjoint": args.disjoint}

    with tempfile.TemporaryDirectory(prefix="pp_cache_bench_") as cache:
        os.environ["PP_CLUSTER_CACHE"] = cache
        cold, meta = timed_load(args.root, options)
        assert not meta["cache_hit"], "a fresh cache folder must not hit"
        warm_runs = []
        for _ in range(args.repeats):
            t, meta = timed_load(args.root, options)
            assert meta["cache_hit"], "the second load must be served from the cache"
            warm_runs.append(t)
    warm = statistics.median(warm_runs)

    images = meta["n_train"] + meta["n_test"] + (meta["n_disjoint"] or 0)
    print(f"lfw {meta['source']}  options {options}  images {images}  cpus {os.cpu_count()}")
    print(f"{'load':<6}{'seconds':>10}{'target':>10}")
    print(f"{'cold':<6}{cold:>10.2f}{'<= 60':>10}")
    print(
        f"{'warm':<6}{warm:>10.2f}{'<= 1':>10}   (median of {args.repeats}: "
        + ", ".join(f"{t:.2f}" for t in warm_runs)
        + ")"
    )
    print(f"cold / warm = {cold / warm:.1f}x")


if __name__ == "__main__":
    main()
