"""The farm end to end on a local Ray cluster: real Tune trials, Train runs, attacker
actors and Parquet tables read back with pandas."""

from __future__ import annotations

import pandas as pd
import pytest

from pp_cluster.farm.sweep import run_sweep

pytestmark = pytest.mark.farm


def test_grid_sweep_writes_every_row_once_with_documented_dtypes(tiny_sweep, ray_cluster, tmp_path):
    spec = tiny_sweep(tmp_path / "res")
    outcome = run_sweep(spec, verbose=False)
    # One undefended model (it does not depend on the partition) and one defended per partition.
    assert outcome.n_trials == 3 and outcome.n_errored == 0

    models = pd.read_parquet(tmp_path / "res" / "models")
    attacks = pd.read_parquet(tmp_path / "res" / "attacks")
    epochs = pd.read_parquet(tmp_path / "res" / "epochs")
    assert len(models) == 3 and models["model_id"].is_unique
    assert sorted(zip(models["partition"].fillna("-"), models["lam"])) == [
        ("-", 0.0),
        ("pool1", 1.0),
        ("pool2", 1.0),
    ]
    assert (models["status"] == "ok").all() and models["recipe"].eq("paper").all()
    assert models.loc[models["lam"] == 0, "defenders"].eq("").all()
    assert models.loc[models["lam"] > 0, "defenders"].eq("deconv").all()
    # The undefended model is attacked at both partitions, a defended one at its own.
    assert len(attacks) == 8 and attacks["attack_id"].is_unique
    joined = attacks.merge(models, on="model_id", suffixes=("", "_model"))
    assert set(map(tuple, joined[["lam", "partition", "attacker"]].values)) == {
        (lam, p, a) for lam in (0.0, 1.0) for p in ("pool1", "pool2") for a in ("deconv", "fc")
    }
    defended = joined[joined["lam"] > 0]
    assert (defended["partition"] == defended["partition_model"]).all()
    assert joined["ssim_images"].map(len).eq(joined["n_eval"]).all()
    assert len(epochs) == 3  # one epoch per model
    for col in ("test_acc", "lam", "train_seconds"):
        assert models[col].dtype == "float64", col
    for col in ("mse", "ssim", "psnr"):
        assert attacks[col].dtype == "float64", col
        assert attacks[col].notna().all()
    assert attacks["ssim"].between(-1, 1).all() and (attacks["mse"] >= 0).all()
    # DPD needs LPIPS backbone weights that are not available offline: null with a reason.
    assert attacks["dpd"].isna().all() == attacks["dpd_reason"].notna().all()


def test_rerun_without_resume_is_refused_and_resume_redoes_nothing(
    tiny_sweep, ray_cluster, tmp_path, monkeypatch
):
    from pp_cluster.config import SpecError

    # A relative results path, as users type it: trials run with other working directories.
    monkeypatch.chdir(tmp_path)
    spec = tiny_sweep("res", name="again", partitions=("pool1",), lams=(0.0,), attackers=("fc",))
    run_sweep(spec, verbose=False)
    files = sorted((tmp_path / "res").rglob("*.parquet"))
    assert {f.parent.parent.name for f in files} == {"models", "attacks", "epochs"}
    mtimes = [f.stat().st_mtime_ns for f in files]
    with pytest.raises(SpecError, match="already exists.*--resume"):
        run_sweep(spec, verbose=False)  # the first run's manifest exists: refused
    run_sweep(spec, resume=True, verbose=False)
    assert sorted((tmp_path / "res").rglob("*.parquet")) == files
    assert [f.stat().st_mtime_ns for f in files] == mtimes


def test_a_resume_with_another_lam_trains_only_its_models_and_the_whole_grid_then_resumes(
    tiny_sweep, ray_cluster, tmp_path
):
    from pp_cluster.farm import manifest

    base = dict(name="grow", partitions=("pool1",), attackers=("fc",))
    first = tiny_sweep(tmp_path / "res", lams=(0.0,), **base)
    run_sweep(first, verbose=False)
    before = {f: f.stat().st_mtime_ns for f in (tmp_path / "res").rglob("*.parquet")}
    run_sweep(tiny_sweep(tmp_path / "res", lams=(1.0,), **base), resume=True, verbose=False)
    models = pd.read_parquet(tmp_path / "res" / "models")
    assert sorted(models["lam"]) == [0.0, 1.0] and models["model_id"].is_unique
    attacks = pd.read_parquet(tmp_path / "res" / "attacks")
    assert not attacks.duplicated(["model_id", "attacker", "partition"]).any() and len(attacks) == 2
    assert all(f.stat().st_mtime_ns == t for f, t in before.items())  # the λ = 0 rows untouched
    assert manifest.read(first.results_uri(), "grow")["spec"]["lams"] == [0.0, 1.0]
    files = {f: f.stat().st_mtime_ns for f in (tmp_path / "res").rglob("*.parquet")}
    run_sweep(tiny_sweep(tmp_path / "res", lams=(0.0, 1.0), **base), resume=True, verbose=False)
    assert {f: f.stat().st_mtime_ns for f in (tmp_path / "res").rglob("*.parquet")} == files


