"""What a trial holds and how many fit: resources per trial, the capacity check, GPU checks."""

from __future__ import annotations

import ray
import torch

from pp_cluster.config import SpecError, SweepSpec


def trial_resources(r, use_gpu: bool) -> dict[str, float]:
    """What a Tune trial holds. A one-worker model trains inside the trial (Ray Train's local
    mode, ``train.py``), so the trial holds that worker's CPU and GPU share. With DDP the
    trial is a light driver: no CPU and no GPU (its Train workers hold theirs; a sliver of GPU
    would leave a node with exactly ``num_workers`` GPUs unable to place them), a token of
    memory; it computes the attackers' activations on the CPU, and the attacks run in the pool."""
    if r.num_workers == 1:
        return {"CPU": r.cpus_per_worker, **({"GPU": r.gpus_per_trial} if use_gpu else {})}
    return {"CPU": 0, "memory": 1}


def cluster_has_gpu() -> bool:
    return ray.cluster_resources().get("GPU", 0) > 0


def alive_nodes() -> int:
    return sum(1 for n in ray.nodes() if n.get("Alive"))


def check_capacity(sweep: SweepSpec, use_gpu: bool, autoscaling: bool) -> int:
    """Fail fast when a model's training can never be placed beside the attacker pool
    (rather than wait forever), and return how many trials may run at once: as many as can
    train side by side beside the pool, in CPUs and (when used) GPUs. With DDP (whose trials
    hold nothing themselves) one more, so that a model's attacks overlap the next one's
    training; a one-worker trial holds its share through its attacks, and one more would
    take the share the attacker actors need (the sweep would wait forever for its attacks)."""
    r = sweep.resources
    total = ray.cluster_resources()
    need = {"CPU": (r.num_workers * r.cpus_per_worker, r.pool_size * r.attacker_cpus)}
    if use_gpu:
        need["GPU"] = (
            r.gpus_per_trial if r.num_workers == 1 else float(r.num_workers),
            r.pool_size * r.attacker_gpus,
        )
    fits = []
    for kind, (per_trial, pool) in need.items():
        free = total.get(kind, 0.0) - pool
        if not autoscaling and free < per_trial - 1e-9:
            raise SpecError(
                f"SweepSpec.resources: a model needs {per_trial:g} {kind} to train but the cluster has "
                f"{total.get(kind, 0.0):g} {kind}, {pool:g} of them held by the attacker pool "
                f"({r.pool_size} actors); lower --pool-size / --attacker-{kind.lower()}s"
                + (", or --gpus-per-trial" if kind == "GPU" else " or Resources.cpus_per_worker")
            )
        if per_trial > 0:
            fits.append(max(1, int((max(free, per_trial) + 1e-9) // per_trial)))
    if r.max_concurrent_trials is not None:
        return r.max_concurrent_trials
    n = min(fits) if fits else 1
    return n if r.num_workers == 1 else n + 1


def check_local_gpus(sweep: SweepSpec, address: str | None, num_gpus: int | None) -> None:
    """On a local cluster this driver will start, a GPU share that no device here can give is
    refused before Ray starts (a running cluster's GPUs are checked by ``check_capacity``)."""
    r = sweep.resources
    if address is not None or ray.is_initialized() or not r.use_gpu:
        return
    have = num_gpus if num_gpus is not None else torch.cuda.device_count()
    need = r.gpus_per_trial if r.num_workers == 1 else r.num_workers
    if have < need:
        raise SpecError(
            f"SweepSpec.resources: a model needs {need:g} GPU (--gpus-per-trial / --num-workers) but "
            f"this machine has {have}; lower --gpus-per-trial, or train on CPUs (--no-gpu)"
        )


def process_device(use_gpu: bool) -> str:
    """The one device rule for trials, Train workers, attacker actors and DP pixelation: CUDA
    only when the sweep trains on GPUs and this process holds a GPU share. Ray 2.60 no longer
    hides GPUs from a process that holds none, so ``torch.cuda.is_available()`` alone would put
    a zero-GPU attacker actor, or a --no-gpu trial, on a card it never reserved."""
    if not use_gpu or not torch.cuda.is_available():
        return "cpu"
    return "cuda" if ray.get_gpu_ids() else "cpu"
