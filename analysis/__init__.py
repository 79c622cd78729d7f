"""Analysis of the farm's Parquet tables: worst-case attacks, seed statistics, the
accuracy–privacy frontier, the paper's tables and figures, and a Markdown report.

    from analysis import load, worst_case, aggregate, frontier, hypervolume
    res = load("results/")                      # or "s3://bucket/prefix"
    mw = res.models_with_worst()                # models + strongest attacker per metric
    frontier(mw[mw.status == "ok"])             # Pareto set of (test_acc ↑, ssim ↓)

    python -m analysis.report results/ --out report/
"""

from analysis.tables import (
    CI_METHOD, Missing, Results, aggregate, frontier, hypervolume, load, pareto_mask, worst_case,
)

__all__ = ["CI_METHOD", "Missing", "Results", "aggregate", "frontier", "hypervolume", "load", "pareto_mask",
           "worst_case"]
