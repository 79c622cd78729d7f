"""Resume: kill the sweep driver with SIGKILL after its first model, rerun the same command,
and every model and (model, attacker) row exists exactly once, the finished work not redone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.farm

REPO = Path(__file__).resolve().parents[2]


def _command(results: Path) -> list[str]:
    return [sys.executable, str(REPO / "sweeps" / "lfw_grid.py"), "--quick", "--resume", "--name", "killed",
            "--results", str(results), "--partitions", "pool1,pool2", "--lams", "0,1", "--epochs", "2",
            "--attack-epochs", "1", "--attackers", "fc,deconv", "--seeds", "0", "--num-cpus", "2"]


def test_sigkilled_driver_resumes_without_duplicates_or_rework(tmp_path):
    results = tmp_path / "res"
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    first = subprocess.Popen(_command(results), env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    models_dir = results / "models"
    deadline = time.time() + 400
    try:
        while not (models_dir.exists() and any(models_dir.rglob("*.parquet"))):
            assert first.poll() is None, "the sweep ended before a model finished"
            assert time.time() < deadline, "no model finished in time"
            time.sleep(0.5)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    done_before = {f.name: f.stat().st_mtime_ns for f in models_dir.rglob("*.parquet")}
    assert len(done_before) < 3

    second = subprocess.run(_command(results), env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]

    models = pd.read_parquet(models_dir)
    attacks = pd.read_parquet(results / "attacks")
    # One undefended model (attacked at both partitions) and one defended model per partition.
    assert len(models) == 3 and models["model_id"].is_unique
    assert sorted(models["partition"].fillna("-")) == ["-", "pool1", "pool2"]
    assert len(attacks) == 8 and attacks["attack_id"].is_unique
    undefended = models.loc[models["lam"] == 0, "model_id"].item()
    expected = {(undefended, p, a) for p in ("pool1", "pool2") for a in ("fc", "deconv")}
    expected |= {(m, p, a) for m, p in models.loc[models["lam"] > 0, ["model_id", "partition"]].values
                 for a in ("fc", "deconv")}
    assert set(map(tuple, attacks[["model_id", "partition", "attacker"]].values)) == expected
    # The model that had finished before the kill was not trained again.
    for name, mtime in done_before.items():
        assert next(models_dir.rglob(name)).stat().st_mtime_ns == mtime
