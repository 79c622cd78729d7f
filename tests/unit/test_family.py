"""Leakage by attacker knowledge: the worst case as the defenders' family, unseen families,
white-box and tuned attackers join, and tuned attackers shown beside their fixed twins."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_analysis import attack_row, model_row  # (pytest puts this folder on sys.path)

from analysis.report import family_md, family_paired_md, gains_md
from analysis.tables import (
    Missing,
    Results,
    leakage_by_family,
    leakage_by_family_paired,
    leakage_gains,
    load,
    table_i,
)
from pp_cluster.results.rules import FAMILIES, family, label_tuned
from pp_cluster.results.store import ResultStore

SWEEP = "ladder"
# Per model: (seed, λ, defenders), and per attacker (name, tune_trials) its mean SSIM.
MODELS = {"U0": (0, 0.0, ""), "U1": (1, 0.0, ""), "D0": (0, 1.0, "deconv"), "D1": (1, 1.0, "deconv")}
SSIM = {
    "U0": {("deconv", 0): 0.70, ("fc", 0): 0.75, ("rmle", 0): 0.80, ("fc", 8): 0.85, ("mean_image", 0): 0.99},
    "U1": {("deconv", 0): 0.72, ("fc", 0): 0.74, ("rmle", 0): 0.79, ("fc", 8): 0.83, ("mean_image", 0): 0.99},
    "D0": {("deconv", 0): 0.40, ("fc", 0): 0.60, ("rmle", 0): 0.55, ("fc", 8): 0.70, ("mean_image", 0): 0.99},
    "D1": {("deconv", 0): 0.42, ("fc", 0): 0.58, ("rmle", 0): 0.57, ("fc", 8): 0.66, ("mean_image", 0): 0.99},
}


@pytest.fixture
def root(tmp_path):
    store = ResultStore(str(tmp_path))
    rng = np.random.default_rng(0)
    for mid, (seed, lam, defenders) in MODELS.items():
        store.write(
            "models",
            SWEEP,
            mid,
            [
                model_row(
                    SWEEP,
                    mid,
                    seed=seed,
                    dataset="lfw",
                    arch="face_cnn",
                    partition="pool1" if lam else None,
                    lam=lam,
                    defenders=defenders,
                    defense="partition" if lam else "none",
                    test_acc=0.9,
                    n_test=100,
                )
            ],
        )
        for (attacker, trials), ssim in SSIM[mid].items():
            write_attack(store, SWEEP, mid, f"{mid}-{attacker}-{trials}", attacker, ssim, trials, rng)
    return str(tmp_path)


def write_attack(store, sweep, mid, aid, attacker, ssim, trials, rng):
    """One successful attack at pool1 of mean SSIM ``ssim``, its 50 per-image values noisy around it."""
    z = rng.standard_normal(50)
    row = attack_row(
        sweep,
        mid,
        aid,
        attacker=attacker,
        partition="pool1",
        ssim=ssim,
        mse=1 - ssim,
        psnr=10.0,
        ssim_images=list(ssim + 0.02 * (z - z.mean())),
        mse_images=list(1 - ssim + 0.0 * z),
        tune_trials=trials,
    )
    store.write("attacks", sweep, aid, [row])


def test_each_step_is_the_strongest_of_everything_known_so_far(root):
    t = leakage_by_family(load(root)).set_index("lam")
    for lam, models in ((0.0, ("U0", "U1")), (1.0, ("D0", "D1"))):
        for k in range(1, 5):
            allowed = [("deconv", 0)], [("fc", 0)], [("rmle", 0)], [("fc", 8)]
            keys = [a for step in allowed[:k] for a in step]
            want = np.mean([max(SSIM[m][a] for a in keys) for m in models])
            assert t.at[lam, f"step{k}_mean"] == pytest.approx(want)
            assert t.at[lam, f"step{k}_ci_lo"] <= want <= t.at[lam, f"step{k}_ci_hi"]
            assert t.at[lam, f"step{k}_n"] == 2
    # The baseline (0.99) never enters; the steps never fall.
    row = t.loc[1.0]
    assert [row[f"step{k}_mean"] for k in range(1, 5)] == sorted(row[f"step{k}_mean"] for k in range(1, 5))
    assert (
        row["step1_attackers"],
        row["step2_attackers"],
        row["step3_attackers"],
        row["step4_attackers"],
    ) == (
        "deconv",
        "fc",
        "rmle",
        "fc (tuned)",
    )
    md = family_md(leakage_by_family(load(root)))
    assert "(4) + tuned" in md and "0.680" in md  # D0/D1's tuned fc: mean of 0.70 and 0.66


def test_paired_ladder_is_each_seeds_defended_minus_undefended_step(root):
    t = leakage_by_family_paired(load(root)).set_index("step")
    allowed = [("deconv", 0)], [("fc", 0)], [("rmle", 0)], [("fc", 8)]
    for k in range(1, 5):
        keys = [a for step in allowed[:k] for a in step]
        diffs = [
            max(SSIM[d][a] for a in keys) - max(SSIM[u][a] for a in keys)
            for d, u in (("D0", "U0"), ("D1", "U1"))
        ]
        assert t.at[k, "diff"] == pytest.approx(np.mean(diffs))
        assert t.at[k, "n_pairs"] == 2 and t.at[k, "seeds"] == "0,1" and t.at[k, "ci_method"] == "t"
        assert t.at[k, "diff_ci_lo"] <= np.mean(diffs) <= t.at[k, "diff_ci_hi"]
    # deconv alone: -0.30 on both seeds (no spread, a zero-width interval: significant);
    # everything known: the tuned fc, 0.70 - 0.85 and 0.66 - 0.83.
    assert t.at[1, "diff"] == pytest.approx(-0.30) and bool(t.at[1, "significant"])
    assert t.at[4, "diff"] == pytest.approx(-0.16) and t.at[4, "attackers"] == "fc (tuned)"
    md = family_paired_md(leakage_by_family_paired(load(root)))
    assert "(4) + tuned (fc (tuned))" in md and "-0.160 [" in md


def test_each_steps_rise_is_per_model_with_a_paired_image_bootstrap(root):
    t = leakage_gains(load(root)).set_index(["model_id", "from_step", "step"])
    allowed = [("deconv", 0)], [("fc", 0)], [("rmle", 0)], [("fc", 8)]

    def worst(m, k):
        return max(SSIM[m][a] for step in allowed[:k] for a in step)

    for m in MODELS:
        assert sorted(t.loc[m].index) == [(1, 2), (1, 4), (2, 3), (3, 4)]  # each step, and the whole climb
        for start, end in ((1, 2), (2, 3), (3, 4), (1, 4)):
            r = t.loc[(m, start, end)]
            assert r["before"] == pytest.approx(worst(m, start)) and r["after"] == pytest.approx(
                worst(m, end)
            )
            assert r["gain"] == pytest.approx(worst(m, end) - worst(m, start))
            assert 0 <= r["gain_ci_lo"] <= r["gain"] + 1e-12 <= r["gain_ci_hi"] + 2e-12
            assert r["before_ci_lo"] <= r["before"] <= r["before_ci_hi"]
    # D0: rmle (0.55) never beats the unseen fc (0.60): no rise, not significant; the tuned fc
    # (0.70) does, by 0.10, well outside the images' noise; 0.40 -> 0.70 in all.
    assert t.loc[("D0", 2, 3), "gain"] == 0 and not t.loc[("D0", 2, 3), "significant"]
    assert t.loc[("D0", 3, 4), "gain"] == pytest.approx(0.10) and t.loc[("D0", 3, 4), "significant"]
    assert (
        t.loc[("D0", 3, 4), "attackers"] == "fc (tuned)"
        and t.loc[("D0", 1, 4), "attackers"] == "fc, fc (tuned), rmle"
    )
    assert t.loc[("D0", 1, 4), "gain"] == pytest.approx(0.30)
    md = gains_md(leakage_gains(load(root)))
    assert "**+0.100 [" in md and "+0.000 [0.000, 0.000]" in md and "| (1) → (4) |" in md


def test_a_model_missing_a_steps_attack_has_no_rise_from_that_step_on(root):
    res = load(root)
    keep = ~((res.attacks["model_id"] == "D1") & (res.attacks["attacker"] == "rmle"))
    part = Results(models=res.models, attacks=res.attacks[keep], epochs=res.epochs, root=res.root)
    t = leakage_gains(part)
    d1 = t[t["model_id"] == "D1"]
    assert list(zip(d1["from_step"], d1["step"])) == [(1, 2)]  # its rmle is missing: no step 3, no step 4
    assert len(t[t["model_id"] == "D0"]) == 4


def test_paired_ladder_with_one_pair_bootstraps_the_images_and_leaves_out_empty_steps(root):
    res = load(root)
    keep = ~res.models["model_id"].isin(["U1", "D1"])
    drop = ~res.attacks["attacker"].isin(["rmle"]) & res.attacks["model_id"].isin(["U0", "D0"])
    one = Results(models=res.models[keep], attacks=res.attacks[drop], epochs=res.epochs, root=res.root)
    t = leakage_by_family_paired(one).set_index("step")
    assert list(t.index) == [1, 2, 4]  # no white-box attacker: step 3 would repeat step 2
    assert (t["ci_method"] == "bootstrap").all() and (t["n_pairs"] == 1).all()
    assert t.at[2, "diff"] == pytest.approx(0.60 - 0.75)
    assert t.at[2, "diff_ci_lo"] < 0.60 - 0.75 < t.at[2, "diff_ci_hi"] < 0


def test_tuned_rows_are_named_apart_and_families_follow_the_rules(root):
    res = load(root)
    assert set(res.attacks["attacker"]) == {"deconv", "fc", "fc (tuned)", "rmle", "mean_image"}
    fam = family(res.attacks, ["deconv"]).groupby(res.attacks["attacker"]).first()
    assert fam.to_dict() == {
        "deconv": FAMILIES[0],
        "fc": FAMILIES[1],
        "rmle": FAMILIES[2],
        "fc (tuned)": FAMILIES[3],
        "mean_image": None,
    }
    # Table I lists the tuned attacker as its own column, beside the fixed one.
    assert {"fc", "fc (tuned)"} <= set(table_i(res)["attacker"])
    # Tables from before tuning (no tune_trials column) are left as they are.
    old = pd.DataFrame({"attacker": ["fc"], "status": ["ok"]})
    assert label_tuned(old) is old


def test_no_attacks_is_missing_not_an_error():
    empty = Results(
        models=pd.DataFrame(columns=["sweep", "model_id", "defenders", "status", "partition"]),
        attacks=pd.DataFrame(columns=["sweep", "model_id", "attacker", "status", "partition"]),
        epochs=pd.DataFrame(),
        root="-",
    )
    with pytest.raises((Missing, ValueError)):
        leakage_by_family(empty)


def test_a_model_missing_a_steps_attackers_is_left_out_of_that_step_and_the_later_ones(root):
    # D1's white-box attack has not finished (or failed): its steps 3 and 4 are unknown, not its
    # step-2 value again, so those steps average D0 alone; steps 1 and 2 keep both seeds.
    res = load(root)
    unfinished = (res.attacks["model_id"] == "D1") & (res.attacks["attacker"] == "rmle")
    part = Results(models=res.models, attacks=res.attacks[~unfinished], epochs=res.epochs, root=res.root)
    t = leakage_by_family(part).set_index("lam")
    assert t.at[1.0, "step2_n"] == 2 and t.at[1.0, "step2_mean"] == pytest.approx((0.60 + 0.58) / 2)
    assert t.at[1.0, "step3_n"] == 1 and t.at[1.0, "step3_mean"] == pytest.approx(0.60)
    assert t.at[1.0, "step4_n"] == 1 and t.at[1.0, "step4_mean"] == pytest.approx(0.70)
    assert t.at[0.0, "step4_n"] == 2  # the undefended models have every step
    # paired: seed 1 has no step-3 difference, so steps 3 and 4 rest on seed 0's pair alone
    p = leakage_by_family_paired(part).set_index("step")
    assert p.at[2, "n_pairs"] == 2 and p.at[3, "n_pairs"] == 1 and p.at[4, "n_pairs"] == 1
    assert p.at[4, "seeds"] == "0" and p.at[4, "diff"] == pytest.approx(0.70 - 0.85)


def test_the_defenders_family_is_each_sweeps_own(root):
    # A second sweep in the same root, defended with fc: there fc is the defenders' family and
    # deconv an unseen one; in the first sweep (defended with deconv) the other way round.
    store = ResultStore(root)
    rng = np.random.default_rng(1)
    for mid, lam in (("V0", 0.0), ("F0", 1.0)):
        store.write(
            "models",
            "other",
            mid,
            [
                model_row(
                    "other",
                    mid,
                    dataset="lfw",
                    arch="face_cnn",
                    partition="pool1" if lam else None,
                    lam=lam,
                    defenders="fc" if lam else "",
                    defense="partition" if lam else "none",
                    test_acc=0.9,
                    n_test=100,
                )
            ],
        )
        for attacker, ssim in (("deconv", 0.65), ("fc", 0.50)):
            write_attack(store, "other", mid, f"{mid}-{attacker}", attacker, ssim, 0, rng)
    t = leakage_by_family(load(root)).set_index(["sweep", "lam"])
    assert (
        t.at[("other", 1.0), "step1_attackers"] == "fc"
        and t.at[("other", 1.0), "step2_attackers"] == "deconv"
    )
    assert t.at[("other", 1.0), "step1_mean"] == pytest.approx(0.50)
    assert t.at[("other", 1.0), "step2_mean"] == pytest.approx(0.65)
    assert t.at[(SWEEP, 1.0), "step1_attackers"] == "deconv" and t.at[
        (SWEEP, 1.0), "step1_mean"
    ] == pytest.approx(0.41)
    # The other sweep has no white-box or tuned attacker: its steps 3-4 repeat step 2, not null.
    assert (
        t.at[("other", 1.0), "step4_mean"] == pytest.approx(0.65)
        and t.at[("other", 1.0), "step4_attackers"] == ""
    )
    md = family_md(leakage_by_family(load(root)))
    assert "sweep `other`: (1) fc; (2) deconv" in md
    g = leakage_gains(load(root))
    other = g[g["sweep"] == "other"]
    assert list(zip(other["from_step"], other["step"])) == [(1, 2), (1, 2)]  # V0 and F0: one step each
