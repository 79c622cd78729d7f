"""The main job's console is the farm's (issue 17): a sweep run from the command line prints
``[pp-farm`` lines and nothing of Ray's (start-up notices, Tune's configuration box and
TensorBoard hint, Train's local-mode notice), while a failed trial's error still shows.

Each sweep runs the CLI in a child process that starts its own Ray, as a user's would: with
``RAY_AUTH_MODE`` unset (Ray's notice about token authentication appears only then) and a
temporary HOME, where Ray writes the token it generates.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.farm

# The smallest profile: embedded digits, an MLP, one attacker; two models (λ = 0 and 1).
ARGS = ["sweep", "mnist_table1", "--quick", "--lams", "0,1", "--epochs", "2", "--attackers", "mnist_a1"]
ARGS += ["--attack-epochs", "1", "--num-cpus", "4", "--pool-size", "1"]


def _farm(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    (tmp_path / "home").mkdir()
    env["HOME"] = str(tmp_path / "home")
    return subprocess.run(
        [sys.executable, "-m", "pp_cluster.cli", *ARGS, "--results", str(tmp_path / "res"), *extra],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=400,
    )


@pytest.mark.timeout(450)
def test_a_sweep_prints_only_pp_farm_lines(tmp_path):
    child = _farm(tmp_path)
    out = child.stdout + child.stderr
    assert child.returncode == 0, out[-6000:]
    assert "sweep 'mnist_table1_quick': 2 trials (0 errored)" in out
    assert [line for line in out.splitlines() if not line.startswith("[pp-farm")] == []


@pytest.mark.timeout(450)
def test_a_failed_trials_error_is_shown(tmp_path):
    """A state file that is not the farm's fails its trial (on every retry); the error names it."""
    from pp_cluster.cli import add_sweep_args, spec_from_args
    from pp_cluster.farm.train import state_uri

    parser = argparse.ArgumentParser()
    add_sweep_args(parser)
    spec = spec_from_args(parser.parse_args([*ARGS[2:], "--results", str(tmp_path / "res")]), "mnist_table1")
    planted = state_uri(spec.storage(), spec.model_spec(None, 0.0, 0).model_id(spec.name))
    os.makedirs(os.path.dirname(planted))
    with open(planted, "wb") as f:
        f.write(b"not a state file")

    child = _farm(tmp_path)
    out = child.stdout + child.stderr
    assert child.returncode == 1, out[-6000:]  # the sweep ran; a trial errored
    assert "sweep 'mnist_table1_quick': 2 trials (1 errored)" in out
    assert f"training state {planted} is not a pp_cluster state file" in out
    assert "Traceback" in out
