"""Small helpers the benchmark scripts share: the LFW-like data, a machine line, tables.

The machines these run on are shared and noisy, so every script measures the things it
compares side by side in one process and reports ratios; the load average printed next
to a table says how noisy the run was.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PP_SHARED_DATA", REPO.parent / "shared" / "data"))
# The embedded stand-in for LFW at the paper's input size: 64x64 RGB (grey repeated).
LFW_SUBSET_64 = {"size": 64, "color": True}
LFW_REAL = {"min_faces": 30, "size": 64}


def lfw_like(data_root: Path | None) -> tuple[str, str | None, dict[str, Any]]:
    """(dataset, data_root, options): real LFW (34 people, 64x64) when a root is given,
    else scikit-image's embedded crops at 64x64 RGB, so the face CNN's shapes are the paper's."""
    if data_root is None:
        return "lfw-subset", None, dict(LFW_SUBSET_64)
    if not Path(data_root).exists():
        raise FileNotFoundError(f"--data-root {data_root} does not exist")
    return "lfw", str(data_root), dict(LFW_REAL)


def enter_repo_root() -> None:
    """Ray workers start in the driver's working directory; started from benchmarks/, they
    import ``pp_cluster`` as an empty namespace package (the editable install's finder loses
    to the directory on sys.path). Scripts that start Ray call this first."""
    os.chdir(REPO)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} {five:.1f} {fifteen:.1f}"


def machine_line() -> str:
    """Host, cores and load average: the context every number in a table needs."""
    return (
        f"{time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  {os.cpu_count()} cpus  "
        f"load average {load_average()}"
    )


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A Markdown table, so the printed output pastes straight into benchmarks/README.md."""

    def cell(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(cell(v) for v in r) + " |")


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds`` (wall clock, perf_counter)."""

    def __enter__(self) -> Timer:
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0


def fastest_cpu(fn, repeats: int) -> tuple[float, int]:
    """(fastest process-CPU ms, fewest minor page faults) of ``repeats`` calls of ``fn``."""
    import resource

    times, faults = [], []
    for _ in range(repeats):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return min(times) * 1e3, min(faults)
