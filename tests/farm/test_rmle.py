"""The white-box attacker in the farm: the pool runs it like any decoder, once per attack."""

from __future__ import annotations

import pandas as pd
import pytest

from pp_cluster.farm.sweep import run_sweep
from pp_cluster.results.rules import worst_values

pytestmark = pytest.mark.farm


def test_rmle_rows_are_written_once_and_compete_for_the_worst_case(tiny_sweep, ray_cluster, tmp_path):
    spec = tiny_sweep(tmp_path / "res", name="whitebox", attackers=("fc", "rmle", "mean_image"))
    outcome = run_sweep(spec, verbose=False)
    assert outcome.n_errored == 0
    attacks = pd.read_parquet(tmp_path / "res" / "attacks")
    # One undefended model attacked at pool1 and pool2, one defended model per partition.
    assert len(attacks) == 4 * 3 and attacks["attack_id"].is_unique
    assert (attacks["status"] == "ok").all()
    rmle = attacks[attacks["attacker"] == "rmle"]
    assert len(rmle) == 4 and rmle["attacker_arch"].str.startswith("rmle(steps=300,").all()
    assert rmle["ssim_images"].map(len).eq(rmle["n_eval"]).all()
    worst = worst_values(attacks)
    assert len(worst) == 4 and not worst["ssim_attacker"].eq("mean_image").any()
    # It is a real attacker: at the shallow split it beats the no-information baseline.
    at_pool1 = attacks[attacks["partition"] == "pool1"].pivot_table("ssim", "model_id", "attacker")
    assert (at_pool1["rmle"] > at_pool1["mean_image"]).all(), at_pool1

    files = sorted((tmp_path / "res").rglob("*.parquet"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    run_sweep(spec, resume=True, verbose=False)  # nothing to redo: no second row, no rewrite
    assert sorted((tmp_path / "res").rglob("*.parquet")) == files
    assert [f.stat().st_mtime_ns for f in files] == mtimes
