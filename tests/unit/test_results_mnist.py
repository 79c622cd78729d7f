"""The MNIST results page (Tables I and II): Table I's shape check, the suite-vs-single
comparison paired by seed, the paper's tables beside ours, and docs/results_mnist.md in step with
the committed reference tables (docs/reference/mnist_cpu/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from test_analysis import model_row, scored_attack_row
from test_results_md import assert_page_matches_its_tables, section

from analysis.results_md import results_markdown
from analysis.tables import (
    Missing,
    best_defenders,
    falling_prefix,
    load,
    suite_vs_single,
    table_i,
    table_i_shape,
)
from pp_cluster.results.store import ResultStore

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "docs" / "reference" / "mnist_cpu"
PAGE = REPO / "docs" / "results_mnist.md"
T1, T2 = "mnist_t1", "mnist_t2"
SUITE = "mnist_d1,mnist_d2,mnist_d3,mnist_d4"
N = 40
# Table I: attacker -> mean SSIM per λ (0, 0.1, 0.3, 1); mnist_a1 falls over all four, mnist_a2
# rises at λ = 1 (so falls over three).
T1_SSIM = {"mnist_a1": (0.85, 0.80, 0.70, 0.60), "mnist_a2": (0.84, 0.79, 0.72, 0.75)}
LAMS = (0.0, 0.1, 0.3, 1.0)
# Table II at λ = 1: (single, suite) SSIM per seed; the suite is below for a1, above for a2.
T2_SSIM = {"mnist_a1": ((0.60, 0.50), (0.62, 0.49)), "mnist_a2": ((0.70, 0.74), (0.71, 0.78))}


def write_model(store, sweep, mid, seed, lam, defenders, acc=0.98) -> None:
    store.write(
        "models",
        sweep,
        mid,
        [
            model_row(
                sweep,
                mid,
                seed=seed,
                dataset="mnist",
                partition=None if lam == 0 else "fc2",
                lam=lam,
                defenders=defenders,
                defense="none" if lam == 0 else "partition",
                test_acc=acc,
                n_test=10000,
            )
        ],
    )


def write_attack(store, sweep, mid, attacker, ssim, rng) -> None:
    aid = f"{mid}-{attacker}"
    row = scored_attack_row(
        sweep, mid, aid, rng, ssim, 0.1 - ssim / 10, (0.05, 0.005), N, attacker=attacker, partition="fc2"
    )
    store.write("attacks", sweep, aid, [row])


def write_root(root: Path, skip: tuple[str, float] | None = None) -> None:
    """Both tables; ``skip`` = (attacker, λ) leaves that attacker's Table I attacks out."""
    store = ResultStore(str(root))
    rng = np.random.default_rng(3)
    for seed in (0, 1):
        for k, lam in enumerate(LAMS):
            mid = f"t1-l{lam:g}-s{seed}"
            write_model(store, T1, mid, seed, lam, "mnist_a1" if lam else "")
            for attacker, ssims in T1_SSIM.items():
                if (attacker, lam) != skip:
                    write_attack(store, T1, mid, attacker, ssims[k] + 0.004 * seed, rng)
            write_attack(store, T1, mid, "mean_image", 0.38, rng)
        for present, defenders, lam in (
            ("none", "", 0.0),
            ("single", "mnist_a1", 1.0),
            ("suite", SUITE, 1.0),
        ):
            mid = f"t2-{present}-s{seed}"
            write_model(store, T2, mid, seed, lam, defenders)
            for attacker, pair in T2_SSIM.items():
                ssim = 0.85 if present == "none" else pair[seed][present == "suite"]
                write_attack(store, T2, mid, attacker, ssim, rng)
            write_attack(store, T2, mid, "mean_image", 0.38, rng)


@pytest.fixture
def root(tmp_path) -> Path:
    write_root(tmp_path / "tables")
    return tmp_path / "tables"


def test_falling_prefix():
    assert falling_prefix([]) == 0
    assert falling_prefix([0.5]) == 1
    assert falling_prefix([0.5, 0.4, 0.4, 0.3]) == 2  # equal is not a fall
    assert falling_prefix([0.5, 0.4, 0.3, 0.2]) == 4
    assert falling_prefix([0.5, float("nan"), 0.3]) == 1  # no value ends the run
    assert falling_prefix([float("nan"), 0.4]) == 0


def test_a_missing_lambda_ends_the_count(tmp_path):
    write_root(tmp_path / "t", skip=("mnist_a1", 0.3))
    t = table_i_shape(load(str(tmp_path / "t"), T1)).set_index("attacker")
    assert t.loc["mnist_a1", "lams"] == LAMS  # the configuration's grid, not the attacker's
    assert t.loc["mnist_a1", "n_decreasing"] == 2 and np.isnan(t.loc["mnist_a1", "ssim"][2])


def test_table_i_shape_counts_the_strict_falls(root):
    t = table_i_shape(load(str(root), T1)).set_index("attacker")
    assert "mean_image" not in t.index  # the baseline is not an attacker
    assert t.loc["mnist_a1", "n_decreasing"] == 4 and t.loc["mnist_a1", "decreasing_to"] == 1.0
    assert t.loc["mnist_a2", "n_decreasing"] == 3 and t.loc["mnist_a2", "decreasing_to"] == 0.3
    assert t.loc["mnist_a1", "lams"] == LAMS
    # the means are the seeds' means of the attacks' SSIM
    assert t.loc["mnist_a1", "ssim"][1] == pytest.approx(0.80 + 0.002, abs=1e-9)


