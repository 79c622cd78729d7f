"""The strongest-attacker rule is one function (``results.rules``) and every consumer agrees
with it, on a table where DPD picks another attacker than SSIM and a baseline would win."""

from __future__ import annotations

import pandas as pd
import pytest

from pp_cluster.results import rules


def _attacks() -> pd.DataFrame:
    rows = [
        # attacker, partition, ssim, mse, psnr, dpd, reprint_acc, status
        ("deconv", "pool1", 0.80, 0.010, 20.0, 0.40, 0.50, "ok"),
        ("fc", "pool1", 0.70, 0.020, 18.0, 0.20, 0.60, "ok"),  # weaker on SSIM, stronger on DPD
        ("mean_image", "pool1", 0.90, 0.001, 30.0, 0.05, 0.90, "ok"),  # a baseline: never the strongest
        ("resdec", "pool1", 0.99, 0.000, 40.0, 0.01, 0.99, "failed"),  # failed: never counts
        ("deconv", "pool2", 0.60, 0.030, 15.0, 0.30, 0.40, "ok"),
    ]
    df = pd.DataFrame(
        rows, columns=["attacker", "partition", "ssim", "mse", "psnr", "dpd", "reprint_acc", "status"]
    )
    return df.assign(
        sweep="s",
        model_id="m",
        n_eval=10,
        ssim_images=[[v] * 10 for v in df["ssim"]],
        mse_images=[[v] * 10 for v in df["mse"]],
    )


def test_every_consumer_takes_the_same_strongest_attacker():
    attacks = _attacks()
    rule = rules.worst_values(attacks).set_index("partition")
    assert rule.loc["pool1", "ssim_attacker"] == "deconv" and rule.loc["pool1", "dpd_attacker"] == "fc"
    assert rule.loc["pool1", "dpd"] == pytest.approx(0.20) and rule.loc["pool1", "mse"] == pytest.approx(
        0.010
    )

    from analysis.tables import worst_case

    analysis = worst_case(attacks).set_index("partition")
    for metric in rules.STRONGEST:
        assert analysis.loc["pool1", metric] == pytest.approx(rule.loc["pool1", metric]), metric
        assert analysis.loc["pool1", f"{metric}_attacker"] == rule.loc["pool1", f"{metric}_attacker"], metric
    assert analysis.loc["pool1", "dpd_baseline"] == pytest.approx(0.05)  # shown beside, not chosen

    # The farm's Tune metrics: the strongest over every partition the model was attacked at.
    from pp_cluster.farm.trial import trial_metrics

    metrics = trial_metrics({"status": "ok", "test_acc": 0.9}, attacks.to_dict("records"), "m", skipped=False)
    assert metrics["worst_dpd"] == pytest.approx(0.20) and metrics["worst_ssim"] == pytest.approx(0.80)
    assert metrics == {**metrics, **rules.worst_of(attacks)}

    # Pareto marking reads the same worst SSIM (pool1's deconv, not the baseline's 0.90).
    models = pd.DataFrame({"model_id": ["m", "n"], "test_acc": [0.9, 0.9]})
    other = attacks.assign(model_id="n", ssim=attacks["ssim"] - 0.05)
    flags = rules.pareto_flags(models, pd.concat([attacks, other]))
    assert flags.tolist() == [False, True]


def test_a_white_box_attacker_competes_on_ssim_but_not_on_reprint_accuracy():
    from analysis.tables import worst_case  # the analysis reader, with intervals

    # rmle reproduces the classification by construction (reprint 0.95 at any SSIM): it may be the
    # strongest on SSIM, never on reprint accuracy; its tuned name would not compete either.
    extra = pd.DataFrame(
        [
            ("rmle", "pool1", 0.85, 0.005, 25.0, 0.30, 0.95, "ok"),
            ("rmle", "pool2", 0.10, 0.5, 5.0, 0.9, 0.97, "ok"),
        ],
        columns=["attacker", "partition", "ssim", "mse", "psnr", "dpd", "reprint_acc", "status"],
    )
    extra = extra.assign(
        sweep="s",
        model_id="m",
        n_eval=10,
        ssim_images=[[v] * 10 for v in extra["ssim"]],
        mse_images=[[v] * 10 for v in extra["mse"]],
    )
    attacks = pd.concat([_attacks(), extra], ignore_index=True)
    for table in (rules.worst_values(attacks), worst_case(attacks)):
        t = table.set_index("partition")
        assert t.loc["pool1", "ssim_attacker"] == "rmle" and t.loc["pool1", "ssim"] == pytest.approx(0.85)
        assert t.loc["pool1", "reprint_acc_attacker"] == "fc" and t.loc[
            "pool1", "reprint_acc"
        ] == pytest.approx(0.60)
        assert t.loc["pool2", "reprint_acc_attacker"] == "deconv"
    assert rules.worst_of(attacks)["worst_reprint_acc"] == pytest.approx(0.60)
    assert rules.worst_of(attacks)["worst_ssim"] == pytest.approx(0.85)
