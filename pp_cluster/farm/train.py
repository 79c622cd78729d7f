"""Ray Train: one defended model per ``TorchTrainer`` run (Algorithm 1 from the science core).

The worker loop is the science's ``train_model`` plus three Ray things: it reads the data
set from the object store, it checkpoints through ``ray.train.report`` (after an epoch, at
most once per ``Resources.checkpoint_interval_s``, and always at the end), and it resumes
from ``ray.train.get_checkpoint()``. A checkpoint costs about a second even for a small
model (state snapshot, file copy into storage, a round trip through the Train controller),
so one per epoch dominated short epochs. The run name derives from the model id, so a
retried or resumed trial continues the same run instead of starting over.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Any

import ray
import ray.train
import ray.train.torch
import ray.tune as tune
import torch

from pp_cluster.config import ModelSpec, Resources
from pp_cluster import pipeline

STATE_FILE = "state.pt"


def _device() -> str:
    return str(ray.train.torch.get_device()) if torch.cuda.is_available() else "cpu"


def _backend(use_gpu: bool) -> str:
    """NCCL only where CUDA is: Ray picks NCCL for any worker that holds a GPU resource, and
    NCCL refuses to start without a CUDA device (a node advertising logical GPUs, or GPUs the
    driver cannot see). Decided in the trial, which runs on a GPU node when ``use_gpu``."""
    return "nccl" if use_gpu and torch.cuda.is_available() else "gloo"


def _report(metrics: dict[str, Any], state: dict[str, Any]) -> None:
    """Report with a checkpoint: Train V2 keeps only metrics that come with one."""
    ctx = ray.train.get_context()
    if ctx.get_world_rank() != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as d:
        torch.save(state, os.path.join(d, STATE_FILE))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def _agreed(due: bool, world: int) -> bool:
    """Rank 0's decision, on every rank: each ``ray.train.report`` is a step all workers take
    together, so they must agree on whether this epoch checkpoints."""
    if world == 1:
        return due
    import torch.distributed as dist

    decision = [due]
    dist.broadcast_object_list(decision, src=0)
    return bool(decision[0])


def train_worker(config: dict[str, Any]) -> None:
    """Runs on every Train worker; rank 0 checkpoints."""
    torch.set_num_threads(max(1, int(config["threads"])))
    spec = ModelSpec.from_dict(config["model"])
    ds = ray.get(config["data_ref"])
    ctx = ray.train.get_context()
    world, rank = ctx.get_world_size(), ctx.get_world_rank()

    resume = None
    history: list[dict] = []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            saved = torch.load(os.path.join(d, STATE_FILE), map_location="cpu", weights_only=False)
        resume, history = saved["train_state"], saved["history"]
        if saved.get("done"):
            # The run had finished before the trial was interrupted: hand the same
            # result back so the trial can go on to the attacks.
            _report(saved["final"], saved)
            return

    interval = float(config["checkpoint_interval_s"])
    last_checkpoint = time.monotonic()

    def on_epoch(row: dict, state_fn) -> None:
        nonlocal last_checkpoint
        history.append(row)
        if not _agreed(time.monotonic() - last_checkpoint >= interval, world):
            return
        _report({"epoch": row["epoch"], "test_acc": row.get("test_acc")},
                {"train_state": state_fn(), "history": history, "done": False})
        last_checkpoint = time.monotonic()

    wrap = None
    if world > 1:
        wrap = ray.train.torch.prepare_model
    model, result = pipeline.train_model(
        spec, ds, _device(), on_epoch=on_epoch, resume=resume, wrap=wrap, shard=(rank, world)
    )
    # The attacks judge the model as trained; fine-tuning (rank 0, local partition locked)
    # only adds the before/after accuracies.
    net_state = {k: v.detach().cpu().clone() for k, v in model.net.state_dict().items()}
    tuned = {"finetune_acc_before": None, "finetune_acc_after": None}
    if spec.finetune_epochs and result.status == "ok" and rank == 0:
        tuned.update(pipeline.finetune(model, spec, ds, _device()))
    final = {
        **tuned,
        "status": result.status,
        "diverged_epoch": result.diverged_epoch,
        "test_acc": result.test_acc,
        "train_acc": result.train_acc,
        "final_task_loss": result.final_task_loss,
        "final_distance": result.final_distance,
        "train_seconds": result.seconds,
        "done": True,
    }
    _report(final, {"train_state": None, "history": history, "done": True, "final": final,
                    "net": net_state})


def fit_model(spec: ModelSpec, model_id: str, data_ref: Any, resources: Resources, use_gpu: bool,
              storage_path: str) -> tuple[dict, list[dict], dict]:
    """Train one model with a ``TorchTrainer``; returns (final metrics, epoch rows, net state).

    Tune hears only the trial's final report (accuracy and worst-case attack metrics); the
    per-epoch curves go to the ``epochs`` table, so no TuneReportCallback is attached.
    """
    from pp_cluster.farm.fs import storage_args

    per_worker: dict[str, float] = {"CPU": resources.cpus_per_worker}
    if use_gpu:
        per_worker["GPU"] = resources.gpus_per_trial if resources.num_workers == 1 else 1.0
    trainer = ray.train.torch.TorchTrainer(
        train_worker,
        train_loop_config={
            "model": spec.to_dict(),
            "data_ref": data_ref,
            "threads": resources.cpus_per_worker,
            "checkpoint_interval_s": resources.checkpoint_interval_s,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=resources.num_workers, use_gpu=use_gpu, resources_per_worker=per_worker
        ),
        torch_config=ray.train.torch.TorchConfig(backend=_backend(use_gpu)),
        run_config=ray.train.RunConfig(
            name=f"train-{model_id}",
            failure_config=ray.train.FailureConfig(max_failures=resources.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            **storage_args(storage_path),
        ),
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as d:
        saved = torch.load(os.path.join(d, STATE_FILE), map_location="cpu", weights_only=False)
    return saved["final"], saved["history"], saved["net"]


def reap_orphaned_placement_groups() -> int:
    """Remove the placement groups whose creator actor has died; how many were removed.

    A ``TorchTrainer``'s controller actor creates its workers' placement group, and Ray scopes
    a placement group to the creating *job*, not actor. When a node dies with a trial on it,
    the controller dies too but its placement group lives on (Ray reschedules it onto the
    surviving nodes), holding the run's CPUs and GPUs until the sweep's driver exits; the
    retried trial then waits forever for them. Ray Train's own cleaner finds the dead
    controller through the state API, which needs the dashboard (``ray[default]``): without
    it (this project installs ``ray[tune,train]``) nothing frees them. This reads the GCS
    placement-group table directly (what ``ray list placement-groups`` shows): a group whose
    creator is an actor that is now dead can never be used again. Placement groups the driver
    made (Tune's, one per trial) have no creator actor and are left alone, as are detached ones.
    Best effort: if Ray's internal table cannot be read, nothing is removed.
    """
    from ray._private.state import state
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    table = gcs_pb2.PlacementGroupTableData
    gone = (table.REMOVED,)
    nil_actor = ray.ActorID.nil().binary()
    try:
        rows = [table.FromString(raw) for raw in state._connect_and_get_accessor().get_placement_group_table()]
    except Exception:  # Ray internals moved: leave cleaning to Ray
        return 0
    removed = 0
    for pg in rows:
        if (pg.state in gone or pg.is_detached or not pg.creator_actor_dead
                or pg.creator_actor_id in (b"", nil_actor)):
            continue
        try:
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(pg.placement_group_id)))
            removed += 1
        except Exception:  # removed meanwhile
            pass
    return removed


class PlacementGroupReaper(tune.Callback):
    """Tune callback of the sweep's driver: every few seconds, frees the placement groups
    of Train runs whose controller died (``reap_orphaned_placement_groups``). A node's death
    reaches Ray's tables some seconds after Tune has seen the trial fail, so this polls rather
    than reacting to the failure."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self._last = 0.0

    def on_step_end(self, iteration, trials, **info):
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        n = reap_orphaned_placement_groups()
        if n:
            print(f"[pp-farm] freed {n} placement group(s) of Train runs whose controller died", file=sys.stderr,
                  flush=True)