def test_a_sweep_at_one_lambda_is_in_table_ii_not_table_i(root):
    """A Table II sweep run at its λ alone (single and suite, no undefended model) has nothing
    to fall in Table I: it is left out there and compared in the suite-vs-single table."""
    store, rng = ResultStore(str(root)), np.random.default_rng(4)
    for seed in (0, 1):
        for present, defenders in (("single", "mnist_a1"), ("suite", SUITE)):
            mid = f"t2r-{present}-s{seed}"
            write_model(store, "mnist_t2r", mid, seed, 1.0, defenders)
            for attacker, pair in T2_SSIM.items():
                write_attack(store, "mnist_t2r", mid, attacker, pair[seed][present == "suite"], rng)
    res = load(str(root))
    assert set(table_i(res)["sweep"]) == {T1, T2}
    assert set(table_i_shape(res)["sweep"]) == {T1, T2}
    assert set(suite_vs_single(res)["sweep"]) == {T2, "mnist_t2r"}


def test_best_defenders_are_the_shares_of_the_batches_each_member_was_best(root):
    store = ResultStore(str(root))
    # the T2 suite models' epochs: 10 batches per epoch, two epochs; seed 0 then seed 1
    counts = {0: ([4, 3, 2, 1], [6, 2, 2, 0]), 1: ([2, 2, 3, 3], [8, 0, 1, 1])}
    for seed, per_epoch in counts.items():
        rows = [
            {"model_id": f"t2-suite-s{seed}", "epoch": e, "task_loss": 0.1, "best_defender_counts": c}
            for e, c in enumerate(per_epoch, start=1)
        ]
        store.write("epochs", T2, f"t2-suite-s{seed}", rows)
    store.write("epochs", T2, "t2-single-s0", [{"model_id": "t2-single-s0", "epoch": 1, "task_loss": 0.1}])
    b = best_defenders(load(str(root))).set_index("defender")
    assert list(b.index) == SUITE.split(",")  # the suite's order
    assert b.loc["mnist_d1", "share_final_mean"] == pytest.approx((0.6 + 0.8) / 2)
    assert b.loc["mnist_d1", "share_all_mean"] == pytest.approx((10 / 20 + 10 / 20) / 2)
    assert b.loc["mnist_d2", "share_final_n"] == 2
    half = stats.t.ppf(0.975, 1) * np.std([0.6, 0.8], ddof=1) / np.sqrt(2)
    assert b.loc["mnist_d1", "share_final_ci_hi"] == pytest.approx(0.7 + half)
    md = results_markdown(str(root), root.parent / "results_mnist.md")
    best = section(md, "### Which suite member was the best defender")
    assert "| 1 | mnist_d1,mnist_d2,mnist_d3,mnist_d4 | mnist_d1 | 2 | 70.0 [" in best


def test_best_defenders_need_the_counts(root):
    with pytest.raises(Missing, match="best_defender_counts"):
        best_defenders(load(str(root)))  # the fixture writes no epochs


def test_suite_vs_single_pairs_by_seed(root):
    d = suite_vs_single(load(str(root), T2))
    d = d[d["metric"] == "ssim"].set_index("attacker")
    for attacker, pairs in T2_SSIM.items():
        diffs = [suite - single for single, suite in pairs]
        half = stats.t.ppf(0.975, 1) * np.std(diffs, ddof=1) / np.sqrt(2)
        assert d.loc[attacker, "n_pairs"] == 2
        assert d.loc[attacker, "diff"] == pytest.approx(np.mean(diffs), abs=1e-9)
        assert d.loc[attacker, "diff_ci_lo"] == pytest.approx(np.mean(diffs) - half, abs=1e-9)
    assert d.loc["mnist_a1", "diff"] < 0 < d.loc["mnist_a2", "diff"]
    assert set(d["defenders"]) == {SUITE} and set(d["defenders_single"]) == {"mnist_a1"}


def test_mnist_page_shows_tables_i_and_ii_beside_the_paper(root, tmp_path):
    md = results_markdown(str(root), tmp_path / "results_mnist.md")
    assert "## Figure 5" not in md and "## Table III" not in md  # the LFW page's sections
    shape = section(md, "### Table I's shape")
    assert "**1 of 2 attackers**' mean SSIM falls strictly over 4 or more λ values" in shape
    assert "| mnist_a2 | 0.842 | 0.792 | 0.722 | 0.752 | 3 λ values (0 … 0.3) |" in shape
    suite = section(md, "### The defender suite against the single defender")
    assert "**The suite's mean SSIM is below the single defender's for 1 of 2 attackers**" in suite
    paper = section(md, "### The paper's Table I")
    assert "| model accuracy, % | 98.4 | 98.2 | 98.2 | 98.1 | 98.1 | 98.1 |" in paper
    assert "3 of 8 attackers' SSIM falls strictly over 4 or more λ values" in paper
    assert "0.076" in section(md, "### The paper's Table II")  # attacker ①'s SSIM with 4 defenders
    assert "data_range 255" in section(md, "## How our λ relates to the paper's")
    assert md == results_markdown(str(root), tmp_path / "results_mnist.md")  # deterministic


def test_committed_mnist_page_matches_the_reference_tables():
    assert_page_matches_its_tables(REFERENCE, PAGE)