def test_optuna_search_marks_the_pareto_models(tiny_sweep, ray_cluster, tmp_path):
    spec = tiny_sweep(
        tmp_path / "res", name="opt", search="optuna", lam_range=(0.1, 10.0), num_samples=3, attackers=("fc",)
    )
    outcome = run_sweep(spec, verbose=False)
    assert outcome.n_trials == 3
    models = pd.read_parquet(tmp_path / "res" / "models")
    attacks = pd.read_parquet(tmp_path / "res" / "attacks")
    assert 1 <= len(models) <= 3 and models["pareto"].notna().all()
    worst = attacks.groupby("model_id")["ssim"].max()
    acc = models.set_index("model_id")["test_acc"]
    for m in models["model_id"]:
        dominated = ((acc >= acc[m]) & (worst <= worst[m]) & ((acc > acc[m]) | (worst < worst[m]))).any()
        assert bool(models.set_index("model_id").loc[m, "pareto"]) == (not dominated)


def test_two_worker_ddp_model_trains_in_a_worker_group(tiny_sweep, ray_cluster, tmp_path):
    """num_workers > 1: a Train worker group with DDP (gloo on CPU) instead of local mode;
    the model's state file records its epochs and final weights, which a retried trial reuses."""
    from pp_cluster.config import Resources
    from pp_cluster.farm.train import _load, state_uri

    spec = tiny_sweep(
        tmp_path / "res",
        name="ddp",
        partitions=("pool1",),
        lams=(1.0,),
        epochs=2,
        attackers=("fc",),
        resources=Resources(
            num_workers=2,
            cpus_per_worker=1.0,
            pool_size=1,
            attacker_cpus=0.5,
            max_failures=1,
            checkpoint_interval_s=0,
        ),
    )
    outcome = run_sweep(spec, verbose=False)
    assert outcome.n_trials == 1 and outcome.n_errored == 0
    models = pd.read_parquet(tmp_path / "res" / "models")
    epochs = pd.read_parquet(tmp_path / "res" / "epochs")
    assert len(models) == 1 and models["status"].eq("ok").all()
    assert sorted(epochs["epoch"]) == [1, 2]
    model_id = models["model_id"].iloc[0]
    saved = _load(state_uri(spec.storage(), model_id))
    assert saved["done"] and [r["epoch"] for r in saved["history"]] == [1, 2]
    assert saved["final"]["test_acc"] == pytest.approx(models["test_acc"].iloc[0])


def test_one_undefended_model_per_seed_is_attacked_at_every_partition(tiny_sweep, ray_cluster, tmp_path):
    """A λ = 0 model's identity has no partition: a 3-partition grid trains it once per seed,
    attacks it at all three partitions, and writes its DP-pixelation rows once."""
    spec = tiny_sweep(
        tmp_path / "res",
        name="undef",
        partitions=("pool1", "pool2", "pool3"),
        lams=(0.0,),
        seeds=(0, 1),
        attackers=("fc", "mean_image"),
        dp_epsilons=(1.0, float("inf")),
    )
    spec = spec.with_(arch_options={"widths": (4, 8, 8, 8), "fc": 16}, dataset_options={"size": 32})
    outcome = run_sweep(spec, verbose=False)
    assert outcome.n_trials == 2 and outcome.n_errored == 0
    models = pd.read_parquet(tmp_path / "res" / "models")
    attacks = pd.read_parquet(tmp_path / "res" / "attacks")
    trained = models[models["defense"] == "none"]
    assert sorted(trained["seed"]) == [0, 1] and trained["partition"].isna().all()
    dp = models[models["defense"] == "dp_pixelation"]
    assert len(dp) == 4 and dp["model_id"].is_unique  # 2 undefended models × 2 ε, once each
    real = attacks[attacks["attacker"] != "dp_pixelation"]
    assert len(real) == 2 * 3 * 2 and real["attack_id"].is_unique
    for model_id in trained["model_id"]:
        mine = real[real["model_id"] == model_id]
        assert sorted(map(tuple, mine[["partition", "attacker"]].values)) == sorted(
            (p, a) for p in ("pool1", "pool2", "pool3") for a in ("fc", "mean_image")
        )
    # The mean-image baseline ignores H: the same reconstruction, so the same SSIM, at every partition.
    base = real[real["attacker"] == "mean_image"].groupby("model_id")["ssim"].agg(["min", "max"])
    assert (base["max"] - base["min"]).abs().max() < 1e-12
    assert len(attacks[attacks["attacker"] == "dp_pixelation"]) == 4
