"""analysis/: worst-case attacks, seed statistics and intervals, paired differences, Pareto set
and hypervolume, and the report, on a small sweep written through the farm's own ResultStore
(no Ray)."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from analysis import aggregate, frontier, hypervolume, load, paired_differences, pareto_mask, worst_case
from analysis.report import build_report
from analysis.tables import (
    Missing,
    attack_intervals,
    figure4_data,
    figure5_data,
    figure7_data,
    table_i,
    table_ii,
    table_iii,
)
from analysis.uncertainty import N_RESAMPLES
from pp_cluster.results.store import ResultStore, provenance

SWEEP = "lfw-mini"
T_975 = {1: 12.706204736174698, 2: 4.302652729749464}  # Student t 0.975 quantiles (tables)
N_TEST = 50  # test images behind each accuracy
N_IMAGES = 20  # evaluation images behind each attack's per-image SSIM/MSE

# (model, partition, λ, defenders, seed, test acc, status, defense, ε). The undefended models
# A and B (one per seed) have no partition: they are attacked at pool1 and at pool2.
MODELS = [
    ("A", None, 0.0, "", 0, 0.80, "ok", "none", None),
    ("B", None, 0.0, "", 1, 0.90, "ok", "none", None),
    ("C", "pool1", 0.1, "deconv", 0, 0.70, "ok", "partition", None),
    ("D", "pool1", 0.1, "deconv", 1, 0.74, "ok", "partition", None),
    ("F", "pool2", 0.1, "deconv", 0, 0.82, "ok", "partition", None),
    ("G", "pool2", 0.1, "deconv,fc", 0, 0.78, "ok", "partition", None),
    ("H", "pool2", 0.1, "deconv", 1, None, "diverged", "partition", None),
    ("P1", None, 0.0, "", 0, 0.30, "ok", "dp_pixelation", 1.0),
    ("P2", None, 0.0, "", 0, 0.60, "ok", "dp_pixelation", 10.0),
]
# (model, partition attacked) -> {attacker: (ssim, mse, psnr, dpd, reprint_acc, (n_cg, n_df, n_ti) or None)}
ATTACKS = {
    ("A", "pool1"): {
        "deconv": (0.80, 0.020, 17.0, 0.30, 0.50, (40, 45, 50)),
        "fc": (0.70, 0.030, 18.0, 0.20, 0.40, (42, 44, 50)),
        "sparse_fc": (0.60, 0.010, 16.0, None, 0.60, None),
    },
    ("B", "pool1"): {
        "deconv": (0.78, 0.022, 17.5, 0.31, 0.55, (38, 46, 50)),
        "fc": (0.72, 0.028, 17.0, 0.25, 0.45, None),
        "sparse_fc": (0.50, 0.040, 15.0, None, 0.35, None),
    },
    ("A", "pool2"): {
        "deconv": (0.60, 0.030, 16.0, 0.35, 0.40, (30, 35, 50)),
        "fc": (0.65, 0.029, 16.2, 0.33, 0.42, None),
        "sparse_fc": (0.58, 0.033, 15.8, None, 0.38, None),
    },
    ("B", "pool2"): {
        "deconv": (0.62, 0.031, 16.1, 0.36, 0.41, None),
        "fc": (0.66, 0.027, 16.4, 0.34, 0.43, None),
        "sparse_fc": (0.57, 0.035, 15.5, None, 0.37, None),
    },
    ("C", "pool1"): {
        "deconv": (0.50, 0.050, 14.0, 0.40, 0.30, (20, 25, 50)),
        "fc": (0.55, 0.045, 14.5, 0.42, 0.20, None),
        "sparse_fc": (0.40, 0.060, 13.0, None, 0.10, None),
    },
    ("D", "pool1"): {
        "deconv": (0.45, 0.055, 13.5, 0.45, 0.25, None),
        "fc": (0.52, 0.047, 14.2, 0.41, 0.22, None),
        "sparse_fc": (0.41, 0.058, 13.2, None, 0.12, None),
    },
    ("F", "pool2"): {
        "deconv": (0.35, 0.070, 12.0, 0.50, 0.10, (10, 12, 50)),
        "fc": (0.30, 0.075, 11.5, 0.52, 0.08, None),
        "sparse_fc": (0.33, 0.072, 11.8, None, 0.09, None),
    },
    ("G", "pool2"): {
        "deconv": (0.20, 0.090, 10.0, 0.60, 0.05, None),
        "fc": (0.25, 0.085, 10.5, 0.58, 0.06, None),
        "sparse_fc": (0.22, 0.088, 10.2, None, 0.05, None),
    },
    ("P1", None): {"dp_pixelation": (0.10, 0.120, 9.0, 0.70, 0.02, None)},
    ("P2", None): {"dp_pixelation": (0.40, 0.060, 12.5, 0.50, 0.20, None)},
}
# The mean-image baseline beside every attack but the DP ones, made "stronger" than every
# attacker on every metric: it must still never be chosen as the worst case.
BASELINE = (0.95, 0.001, 30.0, 0.05, 0.95, (49, 50, 50))
RECONSTRUCTED = ("A-pool1-deconv", "C-pool1-deconv", "A-pool2-deconv", "F-pool2-deconv")


NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
PROV = {k: v for k, v in provenance().items() if k != "git_sha"}


def model_row(sweep: str, model_id: str, **kw) -> dict:
    """A models row as the farm writes it (undefended unless ``kw`` says otherwise)."""
    return {
        "sweep": sweep,
        "model_id": model_id,
        "trial_id": f"t-{model_id}",
        "seed": 0,
        "dataset": "digits",
        "arch": "mnist_mlp",
        "partition": None,
        "recipe": "fast",
        "lam": 0.0,
        "defenders": "",
        "distance": "ssim",
        "defense": "none",
        "epochs": 3,
        "lr": 0.01,
        "batch_size": 32,
        "status": "ok",
        "train_seconds": 10.0,
        "started_at": NOW,
        "finished_at": NOW,
        "config_json": "{}",
        **PROV,
        **kw,
    }


def attack_row(sweep: str, model_id: str, attack_id: str, **kw) -> dict:
    return {
        "sweep": sweep,
        "model_id": model_id,
        "attack_id": attack_id,
        "attacker_arch": kw.get("attacker"),
        "partition": "fc2",
        "attacker_data": "train",
        "attacker_fraction": 1.0,
        "n_eval": 50,
        "best_epoch": 4,
        "train_seconds": 2.0,
        "status": "ok",
        "finished_at": NOW,
        **kw,
    }


def per_image(rng: np.random.Generator, mean: float, spread: float, n: int = N_IMAGES) -> list[float]:
    """``n`` per-image values whose mean is ``mean`` (up to rounding): what a scalar averages."""
    z = rng.standard_normal(n)
    return list(mean + spread * (z - z.mean()))


def scored_attack_row(
    sweep: str,
    model_id: str,
    attack_id: str,
    rng: np.random.Generator,
    ssim: float,
    mse: float,
    spread: tuple[float, float],
    n: int,
    **kw,
) -> dict:
    """An attacks row whose SSIM and MSE are the means of ``n`` per-image values drawn around
    ``ssim`` and ``mse`` (SSIM first, with ``spread`` = their standard deviations)."""
    ssim_images = per_image(rng, ssim, spread[0], n)
    mse_images = per_image(rng, mse, spread[1], n)
    return attack_row(
        sweep,
        model_id,
        attack_id,
        ssim=float(np.mean(ssim_images)),
        mse=float(np.mean(mse_images)),
        ssim_images=ssim_images,
        mse_images=mse_images,
        n_eval=n,
        **kw,
    )


def write_sweep(root: str) -> None:
    """A small LFW-like sweep: 2 partitions × λ {0, 0.1} × 2 seeds (one undefended model per seed,
    attacked at both partitions), a 2-defender suite, a diverged model, two DP-pixelation models,
    3 attackers and the mean-image baseline each (plus one failed attack), epochs, images."""
    store = ResultStore(root)
    rng = np.random.default_rng(0)
    for mid, part, lam, defenders, seed, acc, status, defense, eps in MODELS:
        config = {"partition": part, "lam": lam, "seed": seed, **({"epsilon": eps} if eps else {})}
        store.write(
            "models",
            SWEEP,
            mid,
            [
                model_row(
                    SWEEP,
                    mid,
                    seed=seed,
                    dataset="lfw-subset",
                    arch="face_cnn",
                    partition=part,
                    lam=lam,
                    defenders=defenders,
                    defense=defense,
                    test_acc=acc,
                    n_test=N_TEST,
                    train_acc=None if acc is None else acc + 0.05,
                    status=status,
                    diverged_epoch=2 if status == "diverged" else None,
                    error="loss is NaN at epoch 2" if status == "diverged" else None,
                    config_json=json.dumps(config),
                )
            ],
        )
        if status == "ok" and defense != "dp_pixelation":
            store.write(
                "epochs",
                SWEEP,
                mid,
                [
                    {
                        "sweep": SWEEP,
                        "model_id": mid,
                        "epoch": e,
                        "task_loss": 2.0 / (e + 1),
                        "distance": 0.5 - 0.1 * e,
                        "train_acc": acc - 0.1 / (e + 1),
                        "test_acc": acc - 0.2 / (e + 1),
                        "lr": 0.01,
                        "seconds": 1.0,
                    }
                    for e in range(3)
                ],
            )
    for (mid, part), zoo in ATTACKS.items():
        zoo = {**zoo, "mean_image": BASELINE} if part else zoo
        for attacker, (ssim, mse, psnr, dpd, reprint, gender) in zoo.items():
            aid = f"{mid}-{part}-{attacker}"
            row = attack_row(
                SWEEP,
                mid,
                aid,
                attacker=attacker,
                partition=part,
                mse=mse,
                ssim=ssim,
                psnr=psnr,
                dpd=dpd,
                dpd_reason=None if dpd is not None else "LPIPS weights not cached",
                reprint_acc=reprint,
                ssim_images=per_image(rng, ssim, 0.05),
                mse_images=per_image(rng, mse, mse / 4),
            )
            if gender:
                row.update(n_cg=gender[0], n_df=gender[1], n_ti=gender[2], gender_acc=gender[0] / gender[2])
            store.write("attacks", SWEEP, aid, [row])
            if aid in RECONSTRUCTED:
                # What the attacker pool calls: images in [0, 1], N×C×H×W, stored as PNGs.
                store.write_reconstructions(
                    SWEEP, mid, aid, rng.random((4, 1, 25, 25)), rng.random((4, 1, 25, 25))
                )
    # A failed attack with a (bogus) SSIM above every real one: it must not count as the worst case.
    store.write(
        "attacks",
        SWEEP,
        "A-broken",
        [
            attack_row(
                SWEEP,
                "A",
                "A-broken",
                attacker="broken",
                partition="pool1",
                ssim=0.99,
                mse=0.0,
                status="failed",
                error="CUDA OOM",
            )
        ],
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("results"))
    write_sweep(path)
    return path


@pytest.fixture(scope="module")
def res(root):
    return load(root)


N_ATTACKS = sum(len(zoo) + (part is not None) for (_, part), zoo in ATTACKS.items()) + 1  # + the failed one


def test_load_reads_the_store_and_rejects_bad_roots(root, res, tmp_path):
    assert len(res.models) == len(MODELS) and len(res.attacks) == N_ATTACKS and len(res.epochs) == 18
    joined = res.joined()
    assert len(joined) == N_ATTACKS and {"status", "status_model", "partition", "partition_model"} <= set(
        joined
    )
    assert joined.loc[joined["attack_id"] == "A-broken", "status"].item() == "failed"
    # The attack's partition is the one that counts; the undefended model has none of its own.
    a = joined[joined["model_id"] == "A"]
    assert set(a["partition"]) == {"pool1", "pool2"} and a["partition_model"].isna().all()
    assert load(root, sweep=SWEEP).models["model_id"].nunique() == len(MODELS)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="'other'.*lfw-mini"):
        load(root, sweep="other")


def test_worst_case_picks_the_strongest_successful_attacker(res):
    w = worst_case(res.attacks).set_index(["model_id", "partition"])
    a = w.loc[("A", "pool1")]
    # The failed "broken" row (SSIM 0.99, MSE 0) and the mean-image baseline are ignored.
    assert a["n_attacks"] == 3
    assert (a["ssim"], a["ssim_attacker"]) == (0.80, "deconv")
    assert (a["mse"], a["mse_attacker"]) == (0.010, "sparse_fc")
    assert (a["psnr"], a["psnr_attacker"]) == (18.0, "fc")
    assert (a["dpd"], a["dpd_attacker"]) == (0.20, "fc")
    assert (a["reprint_acc"], a["reprint_acc_attacker"]) == (0.60, "sparse_fc")
    assert w.loc[("C", "pool1"), "ssim_attacker"] == "fc" and w.loc[("G", "pool2"), "mse"] == 0.085
    assert w.loc[("A", "pool2"), "ssim"] == 0.65  # the same model, attacked at its other partition
    keys = w.reset_index()
    assert set(zip(keys["model_id"], keys["partition"].fillna("-"))) == {(m, p or "-") for m, p in ATTACKS}
    assert w["ssim"].dtype == "float64"
    # A metric nobody measured stays null rather than becoming a number.
    only_sparse = res.attacks[res.attacks["attacker"] == "sparse_fc"]
    assert worst_case(only_sparse)["dpd"].isna().all()
    with pytest.raises(ValueError, match="ssim"):
        worst_case(res.attacks.drop(columns=["ssim"]))


def test_mean_image_is_shown_beside_but_never_the_worst_case(res):
    w = worst_case(res.attacks)
    attackers = w[[c for c in w if c.endswith("_attacker")]].stack()
    assert "mean_image" not in set(attackers)
    attacked = w["partition"].notna()
    assert (w.loc[attacked, "ssim_baseline"] == BASELINE[0]).all() and w.loc[
        ~attacked, "ssim_baseline"
    ].isna().all()
    assert (w.loc[attacked, "mse_baseline"] == BASELINE[1]).all() and (w["ssim"] < BASELINE[0]).all()
    # Nor in what is built on the worst case: Table III's choice, the frontier, Figure 4.
    assert "mean_image" not in ",".join(table_iii(res)["attackers"])
    assert (frontier(res.models_with_worst().query("status == 'ok'"))["ssim"] < BASELINE[0]).all()
    assert "mean_image" not in set(figure4_data(res)["attacker"])
    # ... while the per-attacker tables list it as a row of its own.
    t1 = table_i(res).set_index(["partition", "lam", "attacker"])
    assert t1.loc[("pool1", 0.0, "mean_image"), "ssim_mean"] == pytest.approx(BASELINE[0])
    # With only the baseline, a model has no worst case at all (n_attacks 0, SSIM null).
    only = worst_case(res.attacks[res.attacks["attacker"] == "mean_image"])
    assert (
        (only["n_attacks"] == 0).all() and only["ssim"].isna().all() and only["ssim_baseline"].notna().all()
    )


def test_an_undefended_model_shows_up_at_every_partition(res):
    mw = res.models_with_worst()
    a = mw[mw["model_id"] == "A"]
    assert sorted(a["partition"]) == ["pool1", "pool2"] and a["partition_model"].isna().all()
    assert a.set_index("partition")["ssim"].to_dict() == {"pool1": 0.80, "pool2": 0.65}
    assert (mw["model_id"] == "C").sum() == 1 and mw.loc[mw["model_id"] == "C", "partition"].item() == "pool1"
    h = mw[mw["model_id"] == "H"]  # diverged, never attacked: once, at its own partition
    assert h["partition"].tolist() == ["pool2"] and h["ssim"].isna().all()
    f5 = figure5_data(res).set_index(["partition", "defense"])
    assert f5.loc[("pool1", "none"), "ssim_n"] == f5.loc[("pool2", "none"), "ssim_n"] == 2
    assert f5.loc[("pool2", "none"), "test_acc_mean"] == pytest.approx(0.85)


def test_aggregate_over_seeds_mean_std_and_t_interval(res):
    mw = res.models_with_worst()
    ok = mw[(mw["status"] == "ok") & (mw["defense"] != "dp_pixelation")]
    agg = aggregate(ok, ["partition", "lam", "defenders"], ["test_acc"]).set_index(
        ["partition", "lam", "defenders"]
    )
    half = T_975[1] * math.sqrt(0.005) / math.sqrt(2)
    for part in ("pool1", "pool2"):  # seeds 0.80, 0.90: the same two undefended models at each partition
        p = agg.loc[(part, 0.0, "")]
        assert p["test_acc_n"] == 2
        assert p["test_acc_mean"] == pytest.approx(0.85)
        assert p["test_acc_std"] == pytest.approx(math.sqrt(0.005))
        assert (p["test_acc_ci_lo"], p["test_acc_ci_hi"]) == pytest.approx((0.85 - half, 0.85 + half))
    single = agg.loc[("pool2", 0.1, "deconv,fc")]  # one seed: no spread, no interval
    assert (
        single["test_acc_n"] == 1
        and math.isnan(single["test_acc_std"])
        and math.isnan(single["test_acc_ci_lo"])
    )
    three = aggregate(pd.DataFrame({"g": ["x"] * 3, "v": [1.0, 2.0, 3.0]}), ["g"], ["v"]).iloc[0]
    assert (three["v_ci_lo"], three["v_ci_hi"]) == pytest.approx(
        (2 - T_975[2] / math.sqrt(3), 2 + T_975[2] / math.sqrt(3))
    )
    assert "Student t" in agg.attrs["ci_method"]
    with pytest.raises(ValueError, match="nope"):
        aggregate(ok, ["nope"], ["test_acc"])


def _images(res, aid: str, col: str = "ssim_images") -> np.ndarray:
    return np.asarray(res.attacks.set_index("attack_id").at[aid, col])


def test_single_runs_get_bootstrap_and_wilson_intervals(res):
    w = worst_case(res.attacks).set_index(["model_id", "partition"])
    own = attack_intervals(res.attacks).set_index("attack_id")
    # One attacker alone: the worst case's bootstrap is scipy's percentile bootstrap of its mean.
    only = worst_case(res.attacks[res.attacks["attack_id"] == "G-pool2-fc"]).iloc[0]
    ref = stats.bootstrap(
        (_images(res, "G-pool2-fc"),),
        np.mean,
        n_resamples=N_RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(0),
    ).confidence_interval
    assert (only["ssim_ci_lo"], only["ssim_ci_hi"]) == pytest.approx((ref.low, ref.high))
    assert (own.at["G-pool2-fc", "ssim_ci_lo"], own.at["G-pool2-fc", "ssim_ci_hi"]) == pytest.approx(
        (ref.low, ref.high)
    )
    # Several: each resample takes the strongest attacker's mean, so the interval lies at or above
    # every attacker's own (the resamples are the same) and brackets the worst case.
    for (mid, part), zoo in ATTACKS.items():
        row = w.loc[(mid, part)]
        assert (
            row["ssim_ci_lo"] <= row["ssim"] <= row["ssim_ci_hi"]
            and row["mse_ci_lo"] <= row["mse"] <= row["mse_ci_hi"]
        )
        for attacker in zoo:
            mine = own.loc[f"{mid}-{part}-{attacker}"]
            assert (
                row["ssim_ci_lo"] >= mine["ssim_ci_lo"] - 1e-12
                and row["mse_ci_hi"] <= mine["mse_ci_hi"] + 1e-12
            )
    assert (
        w.loc[("A", "pool1"), "ssim_baseline_ci_lo"],
        w.loc[("A", "pool1"), "ssim_baseline_ci_hi"],
    ) == pytest.approx(
        (own.at["A-pool1-mean_image", "ssim_ci_lo"], own.at["A-pool1-mean_image", "ssim_ci_hi"])
    )
    # Deterministic: the bootstrap has a fixed seed.
    pd.testing.assert_frame_equal(worst_case(res.attacks), worst_case(res.attacks))
    # Test accuracy of one run: Wilson from test_acc and n_test.
    g = res.models_with_worst().set_index("model_id").loc["G"]
    ci = stats.binomtest(round(0.78 * N_TEST), N_TEST).proportion_ci(method="wilson")
    assert (g["test_acc_ci_lo"], g["test_acc_ci_hi"]) == pytest.approx((ci.low, ci.high))
    # A group of one seed shows that run's interval, two or more seeds the t interval.
    f5 = figure5_data(res).set_index(["partition", "defenders"])
    one, two = f5.loc[("pool2", "deconv")], f5.loc[("pool1", "")]
    assert one["ssim_ci_method"] == "bootstrap" and one["test_acc_ci_method"] == "wilson"
    assert (one["ssim_ci_lo"], one["ssim_ci_hi"]) == (
        w.loc[("F", "pool2"), "ssim_ci_lo"],
        w.loc[("F", "pool2"), "ssim_ci_hi"],
    )
    assert (one["test_acc_ci_lo"], one["test_acc_ci_hi"]) == pytest.approx(
        tuple(stats.binomtest(41, N_TEST).proportion_ci(method="wilson"))
    )
    assert two["ssim_ci_method"] == "t" and two["ssim_ci_lo"] == pytest.approx(0.79 - T_975[1] * 0.01)
    assert one["dpd_ci_method"] is None and math.isnan(one["dpd_ci_lo"])  # no per-image DPD: no interval


def test_paired_differences_defended_minus_undefended_of_the_same_seed(res):
    d = paired_differences(res).set_index(["partition", "defenders", "metric"])
    # pool1, two seeds: C − A = 0.55 − 0.80, D − B = 0.52 − 0.78; t interval over the two differences.
    p1 = d.loc[("pool1", "deconv", "ssim")]
    diffs = np.array([0.55 - 0.80, 0.52 - 0.78])
    half = T_975[1] * diffs.std(ddof=1) / math.sqrt(2)
    assert (p1["n_pairs"], p1["seeds"], p1["ci_method"]) == (2, "0,1", "t")
    assert (p1["defended"], p1["undefended"], p1["diff"]) == pytest.approx((0.535, 0.79, diffs.mean()))
    assert (p1["diff_ci_lo"], p1["diff_ci_hi"]) == pytest.approx((diffs.mean() - half, diffs.mean() + half))
    assert p1["significant"]
    # pool2, one seed (H diverged): a paired bootstrap over the images, F − A at pool2.
    p2 = d.loc[("pool2", "deconv", "ssim")]
    assert (p2["n_pairs"], p2["seeds"], p2["ci_method"]) == (1, "0", "bootstrap")
    assert p2["diff"] == pytest.approx(0.35 - 0.65) and p2["diff_ci_lo"] <= p2["diff"] <= p2["diff_ci_hi"] < 0
    assert p2["significant"]
    # Accuracy of one pair: Newcombe's interval; 82 % vs 80 % of 50 images is no evidence either way.
    acc = d.loc[("pool2", "deconv", "test_acc")]
    assert acc["ci_method"] == "newcombe" and acc["diff"] == pytest.approx(0.02) and not acc["significant"]
    # #CG only where both models were counted: C (20 of 50) vs A at pool1 (42 of 50), one pair.
    cg = d.loc[("pool1", "deconv", "n_cg")]
    assert (cg["n_pairs"], cg["diff"], cg["ci_method"]) == (1, -22, "newcombe") and cg["significant"]
    assert -50 < cg["diff_ci_lo"] < cg["diff_ci_hi"] < 0
    # The baseline plays no part, and DP-pixelation models (no partition) are not paired.
    assert set(d.reset_index()["defense"]) == {"partition"}
    assert d["significant"].dtype == "boolean" and pd.api.types.is_integer_dtype(d["n_pairs"])


def test_paired_bootstrap_resamples_both_models_images_together(tmp_path):
    """Two models whose per-image SSIMs move together (image difficulty dominates): the paired
    interval of their difference is far narrower than either model's spread over images, so a
    small shift is significant and no shift is not."""
    rng = np.random.default_rng(1)
    shared = rng.uniform(0.2, 0.9, 40)  # how hard each image is, common to both models
    store = ResultStore(str(tmp_path))
    for mid, part, defense, lam in (("u", None, "none", 0.0), ("d", "fc2", "partition", 1.0)):
        store.write(
            "models",
            "s",
            mid,
            [
                model_row(
                    "s",
                    mid,
                    partition=part,
                    defense=defense,
                    lam=lam,
                    defenders="" if lam == 0 else "fc",
                    test_acc=0.9,
                    n_test=40,
                )
            ],
        )
    for shift, significant in ((-0.02, True), (0.0, False)):
        for mid, vals in (("u", shared), ("d", np.array(per_image(rng, shift, 0.005, 40)) + shared)):
            store.write(
                "attacks",
                "s",
                f"{mid}-fc",
                [
                    attack_row(
                        "s",
                        mid,
                        f"{mid}-fc",
                        attacker="fc",
                        ssim=float(np.mean(vals)),
                        ssim_images=list(vals),
                    )
                ],
            )
        row = paired_differences(load(str(tmp_path))).set_index("metric").loc["ssim"]
        assert row["diff"] == pytest.approx(shift) and row["ci_method"] == "bootstrap"
        assert row["diff_ci_hi"] - row["diff_ci_lo"] < 0.01 < np.std(shared) / 10
        assert row["significant"] == significant


def test_pareto_set_and_hypervolume_by_hand(res):
    mw = res.models_with_worst()
    front = frontier(mw[mw["status"] == "ok"])
    # (acc, worst SSIM) per model and partition: B@pool2 .90/.66, F .82/.35, G .78/.25 and P1 .30/.10
    # are undominated; B@pool1 (.90/.78) by B@pool2, A@pool1 (.80/.80) and A@pool2 (.80/.65) by F,
    # C (.70/.55), D (.74/.52) and P2 (.60/.40) by G; H diverged.
    assert list(zip(front["model_id"], front["partition"].fillna("-"))) == [
        ("B", "pool2"),
        ("F", "pool2"),
        ("G", "pool2"),
        ("P1", "-"),
    ]
    expected = 0.90 * (1 - 0.66) + 0.82 * (0.66 - 0.35) + 0.78 * (0.35 - 0.25) + 0.30 * (0.25 - 0.10)
    assert hypervolume(front[["test_acc", "ssim"]].to_numpy()) == pytest.approx(expected)
    assert hypervolume(
        mw.dropna(subset=["test_acc", "ssim"])[["test_acc", "ssim"]].to_numpy()
    ) == pytest.approx(expected)


def test_pareto_mask_and_hypervolume_edge_cases():
    # Ties: identical points are both optimal; equal accuracy keeps only the lowest leakage.
    assert pareto_mask([0.9, 0.9, 0.9, 0.5], [0.3, 0.3, 0.4, 0.1]).tolist() == [True, True, False, True]
    assert hypervolume([(0.5, 0.5)]) == pytest.approx(0.25)
    assert hypervolume([(0.5, 0.5), (0.5, 0.5), (0.4, 0.6)]) == pytest.approx(0.25)
    assert hypervolume(np.empty((0, 2))) == 0.0
    assert hypervolume([(0.8, 1.2), (-0.1, 0.2)]) == 0.0  # beyond the reference point
    assert hypervolume([(0.8, 0.4)], ref=(0.5, 0.9)) == pytest.approx(0.3 * 0.5)
    with pytest.raises(ValueError, match="shape"):
        hypervolume([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        pareto_mask([0.1, float("nan")], [0.2, 0.3])


def test_paper_tables(res):
    t1 = table_i(res).set_index(["partition", "lam", "attacker"])
    assert t1.loc[("pool1", 0.0, "deconv"), "ssim_mean"] == pytest.approx((0.80 + 0.78) / 2)
    assert t1.loc[("pool1", 0.1, "fc"), "mse_mean"] == pytest.approx((0.045 + 0.047) / 2)
    assert t1.loc[("pool1", 0.1, "fc"), "test_acc_mean"] == pytest.approx(0.72)
    # The undefended models appear at pool2 as well, both seeds.
    assert t1.loc[("pool2", 0.0, "fc"), "ssim_mean"] == pytest.approx((0.65 + 0.66) / 2)
    assert t1.loc[("pool2", 0.0, "fc"), "test_acc_n"] == 2
    # G (two defenders), H (diverged) and the DP models are not Table I material.
    f = t1.loc[("pool2", 0.1, "deconv")]
    assert f["ssim_n"] == 1 and f["ssim_mean"] == 0.35 and f["ssim_ci_method"] == "bootstrap"
    assert f["ssim_ci_lo"] < 0.35 < f["ssim_ci_hi"] and f["test_acc_ci_method"] == "wilson"
    t2 = table_ii(res)
    assert set(t2["defenders_present"]) == {"none", "single", "multiple"}
    multi = t2[(t2["defenders_present"] == "multiple") & (t2["attacker"] == "fc")].iloc[0]
    assert (multi["ssim_mean"], multi["test_acc_mean"]) == (0.25, 0.78)
    t3 = table_iii(res).set_index(["partition", "defense"])
    # Per model the attacker with most correct genders: A → fc (42/44/50), B → deconv (38/46/50);
    # the mean-image baseline (49/50/50) is never the choice.
    assert tuple(t3.loc[("pool1", "none"), ["n_cg_mean", "n_df_mean", "n_ti_mean"]]) == (40.0, 45.0, 50.0)
    assert (
        t3.loc[("pool1", "none"), "attackers"] == "deconv,fc"
        and t3.loc[("pool1", "none"), "n_cg_ci_method"] == "t"
    )
    p2 = t3.loc[("pool2", "partition")]
    assert p2["n_cg_mean"] == 10.0 and p2["n_cg_ci_method"] == "wilson"
    ci = stats.binomtest(10, 50).proportion_ci(method="wilson")
    assert (p2["n_cg_ci_lo"], p2["n_cg_ci_hi"]) == pytest.approx((50 * ci.low, 50 * ci.high))
    assert t3.loc[("pool2", "none"), "n_cg_mean"] == 30.0  # A at pool2; B was not counted there
    # The chance level beside it: the baseline's own #CG on the same models (49 of 50 here).
    assert t3.loc[("pool1", "none"), "n_cg_baseline_mean"] == 49.0


def write_bare(root: str) -> None:
    """One undefended model, one attacker, nothing else: most artefacts have no input."""
    store = ResultStore(root)
    store.write("models", "s", "m", [model_row("s", "m", test_acc=0.9)])
    store.write("attacks", "s", "a", [attack_row("s", "m", "a", attacker="fc", ssim=0.5, mse=0.1)])


def test_figure_data(res):
    f4 = figure4_data(res)
    # Per partition × setting: the lowest seed's model, its strongest attacker with saved images.
    assert sorted(f4["attack_id"].unique()) == sorted(RECONSTRUCTED)
    assert len(f4) == 16 and f4["original"].map(lambda b: b[:8] == b"\x89PNG\r\n\x1a\n").all()
    f5 = figure5_data(res).set_index(["partition", "defenders"])
    assert f5.loc[("pool1", ""), "ssim_mean"] == pytest.approx(0.79)  # max SSIM of A (.80) and B (.78)
    assert f5.loc[("pool1", ""), "mse_mean"] == pytest.approx((0.010 + 0.022) / 2)  # min MSE per model
    assert f5.loc[("pool1", ""), "ssim_baseline_mean"] == pytest.approx(BASELINE[0])
    assert f5.loc[("pool1", ""), "ssim_attackers"] == "deconv"
    assert f5.loc[("pool2", "deconv"), "test_acc_n"] == 1  # H diverged
    f7 = figure7_data(res).set_index("epsilon")
    assert (f7.loc[1.0, "ssim_mean"], f7.loc[10.0, "test_acc_mean"]) == (0.10, 0.60)
    assert f7.loc[1.0, "ssim_ci_method"] == "bootstrap"


def test_missing_inputs_raise_missing(tmp_path):
    write_bare(str(tmp_path))
    res = load(str(tmp_path))
    for build, words in (
        (table_i, "two or more λ"),
        (table_ii, "more than one defender"),
        (table_iii, "no attribute results"),
        (paired_differences, "no defended model"),
    ):
        with pytest.raises(Missing, match=words):
            build(res)


def test_report_command_writes_markdown_figures_and_csv(root, tmp_path):
    out = tmp_path / "report"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, "-m", "analysis.report", root, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert proc.returncode == 0, proc.stderr
    assert str(out / "report.md") in proc.stdout
    # The budget is 30 s; CPU time, not wall time, so a busy shared machine does not fail it.
    assert (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime) < 30
    md = (out / "report.md").read_text()
    for heading in (
        "Table I —",
        "Table II —",
        "Table III —",
        "Figure 4 —",
        "Figure 5 —",
        "Figure 7 —",
        "Defended minus undefended",
        "Leakage by attacker knowledge",
        "Accuracy–privacy frontier",
        "Training curves",
    ):
        assert f"\n## {heading}" in md
    # Every artefact of the tables is built; the activation maps (Figures 6/8/9) need the models'
    # saved weights, which this tables-only root does not hold.
    missing = md.split("## Missing")[1].strip().splitlines()
    assert len(missing) == 1 and missing[0].startswith("- Figures 6/8/9 for lfw-subset (sweep `lfw-mini`)")
    assert "no state file for model(s)" in missing[0]
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [
        f"{k}_lfw-mini_lfw-subset.png" for k in ("curves", "figure4", "figure5", "figure7", "frontier")
    ]
    for png in pngs:
        assert f"]({png})" in md
        with Image.open(out / png) as im:
            assert min(im.size) > 300
    csvs = {p.stem for p in out.glob("*.csv")}
    assert csvs == {
        "table_i",
        "table_ii",
        "table_iii",
        "figure5",
        "figure7",
        "paired_differences",
        "leakage_by_family",
        "leakage_by_family_paired",
        "leakage_gains",
        "frontier",
        "hypervolume",
        "models_worst_case",
    }
    t1 = pd.read_csv(out / "table_i.csv")
    assert {"ssim_mean", "ssim_std", "ssim_ci_lo", "ssim_ci_method", "mse_mean", "test_acc_mean"} <= set(
        t1.columns
    )
    assert "0.790 [" in md  # Table I cell: pool1, λ=0, deconv SSIM mean and its interval
    hv = pd.read_csv(out / "hypervolume.csv")
    assert hv["n_pareto"].item() == 4


def test_report_says_what_is_missing(tmp_path):
    write_bare(str(tmp_path / "r"))

    md = build_report(str(tmp_path / "r"), tmp_path / "out").read_text()
    missing = md.split("## Missing")[1]
    for words in (
        "Table I",
        "Table II",
        "Table III: no attribute results",
        "Figure 4: no reconstructions",
        "Figure 7: no dp_pixelation",
        "Training curves: the epochs table is empty",
    ):
        assert words in missing
    assert "## Figure 5" in md and "## Accuracy–privacy frontier" in md
    assert (tmp_path / "out" / "figure5_s_digits.png").exists()


def test_docs_queries_run_against_a_results_root(root, capsys):
    """docs/queries.md promises six runnable queries: run every code block on the test sweep."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "queries.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert len(blocks) >= 7 and sum(line.startswith("## ") for line in doc.splitlines()) == 6
    code = "\n".join(blocks).replace('ROOT = "results"', f"ROOT = {root!r}")
    exec(compile(code, "docs/queries.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "deconv,fc" in printed and "loss is NaN at epoch 2" in printed and "CUDA OOM" in printed
    assert "(25, 25)" in printed  # question 6 opened a kept reconstruction (25×25 in write_sweep)


@pytest.mark.parametrize("how", ["max", "min"])
def test_bootstrap_is_scipys_percentile_bootstrap(how):
    """Our paired percentile bootstrap (indices drawn once per image count) gives scipy's
    interval for the strongest of several attackers' means."""
    from analysis.uncertainty import BOOTSTRAP_SEED, N_RESAMPLES, bootstrap, strongest_of_means

    rng = np.random.default_rng(3)
    for n, k in ((64, 3), (11, 1), (474, 5)):
        samples = [rng.uniform(size=n) for _ in range(k)]
        ref = stats.bootstrap(
            tuple(samples),
            strongest_of_means(how),
            paired=True,
            vectorized=True,
            n_resamples=N_RESAMPLES,
            method="percentile",
            rng=np.random.default_rng(BOOTSTRAP_SEED),
        ).confidence_interval
        assert bootstrap(samples, strongest_of_means(how)) == pytest.approx((ref.low, ref.high), abs=1e-12)
