"""Ray Train: one defended model per ``TorchTrainer`` run (Algorithm 1 from the science core).

A one-worker model trains in Ray Train's local mode (``ScalingConfig(num_workers=0)``): the
train function runs inside the Tune trial's own process, which holds the worker's CPU and
GPU share. A worker group would add three processes per model (the Train controller, the
worker, Train's placement-group cleaner), each importing torch — about 20 s of start-up per
model on an idle 2-core machine and 40 s under load, for models that often train in a
minute. ``Resources.num_workers > 1`` starts a worker group and trains with DDP.

The train function is the science's ``train_model`` plus the farm's persistence: the data
set comes from the object store, and rank 0 saves its state (model, defenders, optimisers,
RNG, the epochs so far) to ``<storage>/train-<model id>/state.pt`` after an epoch, at most
once per ``Resources.checkpoint_interval_s``, and when training ends. A retried trial or a
restarted worker group (the file is on the sweep's shared storage) continues from it; a
finished model's file holds its final weights, so a trial that died during its attacks
does not train again. The state is the farm's own file rather than a Train checkpoint
because local mode keeps checkpoints in memory only.

Every epoch is reported to Tune (``epoch_metrics``) as it ends, without a checkpoint: in local
mode with ``ray.tune.report`` (the train function runs in the trial's Tune session); in a
worker group every rank calls ``ray.train.report`` (a barrier) and Train V2's
``TuneReportCallback``, running in the Train controller, hands rank 0's row to the trial's
session, whose Tune loop reports it. The trial's last report (``trial.trial_metrics``) comes
after the attacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import logging
import sys
import time
from typing import Any

import ray
import ray.train
import ray.train.torch
import ray.tune as tune
import torch
from ray.tune.integration.ray_train import TuneReportCallback

from pp_cluster import pipeline
from pp_cluster.config import ModelSpec, Resources
from pp_cluster.models import read_state as _load
from pp_cluster.models import state_uri
from pp_cluster.results.fs import write_bytes

# Train V2 logs an INFO line inviting bug reports for every local-mode ScalingConfig: one per
# trial in the sweep's output. The module logs nothing else.
logging.getLogger("ray.train.v2.api.config").setLevel(logging.WARNING)


def _device(local_mode: bool, use_gpu: bool) -> str:
    """``capacity.process_device``; a DDP worker that holds a GPU takes the one Train gave it."""
    from pp_cluster.farm.capacity import process_device

    device = process_device(use_gpu)
    return device if device == "cpu" or local_mode else str(ray.train.torch.get_device())


def _backend(use_gpu: bool) -> str:
    """NCCL only where CUDA is: Ray picks NCCL for any worker that holds a GPU resource, and
    NCCL refuses to start without a CUDA device (a node advertising logical GPUs, or GPUs the
    driver cannot see). Decided in the trial, which runs on a GPU node when ``use_gpu``."""
    return "nccl" if use_gpu and torch.cuda.is_available() else "gloo"


@dataclasses.dataclass
class _TorchConfig(ray.train.torch.TorchConfig):
    """Ray's ``TorchConfig``, except that a model trained on the CPU gets no CUDA device: Ray's
    train-function context calls ``torch.cuda.set_device`` in any process that can see a card,
    so a ``--no-gpu`` trial on a GPU node would open a CUDA context on a card it never reserved
    (and where the card is only believed in, fail)."""

    cuda: bool = True

    @property
    def train_func_context(self):
        return super().train_func_context if self.cuda else contextlib.nullcontext


def _save(uri: str, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes(uri, buf.getvalue())


EPOCH_METRICS = ("epoch", "task_loss", "distance", "train_acc", "test_acc", "lr")


def epoch_metrics(row: dict[str, Any]) -> dict[str, float]:
    """An epoch's report to Tune: its history row's numbers (``distance`` only where a defense
    measures one); ``seconds`` becomes ``epoch_seconds`` beside Tune's own timings."""
    return {**{k: row[k] for k in EPOCH_METRICS if row.get(k) is not None}, "epoch_seconds": row["seconds"]}


