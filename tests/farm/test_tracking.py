"""Per-epoch reports (issue 17): a trial reports every epoch to Tune as it ends and once after
its attacks; Tune's result files and the caller's callbacks get them all, the MLflow extra
logs them, and the progress line shows where each running trial is."""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from types import SimpleNamespace

import pandas as pd
import pytest
import ray.tune as tune

from pp_cluster.cli import main, tune_callbacks
from pp_cluster.config import Resources, SpecError
from pp_cluster.farm.progress import Progress
from pp_cluster.farm.sweep import TUNE_DRIVER_ENV, mlflow_callback, run_sweep


class Recorder(tune.Callback):
    """A user's callback: every result of every trial, in order."""

    def __init__(self) -> None:
        self.results: dict[str, list[dict]] = defaultdict(list)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.results[trial.trial_id].append(result)


def _check_reports(reports: list[dict], epochs: pd.DataFrame, n_epochs: int) -> None:
    """One trial's reports: ``n_epochs`` epoch reports equal to its ``epochs`` rows, then the
    final one with the attack metrics (a search's objective)."""
    *per_epoch, final = reports
    assert [r["epoch"] for r in per_epoch] == list(range(1, n_epochs + 1)) and "epoch" not in final
    mine = epochs[epochs["model_id"] == final["model_id"]].sort_values("epoch")
    assert [r["task_loss"] for r in per_epoch] == pytest.approx(list(mine["task_loss"]))
    assert [r["test_acc"] for r in per_epoch] == pytest.approx(list(mine["test_acc"]))
    for r in per_epoch:
        assert 0 <= r["train_acc"] <= 1 and r["epoch_seconds"] > 0 and "worst_ssim" not in r
    defended = final["config"]["model"]["lam"] > 0
    assert all(("distance" in r) == defended for r in per_epoch)
    assert final["test_acc"] == pytest.approx(per_epoch[-1]["test_acc"])  # the trained model's
    assert 0 <= final["worst_ssim"] <= 1 and final["status"] == "ok"


@pytest.mark.farm
def test_every_epoch_reaches_tune_results_and_user_callbacks(tiny_sweep, ray_cluster, tmp_path):
    spec = tiny_sweep(tmp_path / "res", name="epochs", partitions=("pool1",), epochs=2, attackers=("fc",))
    rec = Recorder()
    env = {k: os.environ.get(k) for k in TUNE_DRIVER_ENV}
    outcome = run_sweep(spec, verbose=False, callbacks=[rec])
    assert {k: os.environ.get(k) for k in TUNE_DRIVER_ENV} == env  # set for Tune's run only
    assert outcome.n_trials == 2 and outcome.n_errored == 0
    epochs = pd.read_parquet(tmp_path / "res" / "epochs")
    assert len(rec.results) == 2
    for reports in rec.results.values():
        _check_reports(reports, epochs, 2)

    # Tune's own result data (the JSON lines its logger writes per trial) holds the same.
    files = sorted((tmp_path / "res" / "_ray" / "epochs").glob("*/result.json"))
    assert len(files) == 2
    for f in files:
        rows = [json.loads(line) for line in f.read_text().splitlines()]
        assert [r.get("epoch") for r in rows] == [1, 2, None]
        assert rec.results[rows[0]["trial_id"]][-1]["worst_ssim"] == rows[-1]["worst_ssim"]


@pytest.mark.farm
def test_a_ddp_models_epochs_reach_tune_from_its_worker_group(tiny_sweep, ray_cluster, tmp_path):
    """num_workers > 1: rank 0's ray.train.report reaches the trial through TuneReportCallback."""
    spec = tiny_sweep(
        tmp_path / "res",
        name="ddp_epochs",
        partitions=("pool1",),
        lams=(1.0,),
        epochs=2,
        attackers=("fc",),
        resources=Resources(
            num_workers=2, cpus_per_worker=1.0, pool_size=1, attacker_cpus=0.5, max_failures=1
        ),
    )
    rec = Recorder()
    outcome = run_sweep(spec, verbose=False, callbacks=[rec])
    assert outcome.n_errored == 0 and len(rec.results) == 1
    (reports,) = rec.results.values()
    _check_reports(reports, pd.read_parquet(tmp_path / "res" / "epochs"), 2)


@pytest.mark.farm
def test_optuna_learns_from_each_trials_last_report(tiny_sweep, ray_cluster, tmp_path, monkeypatch):
    """Epoch reports lack the search's objective (worst_ssim); the study gets the last report."""
    from ray.tune.search.optuna import OptunaSearch

    studies = []
    told = OptunaSearch.on_trial_complete

    def on_trial_complete(self, trial_id, result=None, error=False):
        told(self, trial_id, result, error)
        studies.append(self._ot_study)

    monkeypatch.setattr(OptunaSearch, "on_trial_complete", on_trial_complete)
    spec = tiny_sweep(
        tmp_path / "res",
        name="opt_epochs",
        search="optuna",
        lam_range=(0.1, 10.0),
        num_samples=2,
        epochs=2,
        attackers=("fc",),
    )
    rec = Recorder()
    run_sweep(spec, verbose=False, callbacks=[rec])
    trials = studies[-1].get_trials()
    assert len(trials) == 2 and all(t.state.name == "COMPLETE" for t in trials)
    assert all(len(reports) == 3 for reports in rec.results.values())  # 2 epochs, then the last
    last = [(r[-1]["test_acc"], r[-1]["worst_ssim"]) for r in rec.results.values()]
    assert sorted(tuple(t.values) for t in trials) == sorted(last)


