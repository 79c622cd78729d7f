"""The evaluations beyond one attack table, end to end through the farm: other defenses
(NoPeek, activation noise), remote fine-tuning, the DP-pixelation baseline (Figure 7) and
attribute inference on reconstructions (Table III, real LFW)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from pp_cluster.farm.sweep import run_sweep

pytestmark = pytest.mark.farm


def test_noise_defense_finetuning_and_dp_pixelation_rows(tiny_sweep, ray_cluster, tmp_path):
    from analysis import load
    from analysis.tables import figure7_data

    spec = tiny_sweep(
        tmp_path / "res",
        name="extras",
        partitions=("pool1",),
        lams=(0.0, 0.5),
        attackers=("fc",),
        defense="noise",
        finetune_epochs=1,
        dp_epsilons=(0.5, math.inf),
    )
    outcome = run_sweep(spec, verbose=False)
    assert outcome.n_errored == 0

    models = pd.read_parquet(tmp_path / "res" / "models").set_index("defense")
    attacks = pd.read_parquet(tmp_path / "res" / "attacks")
    assert sorted(models.index) == ["dp_pixelation", "dp_pixelation", "noise", "none"]
    assert models["model_id"].is_unique and attacks["attack_id"].is_unique
    assert models.at["noise", "lam"] == 0.5 and models.at["noise", "defenders"] == ""
    assert json.loads(models.at["noise", "config_json"])["defense"] == "noise"
    trained = models.loc[["none", "noise"]]
    assert trained[["finetune_acc_before", "finetune_acc_after"]].notna().all().all()
    # Fine-tuning starts from the model exactly as training left it (the noisy model's
    # accuracy is itself noisy, so only the undefended one can be compared exactly).
    assert models.at["none", "finetune_acc_before"] == models.at["none", "test_acc"]

    dp = models.loc["dp_pixelation"]
    base_id = models.at["none", "model_id"]
    configs = [json.loads(c) for c in dp["config_json"]]
    assert sorted(c["epsilon"] for c in configs) == [0.5, math.inf]
    assert {c["base_model_id"] for c in configs} == {base_id} and dp["test_acc"].between(0, 1).all()
    released = attacks[attacks["attacker"] == "dp_pixelation"].set_index("model_id").loc[dp["model_id"]]
    by_eps = dict(zip([c["epsilon"] for c in configs], released["ssim"]))
    assert by_eps[0.5] < by_eps[math.inf] <= 1  # noise of scale 255·m/(b²ε) hides more than pixelation alone
    assert (attacks[attacks["attacker"] == "fc"]["model_id"].isin(trained["model_id"])).sum() == 2

    fig7 = figure7_data(load(str(tmp_path / "res")))
    assert sorted(fig7["epsilon"]) == [0.5, math.inf] and fig7["ssim_mean"].notna().all()


def test_nopeek_defense_trains_against_distance_correlation(tiny_sweep, ray_cluster, tmp_path):
    spec = tiny_sweep(
        tmp_path / "res",
        name="nopeek",
        partitions=("pool1",),
        lams=(1.0,),
        attackers=("fc",),
        defense="nopeek",
    )
    assert run_sweep(spec, verbose=False).n_errored == 0
    models = pd.read_parquet(tmp_path / "res" / "models")
    epochs = pd.read_parquet(tmp_path / "res" / "epochs")
    assert models["defense"].tolist() == ["nopeek"] and models["defenders"].tolist() == [""]
    # The distance column carries the distance correlation NoPeek minimises.
    assert models["final_distance"].between(0, 1).all() and epochs["distance"].between(0, 1).all()


def test_attribute_inference_on_real_lfw(tiny_sweep, ray_cluster, tmp_path, shared_data):
    root = shared_data / "lfw" / "lfw-deepfunneled"
    if not (shared_data / "lfw" / "gender").is_dir():
        pytest.skip("LFW gender lists not available")
    spec = tiny_sweep(
        tmp_path / "res",
        name="gender",
        dataset="lfw",
        data_root=str(root),
        dataset_options={"min_faces": 100, "size": 32, "disjoint": True, "disjoint_max": 400},
        partitions=("pool1",),
        lams=(0.0,),
        attackers=("fc",),
        attributes=True,
    )
    assert run_sweep(spec, verbose=False).n_errored == 0
    attacks = pd.read_parquet(tmp_path / "res" / "attacks")
    (row,) = attacks.to_dict("records")
    assert row["n_ti"] == row["n_eval"] > 100  # every held-out image is judged
    assert 0 <= row["n_cg"] <= row["n_df"] <= row["n_ti"]
    assert 0.5 < row["gender_acc"] <= 1
