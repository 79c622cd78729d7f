"""The CIFAR-10 results page: Figure 5 (f–j) and Section V-D(1)'s three claims checked on
differences paired by seed (accuracy cost under 2 points, the defense lowers the strongest
attacker's SSIM, deeper partitions leak less)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from test_analysis import model_row, scored_attack_row
from test_results_md import assert_page_matches_its_tables, row, section

from analysis.results_md import results_markdown
from analysis.tables import figure5_directions, load
from pp_cluster.results.store import ResultStore

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "docs" / "reference" / "cifar_cpu"
PAGE = REPO / "docs" / "results_cifar.md"
SWEEP = "cifar_t"
N = 40
PARTS = ("pool1", "pool2", "pool3")
# Per seed: test accuracy of the undefended model and of the λ = 0.1 model at each partition.
ACC_NONE = (0.80, 0.81)
ACC_DEF = {"pool1": (0.79, 0.80), "pool2": (0.77, 0.78), "pool3": (0.80, 0.80)}  # pool2 costs 3 points
# Per seed: the strongest attacker's SSIM, undefended and defended, at each partition. The defense
# lowers it at pool1 and pool3, not at pool2; defended, pool2 leaks more than pool1.
SSIM_NONE = {"pool1": (0.80, 0.82), "pool2": (0.70, 0.72), "pool3": (0.60, 0.61)}
SSIM_DEF = {"pool1": (0.75, 0.76), "pool2": (0.78, 0.80), "pool3": (0.50, 0.52)}


def _model(store, mid, seed, part, acc) -> None:
    row = model_row(
        SWEEP,
        mid,
        seed=seed,
        dataset="cifar10",
        arch="vgg19_bn",
        partition=part,
        lam=0.1 if part else 0.0,
        defenders="deconv" if part else "",
        defense="partition" if part else "none",
        test_acc=acc,
        n_test=2000,
    )
    store.write("models", SWEEP, mid, [row])


def _attacks(store, mid, part, best, rng) -> None:
    # the strongest attacker at ``best``, a weaker one below it, and the mean-image baseline
    for attacker, ssim in (("resdec", best), ("deconv", best - 0.05), ("mean_image", 0.2)):
        aid = f"{mid}-{part}-{attacker}"
        a = scored_attack_row(
            SWEEP, mid, aid, rng, ssim, 0.05 - ssim / 20, (0.04, 0.003), N, attacker=attacker, partition=part
        )
        store.write("attacks", SWEEP, aid, [a])


@pytest.fixture
def root(tmp_path) -> Path:
    store = ResultStore(str(tmp_path / "tables"))
    rng = np.random.default_rng(5)
    for seed in (0, 1):
        _model(store, f"none-s{seed}", seed, None, ACC_NONE[seed])
        for part in PARTS:
            _attacks(store, f"none-s{seed}", part, SSIM_NONE[part][seed], rng)
            _model(store, f"{part}-s{seed}", seed, part, ACC_DEF[part][seed])
            _attacks(store, f"{part}-s{seed}", part, SSIM_DEF[part][seed], rng)
    return tmp_path / "tables"


def _t(diffs) -> tuple[float, float, float]:
    mean, half = (
        np.mean(diffs),
        stats.t.ppf(0.975, len(diffs) - 1) * np.std(diffs, ddof=1) / np.sqrt(len(diffs)),
    )
    return mean, mean - half, mean + half


def test_directions_are_paired_by_seed_and_judged_against_the_claims(root):
    t = figure5_directions(load(str(root)))
    d = t[t["defense"] == "partition"].set_index(["check", "partition"])
    for part in PARTS:
        acc = d.loc[("accuracy", part)]
        mean, lo, hi = _t([a - u for a, u in zip(ACC_DEF[part], ACC_NONE)])
        assert acc["diff"] == pytest.approx(mean, abs=1e-9) and acc["diff_ci_lo"] == pytest.approx(
            lo, abs=1e-9
        )
        assert acc["holds"] == (part != "pool2")  # pool2 costs 3 points: more than the 2 allowed
        ssim = d.loc[("defense", part)]
        assert ssim["n_pairs"] == 2 and ssim["seeds"] == "0,1"
        assert bool(ssim["holds"]) == (part != "pool2")
    # depth: the same setting and seed at the deeper partition minus the shallower one
    deeper = d.loc[("depth", "pool2 − pool1")]
    mean, lo, hi = _t([b - a for a, b in zip(SSIM_DEF["pool1"], SSIM_DEF["pool2"])])
    assert deeper["diff"] == pytest.approx(mean, abs=1e-3) and not deeper["holds"]
    assert bool(d.loc[("depth", "pool3 − pool2"), "holds"])
    # the undefended models are checked for depth too (their leakage falls with depth here)
    none = t[t["defense"] == "none"]
    assert set(none["check"]) == {"depth"} and none["holds"].all()
    # "certain" only when the whole interval is on the claimed side of the bound
    assert bool(d.loc[("accuracy", "pool1"), "certain"])  # [-1.0, -1.0] points: above -2
    assert not bool(d.loc[("accuracy", "pool3"), "certain"])  # its interval reaches below -2 points
    assert not bool(d.loc[("defense", "pool1"), "certain"]) and bool(d.loc[("defense", "pool3"), "certain"])


def test_cifar_page_checks_figure_5_f_to_j(root, tmp_path):
    md = results_markdown(str(root), tmp_path / "results_cifar.md")
    assert "## Table III" not in md and "## Table I:" not in md  # the LFW and MNIST pages' sections
    assert "### (f) Test accuracy, %" in md and "### (h) Worst-case SSIM" in md
    assert "Paper (Figure 5, CIFAR-10; no values printed)" in md
    checks = section(md, "### Figure 5 (f–j)'s directions, checked")
    claim = "accuracy cost under 2 points: defended − undefended test accuracy, points"
    assert row(checks, claim, "λ=0.1 (deconv)", "pool2")[3:] == [
        "2 (0,1)",
        "-3.0 [-3.0, -3.0]",
        "-1.0",
        "**no**",
        "no",
    ]
    assert row(checks, claim, "λ=0.1 (deconv)", "pool1")[4:] == ["-1.0 [-1.0, -1.0]", "-1.6", "yes", "yes"]
    depth = "deeper partitions leak less: worst-case SSIM, deeper − shallower partition"
    assert row(checks, depth, "λ=0.1 (deconv)", "pool2 − pool1")[-2:] == ["**no**", "no"]
    assert "CIFAR-10 (50,000 training / 10,000 test images)" in section(md, "## The paper's setting")
    assert md == results_markdown(str(root), tmp_path / "results_cifar.md")  # deterministic


def test_committed_cifar_page_matches_the_reference_tables():
    assert_page_matches_its_tables(REFERENCE, PAGE)
