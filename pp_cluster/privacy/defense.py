"""Defended training: Algorithm 1 of the paper (Sections IV-B and IV-E).

Per mini-batch, with ``h = f_local(x)`` computed once:

1. every defender ``D_k`` takes one optimiser step on ``d(x, D_k(h))`` — ``h`` detached,
   so this step never touches the classifier;
2. the best defender is the argmin over the suite of ``d(x, D_k(h))`` on this batch,
   *after* that update;
3. the classifier (local + remote) takes one step on ``CE(y, f(x)) - λ·d(x, D_best(h))``;
   the gradient reaches the local partition through ``h`` while the defender's
   parameters enter as constants (they are not stepped, and no gradient is computed
   for them).

With no defender and λ = 0 this is exactly a plain training loop (see the test).

A *partition suite* (Section IV-F, ``train_defended(defended_at=...)``) defends one network
at several partitions at once: the one forward pass yields the activation at each, every
partition's defenders take step 1 on its own activation, step 2 picks each partition's best,
and step 3 is one classifier step on ``CE(y, f(x)) - λ·Σ_p d(x, D_best,p(h_p))`` (the same λ
for every partition: the paper gives the suite no weights of its own).

``TrainConfig.update`` = ``"simultaneous"`` runs the same three steps on one forward and
one backward pass per defender instead of two of each: ``d(x, D_k(h))`` is computed once
on a detached copy of ``h`` that requires grad, its backward gives the defender's
gradient *and* ``∂d/∂h``, the defenders step, and the classifier steps on
``CE`` with ``-λ·∂d_best/∂h`` fed into ``h`` — the best defender being the argmin
*before* the update. That is simultaneous gradient play (as in gradient-reversal
adversarial training) instead of the paper's alternating order: the λ-gradient comes from
the defender as it was at the start of the batch, one step behind. It saves about
``2·F_D`` per defender and batch (``F_D`` = a defender's forward cost; at the face
CNN's pool2 the floor falls from 2.10× to 1.66× a plain step with one deconv defender).
The default, ``"alternating"``, is Algorithm 1 as the paper states it.

``TrainConfig.defense`` picks the defense, and with it what ``lam`` means:

- ``"partition"`` (default): the paper's privacy partitioning, Algorithm 1 above,
  ``lam`` = the paper's λ;
- ``"nopeek"`` (Vepakomma et al. 2020): no defenders; the classifier minimises
  ``CE(y, f(x)) + α·dCor(x, h)`` per batch, ``lam`` = α (see
  :func:`pp_cluster.privacy.nopeek.distance_correlation`);
- ``"noise"``: no defenders; ``lam`` = σ of the Gaussian noise that the local partition
  adds to its output (:func:`pp_cluster.nets.add_activation_noise`, applied to the net
  before it is split). Training is plain cross-entropy: the noise lives in the network.

Code layout: :func:`train_defended` drives the epochs (data order, schedule, checkpoints,
divergence, history); each mini-batch is one call of the step function that
:data:`pp_cluster.privacy.steps.STEPS` maps ``(defense, update)`` to, and it returns a
:class:`~pp_cluster.privacy.steps.StepStats`. The alternating step,
:func:`~pp_cluster.privacy.steps.partition_alternating_step`, reads as the three steps
above. A new defense plugs in there (that module's docstring says how), not here.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from pp_cluster import precision
from pp_cluster.data.base import Split
from pp_cluster.privacy.metrics import DISTANCES, reprint_accuracy
from pp_cluster.privacy.steps import (
    DEFENSES,
    UPDATES,
    StepContext,
    StepFn,
    StepStats,
    check_defense,
    step_function,
)

# DEFENSES (the `defense` column's names; the results store adds "none" for λ = 0, a live
# view) and UPDATES live with the defense registry (privacy.steps.register_defense); the CLI
# and the config read them from here.

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("step", "onecycle")
AUGMENTS = ("none", "crop_flip")
_EVAL_BATCH = 512
_CROP_PAD = 4


@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained. ``defender_*`` = None means "same as the model's".

    ``lam`` is the strength of ``defense`` (one of :data:`DEFENSES`): λ of Algorithm 1
    for ``"partition"``, the dCor weight α for ``"nopeek"``, the noise σ for ``"noise"``.
    """

    lam: float = 0.0
    distance: str = "ssim"
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    # "step": ×lr_gamma every lr_step epochs (model and defenders; the paper's). "onecycle": the
    # classifier's lr rises to ``lr`` over the first 30 % of the steps and anneals to ~0 (torch's
    # OneCycleLR, stepped per batch); the defenders keep their lr, so they stay sharp to the end.
    schedule: str = "step"
    lr_step: int | None = None  # epochs between ×lr_gamma decays ("step")
    lr_gamma: float = 0.1
    label_smoothing: float = 0.0  # of the task's cross-entropy
    defender_optimizer: str | None = None
    defender_lr: float | None = None
    defender_momentum: float | None = None
    defender_weight_decay: float | None = None
    augment: str = "none"
    seed: int = 0
    device: str = "cpu"
    amp: bool | None = None  # bf16 autocast; None = pp_cluster.precision's default for the device
    channels_last: bool | None = None  # None = on where amp is on by default
    defense: str = "partition"
    update: str = "alternating"  # Algorithm 1's order, or "simultaneous" (module doc)

    def __post_init__(self) -> None:
        def bad(name: str, msg: str) -> None:
            raise ValueError(f"TrainConfig.{name}: {msg}, got {getattr(self, name)!r}")

        if not (isinstance(self.lam, (int, float)) and math.isfinite(self.lam) and self.lam >= 0):
            bad("lam", "must be a finite number >= 0")
        if self.defense not in DEFENSES:
            bad("defense", f"choose from {', '.join(DEFENSES)}")
        if self.update not in UPDATES:
            bad("update", f"choose from {', '.join(UPDATES)}")
        for name in ("amp", "channels_last"):
            if getattr(self, name) not in (None, True, False):
                bad(name, "must be True, False or None (= on for CUDA)")
        if self.distance not in DISTANCES:
            bad("distance", f"choose from {', '.join(DISTANCES)}")
        for name in ("epochs", "batch_size"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                bad(name, "must be an integer >= 1")
        for name in ("optimizer", "defender_optimizer"):
            value = getattr(self, name)
            if value not in OPTIMIZERS and not (name == "defender_optimizer" and value is None):
                bad(name, f"choose from {', '.join(OPTIMIZERS)}")
        for name in ("lr", "defender_lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                bad(name, "must be > 0")
        for name in ("momentum", "defender_momentum"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                bad(name, "must be in [0, 1)")
        for name in ("weight_decay", "defender_weight_decay"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                bad(name, "must be >= 0")
        if self.lr_step is not None and not (isinstance(self.lr_step, int) and self.lr_step >= 1):
            bad("lr_step", "must be None or an integer >= 1")
        if not 0 < self.lr_gamma <= 1:
            bad("lr_gamma", "must be in (0, 1]")
        if self.schedule not in SCHEDULES:
            bad("schedule", f"choose from {', '.join(SCHEDULES)}")
        if not (isinstance(self.label_smoothing, (int, float)) and 0 <= self.label_smoothing < 1):
            bad("label_smoothing", "must be in [0, 1)")
        if self.augment not in AUGMENTS:
            bad("augment", f"choose from {', '.join(AUGMENTS)}")
        try:
            torch.device(self.device)
        except RuntimeError as err:
            raise ValueError(f"TrainConfig.device: {err}") from None

    def fast_paths(self) -> tuple[bool, bool]:
        """(bf16 autocast, channels-last) as used: unset follows the device
        (:func:`pp_cluster.precision.resolve`: CUDA, or a CPU with bf16 matrix units)."""
        return precision.resolve(self.device, self.amp, self.channels_last)

    def defender_settings(self) -> tuple[str, float, float, float]:
        """(optimizer, lr, momentum, weight_decay) of the defenders, defaults resolved."""
        pairs = (
            (self.defender_optimizer, self.optimizer),
            (self.defender_lr, self.lr),
            (self.defender_momentum, self.momentum),
            (self.defender_weight_decay, self.weight_decay),
        )
        return tuple(model if own is None else own for own, model in pairs)  # type: ignore[return-value]


@dataclass
class TrainResult:
    """Outcome of :func:`train_defended`; accuracies and losses are None when diverged."""

    status: str  # "ok" | "diverged"
    diverged_epoch: int | None
    test_acc: float | None
    train_acc: float | None
    final_task_loss: float | None
    final_distance: float | None
    epochs: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


class _Partitioned(nn.Module):
    """x -> (h, logits): the one module a DDP wrapper needs to sync local + remote. With
    ``taps`` (a partition suite: stage names of ``local``, in order) h is the tuple of those
    stages' outputs, taken on the way through ``local``."""

    def __init__(self, local: nn.Module, remote: nn.Module, taps: Sequence[str] = ()) -> None:
        super().__init__()
        self.local, self.remote, self.taps = local, remote, tuple(taps)

    def forward(self, x: Tensor) -> tuple[Tensor | tuple[Tensor, ...], Tensor]:
        if not self.taps:
            h = self.local(x)
            return h, self.remote(h)
        hs = []
        for name, stage in self.local.named_children():
            x = stage(x)
            if name in self.taps:
                hs.append(x)
        return tuple(hs), self.remote(x)


# Devices where torch has a fused Adam/AdamW kernel: one pass over the weights instead of one per
# elementwise op. The same update rule; on this CPU 7x faster than the default (single-tensor) one
# on the MNIST MLP's 1.9M weights (2.4 vs 17 ms), which was ~40 % of its training step.
FUSED_ADAM_DEVICES = ("cpu", "cuda")


def build_optimizer(
    name: str, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """Adam (L2 via ``weight_decay``, as torch's Adam does it), AdamW (decoupled weight decay)
    or SGD with momentum; Adam and AdamW fused where the weights' device has the kernel."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    params = list(params)
    if name in ("adam", "adamw"):
        fused = bool(params) and all(p.device.type in FUSED_ADAM_DEVICES for p in params)
        adam = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return adam(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def crop_flip(x: Tensor, fill: float, memory_format: torch.memory_format) -> Tensor:
    """Per-image random crop of the 4-px padded image plus random horizontal flip (the
    standard CIFAR augmentation, App. C). torchvision's transforms draw one crop per
    call, so the per-image draw on a device-resident batch is done here by indexing."""
    n, _, height, width = x.shape
    padded = F.pad(x, (_CROP_PAD,) * 4, value=fill)
    dy = torch.randint(0, 2 * _CROP_PAD + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(0, 2 * _CROP_PAD + 1, (n, 1, 1), device=x.device)
    rows = dy + torch.arange(height, device=x.device).view(1, -1, 1)
    ar = torch.arange(width, device=x.device).view(1, 1, -1)
    flip = torch.rand(n, 1, 1, device=x.device) < 0.5
    cols = dx + torch.where(flip, width - 1 - ar, ar)
    batch = torch.arange(n, device=x.device).view(-1, 1, 1)
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2).contiguous(memory_format=memory_format)


def _snapshot(state: dict[str, Any]) -> dict[str, Any]:
    """A CPU deep copy, so a caller may keep it while training goes on."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, map_location="cpu", weights_only=True)


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Batches an epoch of ``n`` images runs: a trailing one-image batch is skipped (BatchNorm
    cannot train on it) unless it is all there is. The training loop and the per-batch
    schedule both count batches with this."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= 2 or (rest == 1 and n <= 2) else 0)


def evaluate_accuracy(
    net: nn.Module, split: Split, batch_size: int = _EVAL_BATCH, device: str | torch.device | None = None
) -> float:
    """Classification accuracy of ``net`` on a split (eval mode, no grad)."""
    return reprint_accuracy(net, split.x, split.y, batch_size, device)


def _check_inputs(
    local: nn.Module,
    defenders: Sequence[nn.Module],
    train: Split,
    test: Split,
    value_range: tuple[float, float],
    cfg: TrainConfig,
    resume: dict | None,
    shard: tuple[int, int],
    defended_at: Sequence[str],
) -> None:
    """ValueError for inputs :func:`train_defended` cannot train on."""
    _check_suite(local, defenders, cfg, defended_at)
    lo, hi = float(value_range[0]), float(value_range[1])
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range!r}")
    rank, world = shard
    if not (world >= 1 and 0 <= rank < world):
        raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard!r}")
    check_defense(cfg, local, defenders)
    for name, s in (("train", train), ("test", test)):
        if len(s) == 0 or len(s.y) != len(s):
            raise ValueError(
                f"{name} split must be non-empty with one label per image, got "
                f"{len(s)} images and {len(s.y)} labels"
            )
    if len(train) < world:
        raise ValueError(f"train split has {len(train)} images, fewer than the {world} shards")
    if resume is not None and len(resume["defenders"]) != len(defenders):
        raise ValueError(f"resume state has {len(resume['defenders'])} defenders, this run {len(defenders)}")
    if resume is not None and not 0 <= resume["epoch"] <= cfg.epochs:
        raise ValueError(f"resume state is at epoch {resume['epoch']}, outside 0..{cfg.epochs}")
    if resume is not None and len(_saved_rngs(resume)) not in (1, world):
        raise ValueError(
            f"resume state holds the random state of {len(_saved_rngs(resume))} ranks, this run has {world}"
        )


def _check_suite(
    local: nn.Module, defenders: Sequence[nn.Module], cfg: TrainConfig, defended_at: Sequence[str]
) -> None:
    """ValueError unless ``defended_at`` is empty or a partition suite the steps can train: one
    stage of ``local`` per defender, each partition's defenders together, in stage order."""
    if not defended_at:
        return
    if cfg.defense != "partition":
        raise ValueError(
            f"a partition suite (defended_at) is Algorithm 1 at each partition: defense 'partition', "
            f"not {cfg.defense!r}"
        )
    if len(defended_at) != len(defenders):
        raise ValueError(f"defended_at names {len(defended_at)} partitions for {len(defenders)} defenders")
    stages = [name for name, _ in local.named_children()]
    unknown = sorted(set(defended_at) - set(stages))
    if unknown:
        raise ValueError(f"defended_at: {unknown} are not stages of the local partition {stages}")
    order = [stages.index(p) for p in defended_at]
    if order != sorted(order):
        raise ValueError(
            f"defended_at {list(defended_at)}: each partition's defenders together, partitions in stage order"
        )


@dataclass
class _Run:
    """One call's training state: what the epochs step and what a snapshot saves."""

    cfg: TrainConfig
    net: nn.Module
    defenders: Sequence[nn.Module]
    ctx: StepContext  # the modules and optimisers as the step functions see them
    schedulers: list[Any]  # saved and restored; all stepped per epoch but batch_scheduler
    batch_scheduler: Any  # one-cycle: stepped per batch, else None
    order_gen: torch.Generator  # the data order (same on every shard)
    rng_group: Any  # under a process group: the gloo group that gathers the ranks' RNG states
    device: torch.device
    x_train: Tensor  # on the device
    y_train: Tensor
    test: Split  # on the device
    n_used: int  # images per epoch over all shards: len(train) trimmed to a multiple of world
    per_epoch: int  # batches per epoch and shard
    shard: tuple[int, int]
    fmt: torch.memory_format
    fill: float  # the crop padding: the value range's low end
    start: int = 1  # the first epoch this call trains

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.ctx.optimizer, *self.ctx.defender_optimizers]


def build_schedulers(
    cfg: TrainConfig, optimizers: Sequence[torch.optim.Optimizer], per_epoch: int
) -> tuple[list[Any], Any]:
    """(every scheduler, the one stepped per batch or None); ``optimizers[0]`` is the classifier's."""
    if cfg.schedule == "step" and cfg.lr_step:
        return [torch.optim.lr_scheduler.StepLR(o, cfg.lr_step, cfg.lr_gamma) for o in optimizers], None
    if cfg.schedule == "onecycle":
        batch_scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizers[0], max_lr=cfg.lr, total_steps=max(1, cfg.epochs * per_epoch), pct_start=0.3
        )
        return [batch_scheduler], batch_scheduler  # saved and restored with the rest; stepped per batch
    return [], None


def _setup(
    net: nn.Module,
    local: nn.Module,
    remote: nn.Module,
    defenders: Sequence[nn.Module],
    train: Split,
    test: Split,
    value_range: tuple[float, float],
    cfg: TrainConfig,
    resume: dict | None,
    wrap: Callable[[nn.Module], nn.Module] | None,
    shard: tuple[int, int],
    defended_at: Sequence[str],
) -> _Run:
    """Modules on the device (resumed weights loaded before wrapping), optimisers, schedules,
    the seeded generators, the data on the device."""
    rank, world = shard
    device = torch.device(cfg.device)
    use_amp, channels_last = cfg.fast_paths()
    fmt = torch.channels_last if channels_last and train.x.ndim == 4 else torch.contiguous_format
    net.to(device, memory_format=fmt)
    for d in defenders:
        d.to(device, memory_format=fmt)
    if resume is not None:
        net.load_state_dict(resume["net"])
        for d, s in zip(defenders, resume["defenders"]):
            d.load_state_dict(s)
    taps = tuple(dict.fromkeys(defended_at))
    classifier = _Partitioned(local, remote, taps)
    model = wrap(classifier) if wrap else classifier
    wrapped_defenders = [wrap(d) if wrap else d for d in defenders]

    optimizer = build_optimizer(
        cfg.optimizer, classifier.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay
    )
    d_name, d_lr, d_momentum, d_wd = cfg.defender_settings()
    d_optimizers = [build_optimizer(d_name, d.parameters(), d_lr, d_momentum, d_wd) for d in defenders]
    n_used = len(train) - len(train) % world
    per_epoch = batches_per_epoch(n_used // world, cfg.batch_size)
    schedulers, batch_scheduler = build_schedulers(cfg, [optimizer, *d_optimizers], per_epoch)

    order_gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed + rank)
    distributed = world > 1 and dist.is_available() and dist.is_initialized()
    # An object collective over NCCL needs each rank's CUDA device set as current, which a
    # caller's wrapper need not have done: the ranks' RNG states travel over gloo.
    rng_group = None
    if distributed and dist.get_backend() != "gloo":
        rng_group = dist.new_group(backend="gloo")
    ctx = StepContext(
        cfg=cfg,
        model=model,
        defenders=list(defenders),
        wrapped_defenders=wrapped_defenders,
        optimizer=optimizer,
        defender_optimizers=d_optimizers,
        value_range=value_range,
        use_amp=use_amp,
        device_type=device.type,
        distributed=distributed,
        stats_on_device=True,
        defended_at=tuple(taps.index(p) for p in defended_at),
    )
    run = _Run(
        cfg=cfg,
        net=net,
        defenders=list(defenders),
        ctx=ctx,
        schedulers=schedulers,
        batch_scheduler=batch_scheduler,
        order_gen=order_gen,
        rng_group=rng_group,
        device=device,
        x_train=train.x.to(device).contiguous(memory_format=fmt),
        y_train=train.y.to(device),
        test=Split(test.x.to(device).contiguous(memory_format=fmt), test.y.to(device)),
        n_used=n_used,
        per_epoch=per_epoch,
        shard=shard,
        fmt=fmt,
        fill=float(value_range[0]),
    )
    if resume is not None:
        _restore(run, resume)
    return run


def _saved_rngs(resume: dict) -> list[dict]:
    """A snapshot's random states by rank (a dict in files written before they were per rank:
    the saving rank's alone)."""
    rng = resume["rng"]
    return rng if isinstance(rng, list) else [rng]


def _restore(run: _Run, resume: dict) -> None:
    """Optimiser, schedule and RNG states of a :func:`_state` snapshot, the RNG this rank's
    (or the one entry's, in a state saved without a process group); the weights are loaded
    before wrapping, in :func:`_setup`."""
    for o, s in zip(run.optimizers, [resume["optimizer"], *resume["defender_optimizers"]]):
        o.load_state_dict(s)
    for sch, s in zip(run.schedulers, resume["schedulers"]):
        sch.load_state_dict(s)
    rngs = _saved_rngs(resume)
    rank, world = run.shard
    rng = rngs[rank] if len(rngs) == world else rngs[0]
    run.order_gen.set_state(rng["order"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    run.start = resume["epoch"] + 1


def _rng_states(run: _Run) -> list[dict[str, Any]]:
    """The random state of every rank, by rank (of this process alone without a process group):
    the data order's generator (the same on every shard) and the global ones that dropout,
    augmentation and noise draw from (seeded per rank). Under a process group a collective:
    every rank calls it after every epoch."""
    own = {
        "order": run.order_gen.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }
    if not run.ctx.distributed:
        return [own]
    states: list[Any] = [None] * run.shard[1]
    dist.all_gather_object(states, own, group=run.rng_group)
    return states


def _state(run: _Run, epoch: int, rngs: list[dict[str, Any]]) -> dict[str, Any]:
    """A CPU snapshot after ``epoch``, with the ranks' random states ``rngs`` of that moment:
    what ``resume=`` continues from."""
    return _snapshot(
        {
            "epoch": epoch,
            "net": run.net.state_dict(),
            "defenders": [d.state_dict() for d in run.defenders],
            "optimizer": run.ctx.optimizer.state_dict(),
            "defender_optimizers": [o.state_dict() for o in run.ctx.defender_optimizers],
            "schedulers": [s.state_dict() for s in run.schedulers],
            "rng": rngs,
        }
    )


def _bests(stats: StepStats) -> tuple[int | Tensor, ...]:
    """The batch's best defender indices: none, one, or a partition suite's one per partition."""
    if stats.best is None:
        return ()
    return stats.best if isinstance(stats.best, tuple) else (stats.best,)


def _batch_vector(stats: StepStats, device: torch.device) -> Tensor:
    """A batch's statistics as one float32 vector on the device, no host read: task loss,
    correct, the distance and the best defender(s) where the defense has them, then the loss
    and the defenders' losses (read for divergence only). A host number (a defender index the
    step read, or a plugin's own StepStats) is filled in on the device, not copied there:
    a copy from pageable host memory waits for the device."""
    values = [stats.task_loss, stats.correct, *(() if stats.distance is None else (stats.distance,))]
    values += _bests(stats)
    values += [stats.loss, *stats.defender_losses]
    return torch.stack(
        [v.float() if isinstance(v, Tensor) else torch.full((), float(v), device=device) for v in values]
    )


def _epoch_to_host(run: _Run, batches: list[Tensor]) -> list[list[float]] | None:
    """The epoch's :func:`_batch_vector` rows on the host, in the epoch's one read; None if
    training diverged: a value or a weight not finite, on any shard (they stop together,
    or the others would wait forever)."""
    table = torch.stack(batches)
    finite = torch.isfinite(table).all()
    params = [p.detach().flatten() for m in (run.net, *run.defenders) for p in m.parameters()]
    if params:
        finite &= torch.isfinite(torch.cat(params)).all()
    finite = finite.float().view(1)
    if run.ctx.distributed:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    flag, *values = torch.cat([finite, table.flatten()]).tolist()
    width = table.shape[1]
    return [values[i : i + width] for i in range(0, len(values), width)] if flag else None


def _train_epoch(run: _Run, step: StepFn, epoch: int) -> dict[str, Any] | None:
    """One epoch of ``step`` over this shard's batches: the history row, or None if diverged
    (checked at the epoch's end: a diverged epoch runs to it)."""
    cfg, t_epoch = run.cfg, time.perf_counter()
    rank, world = run.shard
    run.ctx.model.train()
    for d in run.ctx.wrapped_defenders:
        d.train()
    lr = run.ctx.optimizer.param_groups[0]["lr"]
    order = torch.randperm(len(run.x_train), generator=run.order_gen)[: run.n_used][rank::world].to(
        run.device
    )
    batches, seen = [], 0
    for b in range(run.per_epoch):
        idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        x, y = run.x_train[idx], run.y_train[idx]
        if cfg.augment == "crop_flip":
            x = crop_flip(x, run.fill, run.fmt)
        stats = step(run.ctx, x, y)
        if run.batch_scheduler is not None:
            run.batch_scheduler.step()
        batches.append(_batch_vector(stats, run.device))
        seen += stats.n
    for sch in run.schedulers:
        if sch is not run.batch_scheduler:
            sch.step()
    table = _epoch_to_host(run, batches)
    if table is None:
        return None
    # whether the defense reports a distance (d(x, D_best(h)) or dCor), and how many best
    # defenders it picks per batch (one; a partition suite one per partition)
    has_distance, n_best = stats.distance is not None, len(_bests(stats))
    task_sum = dist_sum = 0.0
    correct = 0
    best_counts = [0] * len(run.defenders)
    for values in table:
        task_sum += values[0]
        correct += int(values[1])
        if has_distance:
            dist_sum += values[2]
        for k in range(n_best):
            best_counts[int(values[2 + has_distance + k])] += 1
    row = {
        "epoch": epoch,
        "task_loss": task_sum / run.per_epoch,
        "distance": dist_sum / run.per_epoch if has_distance else None,
        "train_acc": correct / seen,
        "test_acc": evaluate_accuracy(run.net, run.test, _EVAL_BATCH, run.device),
        "lr": lr,
        "seconds": time.perf_counter() - t_epoch,
    }
    if run.defenders:
        row["best_defender_counts"] = best_counts
    return row


def train_defended(
    net: nn.Module,
    local: nn.Module,
    remote: nn.Module,
    defenders: Sequence[nn.Module],
    train: Split,
    test: Split,
    value_range: tuple[float, float],
    cfg: TrainConfig,
    *,
    on_epoch: Callable[[dict, Callable[[], dict]], None] | None = None,
    resume: dict | None = None,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
    shard: tuple[int, int] = (0, 1),
    defended_at: Sequence[str] = (),
) -> TrainResult:
    """Train ``net`` (= ``remote ∘ local``, modules shared) with Algorithm 1.

    Randomness: data order comes from a generator seeded with ``cfg.seed`` (the same on
    every shard, which then takes every ``world``-th index of the permutation after
    trimming it to a multiple of ``world``); dropout and augmentation use the global RNG
    seeded with ``cfg.seed + rank``. ``on_epoch(row, state_fn)`` runs after each epoch;
    ``state_fn()`` returns a CPU snapshot that ``resume=`` continues from the next epoch.
    Under a process group it holds every rank's random state (gathered after each epoch on
    every rank), so one rank may save it for all; resumed, each rank takes its own.
    A row's ``train_acc`` is the running accuracy over the epoch's batches (train mode,
    free); the result's ``train_acc`` is measured on the whole split in eval mode.
    ``wrap`` (e.g. DDP) wraps the x -> (h, logits) module and each defender.

    ``cfg.defense`` "nopeek" and "noise" take no defenders. With "nopeek" a row's and the
    result's ``distance`` is the epoch's mean dCor(x, h) over batches (computed, without
    gradient, at α = 0 too); under sharding each shard penalises the dCor of its own
    sub-batch. With "noise" and σ = ``cfg.lam`` > 0, ``local`` must contain a
    :class:`~pp_cluster.nets.GaussianNoise` of that σ (so a forgotten
    ``add_activation_noise``, or one applied after splitting, is an error, not a silently
    undefended model); ``distance`` is None, as without defenders.

    Each batch is one call of the step function of ``(cfg.defense, cfg.update)``
    (:data:`pp_cluster.privacy.steps.STEPS`); this function only drives the epochs. The
    steps' statistics stay on the device and move to the host once per epoch (with the
    divergence check: a diverged epoch runs to its end); the row's test accuracy is one more
    read (``tests/unit/test_host_syncs.py`` counts them).

    ``defended_at`` makes it a partition suite (Section IV-F; the module docstring): the
    partition each defender defends, a stage name of ``local`` (an ``nn.Sequential`` of named
    stages, as :func:`pp_cluster.nets.split` cuts it, here at the suite's deepest partition),
    each partition's defenders together and in stage order. A row's ``distance`` is then the
    mean over the partitions of each one's best defender's distance, and
    ``best_defender_counts`` counts, per defender, the batches it was its partition's best.
    Empty: every defender reads ``local``'s output.
    """
    _check_inputs(local, defenders, train, test, value_range, cfg, resume, shard, defended_at)
    step = step_function(cfg.defense, cfg.update)
    t_start = time.perf_counter()
    run = _setup(
        net, local, remote, defenders, train, test, value_range, cfg, resume, wrap, shard, defended_at
    )
    rows: list[dict[str, Any]] = []
    for epoch in range(run.start, cfg.epochs + 1):
        row = _train_epoch(run, step, epoch)
        if row is None:
            return TrainResult("diverged", epoch, None, None, None, None, rows, time.perf_counter() - t_start)
        rows.append(row)
        rngs = _rng_states(run)  # on every rank, whether or not anyone saves: a collective
        if on_epoch is not None:
            on_epoch(row, lambda e=epoch, r=rngs: _state(run, e, r))

    device = run.device
    last = rows[-1] if rows else {}
    return TrainResult(
        status="ok",
        diverged_epoch=None,
        test_acc=last["test_acc"] if rows else evaluate_accuracy(net, run.test, _EVAL_BATCH, device),
        train_acc=evaluate_accuracy(net, Split(run.x_train, run.y_train), _EVAL_BATCH, device),
        final_task_loss=last.get("task_loss"),
        final_distance=last.get("distance"),
        epochs=rows,
        seconds=time.perf_counter() - t_start,
    )
