"""A user's module outside the package (the README's "Extending" example, written to a temporary
folder) registers a network, a decoder, a data set and a defense, and a real farm sweep trains
and attacks with them (issue 16, item 4).

The sweep runs in a child process (this file run as a script) that starts its own Ray, as a
driver does: the shared Ray of the farm tests was started without the plugins' runtime env. The
child finds the module only through its own ``sys.path``, not the environment, its working
directory or its script's folder (which Ray would hand to its workers), so every worker that
knows ``tiny_cnn`` learnt it from the job's runtime env (setup hook + ``py_modules``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.farm

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_plugin() -> str:
    """The README's my_plugins.py: its python blocks that start with that file name."""
    return "\n".join(re.findall(r"```python\n(# my_plugins\.py.*?)```", README.read_text(), re.S))


def test_train_runtime_env_carries_the_plugins_beside_the_farm_settings(tmp_path, monkeypatch):
    from pp_cluster.farm.sweep import TRAIN_ENV, train_runtime_env
    from pp_cluster.plugins import PLUGINS_ENV
    from pp_cluster.results import store

    monkeypatch.setattr(store, "_git_sha", lambda repo: "abc123")  # the driver's checkout
    assert train_runtime_env() == {"env_vars": {**TRAIN_ENV, store.GIT_SHA_ENV: "abc123"}}
    monkeypatch.setattr(store, "_git_sha", lambda repo: None)  # an installed copy: no commit to hand on
    monkeypatch.delenv(store.GIT_SHA_ENV, raising=False)
    assert train_runtime_env() == {"env_vars": TRAIN_ENV}
    (tmp_path / "rt_env_plugin_zz.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__("rt_env_plugin_zz")
    env = train_runtime_env(("rt_env_plugin_zz",), {"AWS_ACCESS_KEY_ID": "k"})
    assert env["env_vars"] == {**TRAIN_ENV, "AWS_ACCESS_KEY_ID": "k", PLUGINS_ENV: "rt_env_plugin_zz"}
    assert env["worker_process_setup_hook"] == "pp_cluster.plugins.setup_worker"
    assert env["py_modules"] == [str((tmp_path / "rt_env_plugin_zz.py").resolve())]
    sys.modules.pop("rt_env_plugin_zz")


@pytest.mark.timeout(400)
def test_a_plugin_outside_the_package_runs_a_farm_sweep_with_its_own_net_attacker_and_defense(tmp_path):
    import pandas as pd

    src, run, results = tmp_path / "src", tmp_path / "run", tmp_path / "results"
    src.mkdir()
    run.mkdir()
    (src / "my_plugins.py").write_text(readme_plugin())
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    child = subprocess.run(
        [sys.executable, __file__, str(src), str(results)],
        env=env,
        cwd=run,
        capture_output=True,
        text=True,
        timeout=360,
    )
    assert child.returncode == 0, (child.stdout + child.stderr)[-6000:]

    models, attacks = pd.read_parquet(results / "models"), pd.read_parquet(results / "attacks")
    assert len(models) == 2 and (models["status"] == "ok").all()
    assert set(models["arch"]) == {"tiny_cnn"} and set(models["dataset"]) == {"stripes"}
    assert sorted(models["defense"]) == ["none", "shrink"]
    defended = models[models["defense"] == "shrink"].iloc[0]
    assert defended["lam"] == 1.0 and defended["final_distance"] >= 0  # the defense's own mean(h²)
    assert len(attacks) == 4 and (attacks["status"] == "ok").all()  # 2 models × block1 × 2 attackers
    assert sorted(attacks["attacker"].unique()) == ["mean_image", "upsampler"]
    assert attacks.loc[attacks["attacker"] == "upsampler", "attacker_arch"].str.startswith("Upsample").all()


if __name__ == "__main__":
    src_dir, results_dir = sys.argv[1:3]
    sys.path.insert(0, src_dir)  # the driver finds the plugin; its workers only through the runtime env

    from pp_cluster.config import Resources, SweepSpec
    from pp_cluster.farm.sweep import run_sweep

    spec = SweepSpec(
        name="plugins",
        dataset="stripes",
        dataset_options={"n": 120},
        arch="tiny_cnn",
        arch_options={"width": 4},
        partitions=("block1",),
        lams=(0.0, 1.0),
        defense="shrink",
        attackers=("upsampler", "mean_image"),
        epochs=1,
        attack_epochs=1,
        results=results_dir,
        plugins=("my_plugins",),
        resources=Resources(pool_size=1, attacker_cpus=0.5, cpus_per_worker=1.0, max_failures=0),
    )
    outcome = run_sweep(spec, num_cpus=4)
    sys.exit(0 if outcome.n_errored == 0 else 1)
