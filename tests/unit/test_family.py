"""Leakage by attacker knowledge: the worst case as the defenders' family, unseen families,
white-box and tuned attackers join, and tuned attackers shown beside their fixed twins."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_analysis import attack_row, model_row  # (pytest puts this folder on sys.path)

from analysis.report import family_md, family_paired_md
from analysis.tables import Missing, Results, leakage_by_family, leakage_by_family_paired, load, table_i
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
            z = rng.standard_normal(50)
            aid = f"{mid}-{attacker}-{trials}"
            row = attack_row(
                SWEEP,
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
            store.write("attacks", SWEEP, aid, [row])
    return str(tmp_path)


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
