"""Analysis of the farm's Parquet tables: worst-case attacks, seed statistics and intervals,
paired defended-vs-undefended differences, the accuracy–privacy frontier, the paper's tables
and figures, a report and a reproducible results page.

    from analysis import load, worst_case, aggregate, frontier, hypervolume
    res = load("results/")                      # or "s3://bucket/prefix"
    mw = res.models_with_worst()                # (model, partition) + strongest attacker per metric
    frontier(mw[mw.status == "ok"])             # Pareto set of (test_acc ↑, ssim ↓)
    paired_differences(res)                     # defended − undefended, paired by seed

    python -m analysis.report results/ --out report/
    python -m analysis.report docs/reference/lfw_cpu --markdown docs/results_lfw.md
"""

from analysis.tables import (
    CI_METHOD,
    Missing,
    Results,
    aggregate,
    frontier,
    hypervolume,
    load,
    paired_differences,
    pareto_mask,
    summarise,
    worst_case,
)

__all__ = [
    "CI_METHOD",
    "Missing",
    "Results",
    "aggregate",
    "frontier",
    "hypervolume",
    "load",
    "paired_differences",
    "pareto_mask",
    "summarise",
    "worst_case",
]
