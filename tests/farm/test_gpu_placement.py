"""GPU placement on a node with exactly two *logical* GPUs (no CUDA behind them; issue 19):

- a 2-worker DDP model asks for 2 GPUs and is placed and finishes (its trial holds no GPU of
  its own: a sliver would leave the workers one short), training on the CPU, as a worker on a
  logical GPU must;
- a ``--no-gpu`` sweep on that node, in processes that believe they see CUDA (a plugin patches
  ``torch.cuda.is_available`` in every worker), trains and attacks on the CPU and its rows name
  no GPU;
- a DDP model that needs 3 GPUs is refused by the capacity check before any trial starts.

The cluster lives in a child process (this file run as a script), as in test_multinode: the
other farm tests share one plain ``ray.init`` in this process.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import pytest
from conftest import observe_child, scenario

pytestmark = pytest.mark.farm

CHILD_TIMEOUT_S = 600
# Imported in every Ray worker by the --plugins mechanism: each process "sees" a CUDA card.
SIM_CUDA = """
import torch

torch.cuda.is_available = lambda: True
torch.cuda.device_count = lambda: 1
torch.cuda.get_device_name = lambda *a, **k: "simulated card"
torch.cuda.current_device = lambda: 0
"""


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    return observe_child(__file__, tmp_path_factory.mktemp("gpus"), CHILD_TIMEOUT_S)


@pytest.mark.timeout(CHILD_TIMEOUT_S + 120)
def test_a_two_worker_ddp_model_is_placed_on_two_logical_gpus_and_finishes(observed):
    facts = scenario(observed, "ddp")
    assert facts["n_errored"] == 0 and facts["statuses"] == ["ok"]
    assert facts["gpu"] == [None]  # trained on the CPU: no CUDA behind the logical GPUs
    assert facts["attacks"] == ["ok"]


@pytest.mark.timeout(CHILD_TIMEOUT_S + 120)
def test_a_no_gpu_sweep_stays_on_the_cpu_where_cuda_looks_visible(observed):
    facts = scenario(observed, "no_gpu")
    assert facts["n_errored"] == 0 and set(facts["statuses"]) == {"ok"}
    assert facts["saw_cuda"] is True  # the plugin made every worker believe in a card
    assert set(facts["gpu"]) == {None} and set(facts["attack_gpu"]) == {None}


@pytest.mark.timeout(CHILD_TIMEOUT_S + 120)
def test_a_model_needing_more_gpus_than_the_node_has_is_refused_first(observed):
    facts = scenario(observed, "too_big")
    assert "needs 3 GPU" in facts["refused"] and facts["models_written"] == 0


# --- the child ----------------------------------------------------------------------------


def _child(work: Path, out: Path) -> None:
    import ray

    sys.path.insert(0, str(work))
    (work / "sim_cuda.py").write_text(SIM_CUDA)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from conftest import _tiny_sweep

    from pp_cluster.config import Resources, SpecError
    from pp_cluster.farm.sweep import TRAIN_ENV, run_sweep, train_runtime_env
    from pp_cluster.results.store import ResultStore

    def start(plugins=()):
        ray.init(
            address="local",
            num_cpus=4,
            num_gpus=2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            runtime_env=train_runtime_env(plugins) if plugins else {"env_vars": TRAIN_ENV},
        )

    facts: dict = {}

    def record(name, fn):
        try:
            facts[name] = fn()
        except Exception:
            facts[name] = {"error": traceback.format_exc()}
        out.write_text(json.dumps(facts))

    def tables(results, sweep):
        store = ResultStore(str(results))
        return store.read("models", sweep), store.read("attacks", sweep)

    def ddp():
        spec = _tiny_sweep(
            work / "ddp",
            name="ddp",
            partitions=("pool1",),
            lams=(1.0,),
            attackers=("fc",),
            resources=Resources(
                num_workers=2,
                use_gpu=True,
                cpus_per_worker=1.0,
                pool_size=1,
                attacker_cpus=0.5,
                max_failures=0,
            ),
        )
        outcome = run_sweep(spec, verbose=False)
        models, attacks = tables(work / "ddp", "ddp")
        return {
            "n_errored": outcome.n_errored,
            "statuses": models["status"].tolist(),
            "gpu": models["gpu"].astype(object).where(models["gpu"].notna(), None).tolist(),
            "attacks": attacks["status"].tolist(),
        }

    def no_gpu():
        spec = _tiny_sweep(
            work / "cpu",
            name="cpu",
            partitions=("pool1",),
            lams=(0.0, 1.0),
            attackers=("fc",),
            plugins=("sim_cuda",),
            resources=Resources(use_gpu=False, pool_size=1, attacker_cpus=0.5, max_failures=0),
        )
        outcome = run_sweep(spec, verbose=False)
        models, attacks = tables(work / "cpu", "cpu")

        @ray.remote(num_cpus=0.1)
        def sees_cuda() -> bool:
            import torch

            return torch.cuda.is_available()

        return {
            "n_errored": outcome.n_errored,
            "statuses": models["status"].tolist(),
            "gpu": models["gpu"].astype(object).where(models["gpu"].notna(), None).tolist(),
            "attack_gpu": attacks["gpu"].astype(object).where(attacks["gpu"].notna(), None).tolist(),
            "saw_cuda": ray.get(sees_cuda.remote()),
        }

    def too_big():
        spec = _tiny_sweep(
            work / "big",
            name="big",
            partitions=("pool1",),
            lams=(1.0,),
            attackers=("fc",),
            resources=Resources(num_workers=3, use_gpu=True, pool_size=1, attacker_cpus=0.5),
        )
        try:
            run_sweep(spec, verbose=False)
        except SpecError as e:
            models, _ = tables(work / "big", "big")
            return {"refused": str(e), "models_written": len(models)}
        return {"refused": "", "models_written": -1}

    start()
    record("ddp", ddp)
    record("too_big", too_big)
    ray.shutdown()
    # Every worker of this cluster imports the plugin (and so does this driver, which ships
    # it): each believes it sees a card.
    import sim_cuda  # noqa: F401

    start(plugins=("sim_cuda",))
    record("no_gpu", no_gpu)
    ray.shutdown()


if __name__ == "__main__":
    _child(Path(sys.argv[1]), Path(sys.argv[2]))