def train_worker(config: dict[str, Any]) -> None:
    """Runs on every Train worker (or in the trial, in local mode); rank 0 saves the state,
    at the end with {final, history, net} (a worker group cannot return tensors)."""
    torch.set_num_threads(max(1, int(config["threads"])))
    spec = ModelSpec.from_dict(config["model"])
    uri, local_mode = config["state_uri"], bool(config["local_mode"])
    ds = ray.get(config["data_ref"])
    if local_mode:  # (Train's context API refuses to run inside a Tune trial's process)
        world, rank = 1, 0
    else:
        ctx = ray.train.get_context()
        world, rank = ctx.get_world_size(), ctx.get_world_rank()

    resume = None
    history: list[dict] = []
    saved = _load(uri)
    if saved is not None:
        if saved["done"]:
            return  # trained before the trial was interrupted: the file holds the result
        resume, history = saved["train_state"], saved["history"]

    interval = float(config["checkpoint_interval_s"])
    last_save = time.monotonic()
    report = tune.report if local_mode else ray.train.report
    if not local_mode:
        # Train V2 logs each rank's every report at INFO through a logger named by its file path,
        # which its LoggingConfig (for "ray.train.*") does not reach.
        context = sys.modules.get("ray.train.v2._internal.execution.context")
        if context is not None:
            logging.getLogger(context.__file__).setLevel(logging.WARNING)

    def on_epoch(row: dict, state_fn) -> None:
        nonlocal last_save
        history.append(row)
        if rank == 0 and time.monotonic() - last_save >= interval:
            _save(uri, {"train_state": state_fn(), "history": history, "done": False})
            last_save = time.monotonic()
        report(epoch_metrics(row))

    device = _device(local_mode, bool(config["use_gpu"]))
    wrap = None
    if world > 1:
        # DDP on the device this rank chose: a worker holding a logical GPU with no CUDA behind
        # it trains on the CPU (Train's own choice of device would be a card it cannot use).
        wrap = functools.partial(ray.train.torch.prepare_model, move_to_device=torch.device(device))
    model, result = pipeline.train_model(
        spec, ds, device, on_epoch=on_epoch, resume=resume, wrap=wrap, shard=(rank, world)
    )
    if rank != 0:
        return
    # The attacks judge the model as trained; fine-tuning (rank 0, local partition locked)
    # only adds the before/after accuracies, so the trained weights are kept first.
    tuning = spec.finetune_epochs and result.status == "ok"
    net_state = {
        k: v.detach().cpu().clone() if tuning else v.detach().cpu() for k, v in model.net.state_dict().items()
    }
    tuned = {"finetune_acc_before": None, "finetune_acc_after": None}
    if tuning:
        tuned.update(pipeline.finetune(model, spec, ds, device))
    final = {
        **tuned,
        "status": result.status,
        "diverged_epoch": result.diverged_epoch,
        "test_acc": result.test_acc,
        "n_test": len(ds.test),
        "train_acc": result.train_acc,
        "final_task_loss": result.final_task_loss,
        "final_distance": result.final_distance,
        "train_seconds": result.seconds,
        "device": device,  # where it trained: the models row names a GPU only if it was used
    }
    _save(uri, {"train_state": None, "history": history, "done": True, "final": final, "net": net_state})


def fit_model(
    spec: ModelSpec, model_id: str, data_ref: Any, resources: Resources, use_gpu: bool, storage_path: str
) -> tuple[dict, list[dict], dict]:
    """Train one model with a ``TorchTrainer``; returns (final metrics, epoch rows, net state).

    One worker: local mode, in this (the trial's) process. Several: a worker group with DDP,
    whose epochs reach Tune through ``TuneReportCallback`` and whose Train INFO logs (worker
    group start, DDP wrapping) stay in Train's log files. Call it from a Tune trial: each
    epoch is reported there as it ends (and kept in the ``epochs`` table).
    """
    from pp_cluster.results.fs import storage_args

    local_mode = resources.num_workers == 1
    if local_mode:
        scaling = ray.train.ScalingConfig(num_workers=0)
    else:
        per_worker: dict[str, float] = {"CPU": resources.cpus_per_worker, **({"GPU": 1.0} if use_gpu else {})}
        scaling = ray.train.ScalingConfig(
            num_workers=resources.num_workers, use_gpu=use_gpu, resources_per_worker=per_worker
        )
    trainer = ray.train.torch.TorchTrainer(
        train_worker,
        train_loop_config={
            "model": spec.to_dict(),
            "data_ref": data_ref,
            "threads": resources.cpus_per_worker,
            "checkpoint_interval_s": resources.checkpoint_interval_s,
            "state_uri": state_uri(storage_path, model_id),
            "local_mode": local_mode,
            "use_gpu": use_gpu,
        },
        scaling_config=scaling,
        torch_config=_TorchConfig(backend=_backend(use_gpu), cuda=use_gpu and torch.cuda.is_available()),
        run_config=ray.train.RunConfig(
            name=f"train-{model_id}",
            failure_config=ray.train.FailureConfig(max_failures=resources.max_failures),
            callbacks=[] if local_mode else [TuneReportCallback()],
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            **storage_args(storage_path),
        ),
    )
    trainer.fit()
    out = _load(state_uri(storage_path, model_id))
    return out["final"], out["history"], out["net"]


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
        rows = [
            table.FromString(raw) for raw in state._connect_and_get_accessor().get_placement_group_table()
        ]
    except Exception:  # Ray internals moved: leave cleaning to Ray
        return 0
    removed = 0
    for pg in rows:
        if (
            pg.state in gone
            or pg.is_detached
            or not pg.creator_actor_dead
            or pg.creator_actor_id in (b"", nil_actor)
        ):
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
            print(
                f"[pp-farm] freed {n} placement group(s) of Train runs whose controller died",
                file=sys.stderr,
                flush=True,
            )
