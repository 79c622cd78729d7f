"""Multi-node behaviour on one machine: a ``ray.cluster_utils.Cluster`` with a head that offers
no CPU or GPU (as in cluster.yaml) and two worker nodes with one *logical* GPU each (no CUDA:
torch must still run, on CPU).

- trials (which train their one-worker models in-process) and the attacker actors run on the
  worker nodes and hold the (fractional) GPU resources asked for; the pool's manager stays
  on the head;
- a worker node removed in the middle of a sweep (while a model trains): the sweep completes,
  the interrupted trial is retried, and every model, epoch and (model, attacker) row exists
  exactly once.

The cluster lives in a child process (this file run as a script): the farm tests share one
plain ``ray.init`` in this process (``conftest.ray_cluster``), and a driver can be connected to
one cluster only. The child writes what it observed as JSON; the tests below judge it.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

import pytest
from conftest import observe_child, scenario

pytestmark = pytest.mark.farm

HERE = Path(__file__).resolve().parent
CHILD_TIMEOUT_S = 720
WORKER_NODE = {"num_cpus": 2, "num_gpus": 1}
TRIAL_CLASS = "ImplicitFunc"  # the actor class Tune runs a function trainable in


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    """Run both scenarios on one cluster in a child process; their observations."""
    return observe_child(__file__, tmp_path_factory.mktemp("multinode"), CHILD_TIMEOUT_S)


def _tables(results: str, sweep: str):
    from pp_cluster.results.store import ResultStore

    store = ResultStore(results)
    return store.read("models", sweep), store.read("attacks", sweep), store.read("epochs", sweep)


def _check_every_row_once(facts, attackers, epochs):
    models, attacks, epochs_df = _tables(facts["results"], facts["sweep"])
    assert len(models) == facts["n_trials"] and models["model_id"].is_unique
    assert (models["status"] == "ok").all(), models[["model_id", "status", "error"]]
    assert attacks["attack_id"].is_unique and (attacks["status"] == "ok").all()
    pairs = list(zip(attacks["model_id"], attacks["attacker"]))
    assert sorted(pairs) == sorted((m, a) for m in models["model_id"] for a in attackers)
    rows = list(zip(epochs_df["model_id"], epochs_df["epoch"]))
    assert sorted(rows) == sorted((m, e) for m in models["model_id"] for e in range(1, epochs + 1))
    return models, attacks


@pytest.mark.timeout(CHILD_TIMEOUT_S + 120)
def test_trials_and_attackers_run_on_gpu_workers_with_their_resources(observed):
    facts = scenario(observed, "spread")
    head, workers = observed["head"], set(observed["workers"])
    assert facts["n_errored"] == 0
    _check_every_row_once(facts, attackers=("fc",), epochs=1)

    actors = facts["actors"]
    by_class = {}
    for a in actors:
        by_class.setdefault(a["cls"], []).append(a)
    # A one-worker model trains inside its trial (Ray Train's local mode): the trials (Tune's
    # actors) hold the fractional GPU and the CPU asked for, on the GPU workers, and no
    # Train worker group is started.
    trials = by_class.get(TRIAL_CLASS, [])
    assert len(trials) == facts["n_trials"], [a["cls"] for a in actors]
    for a in trials:
        assert a["node"] in workers, a
        assert a["res"].get("GPU") == pytest.approx(0.5) and a["res"].get("CPU") == pytest.approx(0.5), a
    assert "RayTrainWorker" not in by_class and "TrainController" not in by_class, sorted(by_class)
    # Attackers hold their CPU and GPU share; 1.5 CPUs each on 2-CPU nodes: one per node.
    attackers = by_class.get("AttackerWorker", [])
    assert len(attackers) == 2
    for a in attackers:
        assert a["res"].get("CPU") == pytest.approx(1.5) and a["res"].get("GPU") == pytest.approx(0.25), a
    assert {a["node"] for a in attackers} == workers
    # The pool's manager stays beside the driver, on the head, whatever worker goes away.
    assert [a["node"] for a in by_class["AttackPool"]] == [head]
    # Nothing that holds CPU or GPU ran on the head.
    for a in actors:
        if a["node"] == head:
            assert not a["res"].get("CPU") and not a["res"].get("GPU"), a


@pytest.mark.timeout(CHILD_TIMEOUT_S + 120)
def test_worker_node_removed_mid_sweep_sweep_completes_every_row_once(observed):
    facts = scenario(observed, "failover")
    removed = facts["removed"]
    assert removed in observed["workers"]
    # The node went while a trial on it was training (its first epoch checkpointed, its
    # model not yet written): that trial died with it and was retried.
    assert TRIAL_CLASS in facts["alive_on_removed"], facts["alive_on_removed"]
    assert facts["models_at_removal"] == 0
    assert facts["n_errored"] == 0
    trials = [a for a in facts["actors"] if a["cls"] == TRIAL_CLASS]
    assert len(trials) > facts["n_trials"], "no trial was retried"
    assert any(a["node"] == removed for a in trials)
    assert any(a["node"] != removed and a["started_after_removal"] for a in trials)
    # Epoch rows come from the checkpointed history: the retried model resumed, without
    # a repeated or a missing epoch.
    _check_every_row_once(facts, attackers=("fc", "deconv"), epochs=3)


# -- the child: one cluster, two sweeps ----------------------------------------------------


def _actors() -> dict[str, dict]:
    """Every actor of the cluster, dead ones included, from the GCS actor table (what ``ray list
    actors`` shows; read directly because Ray's state API needs the dashboard, which is not
    installed), of the cluster this process is connected to."""
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    out = {}
    for raw in state._connect_and_get_accessor().get_actor_table(None, None):
        a = gcs_pb2.ActorTableData.FromString(raw)
        out[a.actor_id.hex()] = {
            # Tune's second trainable class of a process is "wrap_function.<locals>.ImplicitFunc".
            "cls": a.class_name.rsplit(".", 1)[-1],
            "node": a.address.node_id.hex(),
            "state": gcs_pb2.ActorTableData.ActorState.Name(a.state),
            "res": _plain(a.required_resources),
        }
    return out


def _plain(resources) -> dict[str, float]:
    """An actor's resources with placement-group bundles read as what they hold: Ray renames
    ``GPU`` inside a bundle to ``GPU_group_<pg>`` and ``GPU_group_<i>_<pg>``."""
    out: dict[str, float] = {}
    for name, amount in resources.items():
        base = name.split("_group_", 1)[0]
        if base not in ("bundle", "memory"):
            out[base] = max(out.get(base, 0.0), amount)
    return out


def _run_spread(cluster, work: Path, facts: dict) -> None:
    from conftest import _tiny_sweep

    from pp_cluster.config import Resources
    from pp_cluster.farm.sweep import run_sweep

    before = set(_actors())
    results = f"file://{work}/spread"
    spec = _tiny_sweep(
        results,
        name="spread",
        partitions=("pool1",),
        lams=(0.0, 1.0),
        attackers=("fc",),
        resources=Resources(
            use_gpu=True,
            gpus_per_trial=0.5,
            cpus_per_worker=0.5,
            pool_size=2,
            attacker_cpus=1.5,
            attacker_gpus=0.25,
            max_failures=1,
        ),
    )
    outcome = run_sweep(spec)
    facts.update(
        sweep=spec.name,
        results=results,
        n_trials=outcome.n_trials,
        n_errored=outcome.n_errored,
        actors=[a for i, a in _actors().items() if i not in before],
    )


def _run_failover(cluster, work: Path, facts: dict) -> None:
    import threading

    from conftest import _tiny_sweep

    from pp_cluster.config import Resources
    from pp_cluster.farm.sweep import run_sweep
    from pp_cluster.results.store import ResultStore

    before = set(_actors())
    results = f"file://{work}/failover"
    # use_gpu left to the farm: the cluster's (logical) GPUs decide it.
    spec = _tiny_sweep(
        results,
        name="failover",
        partitions=("pool1",),
        lams=(0.0, 1.0),
        epochs=3,
        attackers=("fc", "deconv"),
        resources=Resources(
            gpus_per_trial=0.5, cpus_per_worker=0.5, pool_size=2, attacker_cpus=0.5, checkpoint_interval_s=0
        ),
    )  # every epoch checkpoints
    nodes = {n.node_id: n for n in cluster.worker_nodes}
    checkpoints = work / "failover" / "_ray"
    store = ResultStore(results)
    finished = threading.Event()

    def remove_a_training_node() -> None:
        try:
            # The first epoch's saved state of any model: every trial alive now is unfinished.
            while not any(checkpoints.glob("train-*/state.pt")):
                if finished.wait(0.05):
                    facts["removed"] = None
                    return
            victim = None
            while victim is None and not finished.wait(0.05):
                alive = [a for a in _actors().values() if a["state"] == "ALIVE"]
                victim = next(
                    (a["node"] for a in alive if a["cls"] == TRIAL_CLASS and a["node"] in nodes), None
                )
                facts["polls"] = facts.get("polls", 0) + 1
            if victim is None:
                facts["removed"] = None
                return
            facts["models_at_removal"] = len(store.done_keys("models", spec.name))
            facts["alive_on_removed"] = sorted(a["cls"] for a in alive if a["node"] == victim)
            cluster.remove_node(nodes[victim], allow_graceful=False)
            facts["removed"] = victim
            facts["actors_at_removal"] = sorted(_actors())
        except Exception:
            facts["watcher_error"] = traceback.format_exc()

    watcher = threading.Thread(target=remove_a_training_node, daemon=True)
    watcher.start()
    try:
        outcome = run_sweep(spec)
    finally:
        finished.set()
        watcher.join(60)
    if "watcher_error" in facts:
        raise RuntimeError(facts["watcher_error"])
    at_removal = set(facts.pop("actors_at_removal", []))
    facts.update(
        sweep=spec.name,
        results=results,
        n_trials=outcome.n_trials,
        n_errored=outcome.n_errored,
        actors=[
            dict(a, started_after_removal=i not in at_removal)
            for i, a in _actors().items()
            if i not in before
        ],
    )


def _child(work: Path, out: Path, only=None) -> None:
    """``python test_multinode.py WORK OUT [spread] [failover]``: the scenarios named (all by
    default) on one fresh cluster, their observations written to OUT as JSON."""
    os.environ["RAY_AUTH_MODE"] = "disabled"
    sys.path.insert(0, str(HERE))  # conftest's tiny sweep builder
    import ray
    from ray.cluster_utils import Cluster

    from pp_cluster.farm.sweep import TRAIN_ENV

    t0 = time.time()
    facts: dict = {}

    def save() -> None:
        out.write_text(json.dumps(facts, default=str))

    # The head as in cluster.yaml: no CPU, no GPU.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "num_gpus": 0})
    try:
        for _ in range(2):
            cluster.add_node(**WORKER_NODE)
        cluster.wait_for_nodes()
        facts.update(head=cluster.head_node.node_id, workers=[n.node_id for n in cluster.worker_nodes])
        ray.init(address=cluster.address, runtime_env={"env_vars": TRAIN_ENV}, configure_logging=False)
        print(f"[multinode] cluster up in {time.time() - t0:.0f} s", flush=True)
        for name, scenario in (("spread", _run_spread), ("failover", _run_failover)):
            if only and name not in only:
                continue
            facts[name] = {}
            t = time.time()
            try:
                scenario(cluster, work, facts[name])
            except Exception:
                facts[name]["error"] = traceback.format_exc()
            print(f"[multinode] {name}: {time.time() - t:.0f} s", flush=True)
            save()
    finally:
        save()
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    _child(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
