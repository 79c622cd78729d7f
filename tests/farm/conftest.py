"""One local Ray cluster for the farm tests (starting Ray costs seconds; share it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pp_cluster.config import Resources, SweepSpec


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    # Four logical CPUs on a 2-core machine: a trial's Train worker and the attacker
    # actors can then run side by side, as they would on a real node.
    from pp_cluster.farm.sweep import TRAIN_ENV

    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": TRAIN_ENV},
    )
    yield ray
    ray.shutdown()


@pytest.fixture
def tiny_sweep():
    """Builder of the smallest real sweep: embedded LFW faces, a narrow face CNN, one epoch."""
    return _tiny_sweep


def _tiny_sweep(results, name="tiny", **changes) -> SweepSpec:
    spec = SweepSpec(
        name=name,
        dataset="lfw-subset",
        dataset_options={"size": 16},
        arch="face_cnn",
        arch_options={"widths": (4, 8, 8, 8), "fc": 16},
        partitions=("pool1", "pool2"),
        lams=(0.0, 1.0),
        defender_suites=(("deconv",),),
        attackers=("deconv", "fc"),
        seeds=(0,),
        epochs=1,
        batch_size=32,
        attack_epochs=1,
        results=str(results),
        resources=Resources(pool_size=2, attacker_cpus=0.5, cpus_per_worker=1.0, max_failures=1),
    )
    return spec.with_(**changes)


def observe_child(script: str, work: Path, timeout_s: float) -> dict:
    """Run ``script`` (a test file whose ``__main__`` starts its own Ray cluster: a driver can
    be connected to one cluster only, and this process holds ``ray_cluster``) as a child with
    (work, out.json) and return what it wrote there, plus the tail of its log as ``log_tail``.
    The child's whole process group (its raylets and workers too) is killed after ``timeout_s``."""
    out, log = work / "observed.json", work / "child.log"
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    with open(log, "w") as log_f:
        child = subprocess.Popen(
            [sys.executable, script, str(work), str(out)],
            env=env,
            stdout=log_f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
    tail = log.read_text(errors="replace")[-6000:]
    assert out.exists(), f"the child {Path(script).name} wrote nothing (exit {child.returncode}):\n{tail}"
    facts = json.loads(out.read_text())
    facts["log_tail"] = tail
    return facts


def scenario(observed: dict, name: str) -> dict:
    """One scenario's facts from :func:`observe_child`; fails with the child's log if it did not
    run or raised."""
    facts = observed.get(name)
    assert facts is not None, f"scenario {name!r} did not run:\n{observed['log_tail']}"
    assert "error" not in facts, f"scenario {name!r} raised:\n{facts['error']}\n{observed['log_tail']}"
    return facts
