"""One local Ray cluster for the farm tests (starting Ray costs seconds; share it)."""

from __future__ import annotations

import os

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
