"""Confidence intervals for the numbers the analysis shows, and what each method is called.

Three sources of uncertainty, three methods: seeds (training noise) get a Student t interval
over the per-seed values; a single run's image metrics get a percentile bootstrap over its
evaluation images; a single run's accuracy or count gets a Wilson score interval from its
binomial count. Bootstraps use a fixed seed, so a report built twice is identical.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import stdtrit

LEVEL = 0.95
N_RESAMPLES = 2000
BOOTSTRAP_SEED = 0

# Short names of the methods (the ``*_ci_method`` columns) and how the report spells them out.
METHODS = {
    "t": "Student t interval over seeds (mean ± t·s/√n)",
    "bootstrap": f"percentile bootstrap over the evaluation images ({N_RESAMPLES} resamples, fixed seed)",
    "wilson": "Wilson score interval of a binomial proportion (count out of the images scored)",
    "newcombe": "Newcombe's hybrid score interval of a difference of two proportions (from the two Wilson "
    "intervals; unpaired, so conservative for two models scored on the same images)",
}


def t_crit(n: pd.Series, level: float = LEVEL) -> pd.Series:
    """Two-sided t quantile for samples of size ``n``; null where n < 2 (no spread to estimate)."""
    dof = n.astype("float64") - 1
    return pd.Series(stdtrit(dof.where(dof >= 1), 0.5 + level / 2), index=n.index, dtype="float64")


def wilson(successes: float, n: float, level: float = LEVEL) -> tuple[float, float]:
    """Interval of a proportion ``successes / n``; ``successes`` may be a rate·n that is not quite
    an integer (rounded). (nan, nan) when n is unknown or zero."""
    if _missing(successes) or _missing(n) or n < 1:
        return math.nan, math.nan
    ci = stats.binomtest(int(round(successes)), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def newcombe(k1: float, n1: float, k2: float, n2: float, level: float = LEVEL) -> tuple[float, float]:
    """Interval of p1 − p2 for two independent proportions (Newcombe 1998, method 10)."""
    (l1, u1), (l2, u2) = wilson(k1, n1, level), wilson(k2, n2, level)
    if math.isnan(l1) or math.isnan(l2):
        return math.nan, math.nan
    p1, p2 = round(k1) / n1, round(k2) / n2
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def _missing(x: float) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


def strongest_of_means(how: str) -> Callable[..., np.ndarray]:
    """The bootstrap statistic "the strongest attacker's mean": per resample the max (or min) over
    the samples' means. With one sample it is that sample's mean."""
    pick = {"max": np.max, "min": np.min}[how]

    def statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        return pick(np.stack([s.mean(axis=axis) for s in samples]), axis=0)

    return statistic


def paired_images(lists: Sequence[object]) -> list[np.ndarray] | None:
    """Per-image values of attacks on the same evaluation images as float arrays, or None when any
    is missing or they differ in length (then they cannot be resampled together)."""
    arrays = [None if _missing(x) else np.asarray(x, dtype="float64") for x in lists]
    if (
        not arrays
        or any(a is None for a in arrays)
        or len({len(a) for a in arrays}) != 1
        or len(arrays[0]) < 2
    ):
        return None
    return arrays


@functools.lru_cache(maxsize=64)
def _resample_weights(n: int) -> np.ndarray:
    """Per resample, how often each of ``n`` images is drawn, divided by ``n`` (N_RESAMPLES × n):
    the draws scipy.stats.bootstrap makes (paired, all resamples at once) from the fixed seed,
    made once per ``n``. A resample's mean is then one row of ``weights @ values``."""
    idx = np.random.default_rng(BOOTSTRAP_SEED).integers(0, n, (N_RESAMPLES, n))
    counts = np.zeros((N_RESAMPLES, n))
    np.add.at(counts, (np.arange(N_RESAMPLES)[:, None], idx), 1.0)
    counts /= n
    counts.setflags(write=False)
    return counts


def bootstrap(
    samples: Sequence[np.ndarray], statistic: Callable[..., np.ndarray], level: float = LEVEL
) -> tuple[float, float]:
    """Percentile interval of ``statistic`` with the image indices resampled jointly for all
    ``samples`` (paired: every attack, of one model or of two, was scored on the same images).

    ``statistic`` must depend on the samples only through their means (every statistic here
    does: ``strongest_of_means`` and differences of two of them); it is called with each
    resample's means as ``(N_RESAMPLES, 1)`` arrays. The interval is the one
    ``scipy.stats.bootstrap(..., paired=True, method="percentile")`` gives with the fixed seed
    (tests/unit/test_analysis.py compares them), without its per-call set-up: the resamples depend only on the number of
    images, so they are drawn once, and every resample's mean is one matrix product."""
    weights = _resample_weights(len(samples[0]))
    means = weights @ np.stack([np.asarray(s, dtype="float64") for s in samples], axis=1)  # resamples × k
    theta = statistic(*(means[:, [j]] for j in range(means.shape[1])), axis=-1)
    alpha = (1 - level) / 2
    lo, hi = np.percentile(theta, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi)