@pytest.mark.farm
def test_mlflow_logs_a_run_per_trial_with_every_epoch(tiny_sweep, ray_cluster, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    spec = tiny_sweep(
        tmp_path / "res", name="tracked", partitions=("pool1",), lams=(1.0,), epochs=3, attackers=("fc",)
    )
    run_sweep(spec, verbose=False, callbacks=[mlflow_callback(spec)])  # the default local store

    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'res' / '_mlflow' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("tracked").experiment_id])
    assert run.data.params["model/partition"] == "pool1" and float(run.data.params["model/lam"]) == 1.0
    epochs = pd.read_parquet(tmp_path / "res" / "epochs").sort_values("epoch")
    history = {
        name: [
            m.value for m in sorted(client.get_metric_history(run.info.run_id, name), key=lambda m: m.step)
        ]
        for name in ("task_loss", "distance", "test_acc", "worst_ssim")
    }
    assert history["task_loss"] == pytest.approx(list(epochs["task_loss"]))
    assert history["distance"] == pytest.approx(list(epochs["distance"]))
    assert (
        history["test_acc"][:3] == pytest.approx(list(epochs["test_acc"])) and len(history["test_acc"]) == 4
    )
    models = pd.read_parquet(tmp_path / "res" / "models")
    assert history["test_acc"][-1] == pytest.approx(models["test_acc"].iloc[0])
    attacks = pd.read_parquet(tmp_path / "res" / "attacks")
    assert history["worst_ssim"] == pytest.approx([attacks["ssim"].max()])


@pytest.mark.farm
def test_progress_line_shows_each_running_trials_epoch(tiny_sweep, ray_cluster, tmp_path, capsys):
    progress = Progress(tiny_sweep(tmp_path, epochs=20), n_trials=3)
    a, b, c = (SimpleNamespace(trial_id=name) for name in "abc")
    for t in (a, b, c):
        progress.on_trial_start(0, [], t)
    progress.on_trial_result(0, [], a, {"epoch": 3})
    progress.on_trial_result(0, [], b, {"epoch": 19})
    progress.on_trial_result(0, [], b, {"epoch": 20})
    progress.on_trial_result(0, [], b, {"test_acc": 0.5, "worst_ssim": 0.2})  # its last report
    progress.on_trial_complete(0, [], c)
    assert "trials 1/3 done, 2 running (epoch 3/20, 20/20), 0 failed" in capsys.readouterr().err
    progress.on_trial_complete(0, [], b)
    progress.on_trial_error(0, [], a)
    assert "trials 2/3 done, 0 running, 1 failed |" in capsys.readouterr().err


def test_callbacks_mlflow_without_mlflow_is_a_usage_error_before_ray_starts(tmp_path, monkeypatch, capsys):
    import pp_cluster.farm.sweep as sweep_module

    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    monkeypatch.setattr(sweep_module, "run_sweep", lambda *a, **k: pytest.fail("the sweep started"))
    argv = ["sweep", "mnist_table1", "--quick", "--results", str(tmp_path / "res"), "--callbacks", "mlflow"]
    assert main(argv) == 2
    assert "MLflow tracking needs MLflow: pip install 'pp_cluster[track]'" in capsys.readouterr().err
    assert not (tmp_path / "res").exists()

    assert main([*argv[:-1], "tensorboard"]) == 2
    assert "run_sweep(callbacks=[...])" in capsys.readouterr().err


def test_callbacks_mlflow_takes_a_tracking_uri_and_needs_one_for_remote_results(tiny_sweep, tmp_path):
    pytest.importorskip("mlflow")
    (cb,) = tune_callbacks(["mlflow:http://tracker:5000"], tiny_sweep(tmp_path / "res"))
    assert cb.tracking_uri == "http://tracker:5000" and cb.experiment_name == "tiny"
    assert not (tmp_path / "res").exists()  # an explicit store: nothing made under the results
    with pytest.raises(SpecError, match="give a tracking URI"):
        tune_callbacks(["mlflow"], tiny_sweep("s3://bucket/prefix"))
    (cb,) = tune_callbacks(["mlflow"], tiny_sweep(tmp_path / "res"))
    assert cb.tracking_uri == f"sqlite:///{tmp_path / 'res' / '_mlflow' / 'mlflow.db'}"
