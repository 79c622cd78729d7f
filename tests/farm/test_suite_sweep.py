"""A partition suite on the farm (Section IV-F): one network defended at pool1 and pool2 at once
trains in its Tune trial, is attacked at both partitions, every row is written once, and a
resumed sweep rewrites nothing."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from analysis.tables import load, partition_suites
from pp_cluster.config import ModelSpec
from pp_cluster.farm.sweep import run_sweep, unfinished
from pp_cluster.results.store import ResultStore

pytestmark = pytest.mark.farm


def test_a_suite_model_trains_and_is_attacked_at_each_of_its_partitions_once(
    tiny_sweep, ray_cluster, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    spec = tiny_sweep(
        "res",
        name="suites",
        partitions=("pool1",),
        partition_suites=(("pool1", "pool2"),),
        lams=(0.0, 1.0),
        attackers=("fc",),
    )
    outcome = run_sweep(spec, verbose=False)
    # the undefended model, the one defended at pool1 alone, the suite pool1+pool2
    assert outcome.n_trials == 3 and outcome.n_errored == 0

    models = pd.read_parquet(tmp_path / "res" / "models")
    attacks = pd.read_parquet(tmp_path / "res" / "attacks")
    epochs = pd.read_parquet(tmp_path / "res" / "epochs")
    assert (models["status"] == "ok").all() and models["model_id"].is_unique
    suite = models[models["partition_suite"].notna()].squeeze()
    assert suite["partition_suite"] == "pool1+pool2" and pd.isna(suite["partition"])
    assert suite["lam"] == 1.0 and suite["defenders"] == "deconv" and suite["defense"] == "partition"
    config = ModelSpec.from_dict(json.loads(suite["config_json"]))
    assert config.partition_suite == ("pool1", "pool2") and config.model_id("suites") == suite["model_id"]
    # it trained with its defenders: the epoch's distance is the mean of the two partitions'
    assert epochs.loc[epochs["model_id"] == suite["model_id"], "distance"].notna().all()
    # which defender was best, per epoch: one deconv per partition, so each is its partition's
    # best on every batch; the undefended model has no defenders and no counts
    counts = epochs.loc[epochs["model_id"] == suite["model_id"], "best_defender_counts"]
    assert all(len(c) == 2 and c[0] == c[1] > 0 for c in counts)
    undefended = models.loc[models["lam"] == 0, "model_id"].item()
    assert epochs.loc[epochs["model_id"] == undefended, "best_defender_counts"].isna().all()

    # Each attack exactly once: the suite model at each of its partitions, the undefended one
    # at every partition of the grid (the suite's pool2 too), the pool1 model at pool1.
    assert attacks["attack_id"].is_unique and (attacks["status"] == "ok").all()
    where = attacks.merge(models, on="model_id", suffixes=("", "_model"))
    placed = sorted(
        zip(where["partition_suite"].fillna(where["partition_model"].fillna("-")), where["partition"])
    )
    assert placed == [
        ("-", "pool1"),
        ("-", "pool2"),
        ("pool1", "pool1"),
        ("pool1+pool2", "pool1"),
        ("pool1+pool2", "pool2"),
    ]
    assert unfinished(ResultStore(str(tmp_path / "res")), spec) == []

    # The report's comparison: the suite at pool1 beside the pool1 model, at pool2 alone.
    t = partition_suites(load(str(tmp_path / "res"))).set_index("partition")
    assert list(t.index) == ["pool1", "pool2"]
    assert t["suite_ssim_mean"].notna().all() and t["suite_test_acc_mean"].notna().all()
    assert t.loc["pool1", "single_ssim_mean"] == pytest.approx(
        where.loc[where["partition_model"].eq("pool1"), "ssim"].item()
    )
    assert pd.isna(t.loc["pool2", "single_ssim_mean"])

    # Resumed: every model and attack is found done; no file is written again.
    files = sorted((tmp_path / "res").rglob("*.parquet"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    run_sweep(spec, resume=True, verbose=False)
    assert sorted((tmp_path / "res").rglob("*.parquet")) == files
    assert [f.stat().st_mtime_ns for f in files] == mtimes
