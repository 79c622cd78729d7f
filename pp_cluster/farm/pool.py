"""The attacker pool: a sweep-wide set of actors that train attackers on cached activations.

Trials hand the pool one job per (model, attacker) with *references* to the model's
activations and weights (``ray.put`` once per model); the actors read them zero-copy.
An actor that dies is replaced and its job retried on another; since each attack's row is
written under its content id, a retried attack rewrites the same file, never a second row.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from pp_cluster.config import AttackSpec, ModelSpec

POOL_PREFIX = "pp_attack_pool"
NAMESPACE = "pp_cluster"


def pool_name(sweep: str) -> str:
    return f"{POOL_PREFIX}:{sweep}"


def get_pool(sweep: str):
    """The sweep's pool, from any process of the cluster (trials, the progress line)."""
    return ray.get_actor(pool_name(sweep), namespace=NAMESPACE)


@ray.remote(max_restarts=0)
class AttackerWorker:
    """Trains attackers one at a time. Science only: ``pipeline.run_attack``."""

    def __init__(self, results_uri: str, threads: float, use_gpu: bool = False) -> None:
        import torch

        from pp_cluster.results.store import ResultStore

        torch.set_num_threads(max(1, int(threads)))
        self.store = ResultStore(results_uri)
        self.use_gpu = use_gpu

    def pid(self) -> int:
        import os

        return os.getpid()

    def run(self, job: dict[str, Any], inputs: Any, net_state: dict, judge: Any = None) -> dict[str, Any]:

        from pp_cluster import pipeline
        from pp_cluster.results.rows import attack_row
        from pp_cluster.results.store import provenance

        spec = ModelSpec.from_dict(job["model"])
        attack = AttackSpec(**job["attack"])
        image_shape, num_classes, value_range = job["shape"]
        from pp_cluster.farm.capacity import process_device

        device = process_device(self.use_gpu)
        net = pipeline.build_classifier(spec, tuple(image_shape), num_classes)
        net.load_state_dict(net_state)
        net.to(device).eval()
        n_keep = job["n_keep"]
        row, result = pipeline.run_attack(
            attack,
            net,
            spec,
            (tuple(image_shape), num_classes, tuple(value_range)),
            inputs,
            seed=spec.seed,
            device=device,
            n_keep=n_keep,
            judge=judge,
        )
        prov = {**provenance(), **({"gpu": None} if device == "cpu" else {})}  # the device used
        row = attack_row(
            row, sweep=job["sweep"], model_id=job["model_id"], attack_id=job["attack_id"], prov=prov
        )
        self.store.write("attacks", job["sweep"], job["attack_id"], [row])
        if n_keep:
            self.store.write_reconstructions(
                job["sweep"], job["model_id"], job["attack_id"], result.originals, result.reconstructions
            )
        return row


@ray.remote(num_cpus=0, max_concurrency=1000)
class AttackPool:
    """Hands jobs to idle workers; replaces a worker that died and retries its job."""

    def __init__(self, size: int, results_uri: str, cpus: float, gpus: float, max_retries: int = 3) -> None:
        self._options = {"num_cpus": cpus, "num_gpus": gpus, "scheduling_strategy": "DEFAULT"}
        self._results_uri = results_uri
        self._threads = max(cpus, 1.0)
        self._max_retries = max_retries
        self._idle: asyncio.Queue = asyncio.Queue()
        self._workers: list = []
        self.stats_ = {"submitted": 0, "done": 0, "failed": 0, "running": 0, "replaced": 0}
        for _ in range(size):
            self._add_worker()

    def _add_worker(self) -> None:
        w = AttackerWorker.options(**self._options).remote(
            self._results_uri, self._threads, self._options["num_gpus"] > 0
        )
        self._workers.append(w)
        self._idle.put_nowait(w)

    async def attack(self, job: dict[str, Any], refs: list) -> dict[str, Any]:
        """Run one attack; ``refs`` = [activations ref, weights ref] and optionally the
        attribute judge's ref (wrapped in a list so the pool forwards references instead of
        fetching the arrays itself)."""
        inputs_ref, net_ref, judge_ref = (*refs, None)[:3]
        self.stats_["submitted"] += 1
        error = ""
        for _ in range(self._max_retries + 1):
            worker = await self._idle.get()
            self.stats_["running"] += 1
            try:
                row = await worker.run.remote(job, inputs_ref, net_ref, judge_ref)
            except ray.exceptions.RayActorError as e:
                # The actor (or its node) died mid-attack: replace it and retry the job.
                error = f"attacker actor died: {e}"
                self._workers.remove(worker)
                self.stats_["replaced"] += 1
                self._add_worker()
                continue
            except ray.exceptions.RayTaskError as e:
                # The attack itself raised: a real failure, reported as a failed row.
                self._idle.put_nowait(worker)
                error = str(e.cause if hasattr(e, "cause") else e)[-2000:]
                break
            finally:
                self.stats_["running"] -= 1
            self._idle.put_nowait(worker)
            self.stats_["done"] += 1
            return row
        self.stats_["failed"] += 1
        return {
            "status": "failed",
            "error": error,
            "attacker": job["attack"]["attacker"],
            "partition": job["model"]["partition"],
            "attack_id": job["attack_id"],
            "model_id": job["model_id"],
        }

    async def ready(self) -> int:
        """Wait until every attacker actor is placed; how many there are. The sweep calls it
        before its trials start, which (training in-process) hold CPUs and GPUs themselves."""
        await asyncio.gather(*(w.__ray_ready__.remote() for w in self._workers))
        return len(self._workers)

    def stats(self) -> dict[str, int]:
        return dict(self.stats_, size=len(self._workers))

    def workers(self) -> list:
        return list(self._workers)


def start_pool(sweep: str, size: int, results_uri: str, cpus: float, gpus: float):
    """The sweep's pool. The caller must hold the handle for the sweep's duration: the
    pool lives as long as its creator's handle (a resumed driver starts a fresh one).

    The manager asks for no resources, so Ray would put it on any node, a worker among them;
    it is pinned to the caller's node (the driver's: the head on a cluster) so that a worker
    node that goes away takes only its attacker actors, which the manager replaces, and not
    the manager and with it the attacks of every later trial. Pinned, not preferred: Ray
    places an actor with a soft affinity for a node without CPUs elsewhere."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return AttackPool.options(
        name=pool_name(sweep), namespace=NAMESPACE, get_if_exists=True, scheduling_strategy=here
    ).remote(size, results_uri, cpus, gpus)
