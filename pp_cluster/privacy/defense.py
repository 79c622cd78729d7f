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
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from pp_cluster import precision
from pp_cluster.data.base import Split
from pp_cluster.nets.noise import GaussianNoise
from pp_cluster.privacy.metrics import DISTANCES, distance, reprint_accuracy
from pp_cluster.privacy.nopeek import distance_correlation

# The names are the `defense` column's (the results store adds "none" for λ = 0).
DEFENSES = ("partition", "nopeek", "noise")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("step", "onecycle")
UPDATES = ("alternating", "simultaneous")
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
        pairs = ((self.defender_optimizer, self.optimizer), (self.defender_lr, self.lr),
                 (self.defender_momentum, self.momentum), (self.defender_weight_decay, self.weight_decay))
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
    """x -> (h, logits): the one module a DDP wrapper needs to sync local + remote."""

    def __init__(self, local: nn.Module, remote: nn.Module) -> None:
        super().__init__()
        self.local, self.remote = local, remote

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.local(x)
        return h, self.remote(h)


def build_optimizer(name: str, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0
                    ) -> torch.optim.Optimizer:
    """Adam (L2 via ``weight_decay``, as torch's Adam does it), AdamW (decoupled weight decay)
    or SGD with momentum."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _crop_flip(x: Tensor, fill: float, memory_format: torch.memory_format) -> Tensor:
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


def _all_finite(modules: Sequence[nn.Module]) -> bool:
    params = [p.detach().flatten() for m in modules for p in m.parameters()]
    return bool(torch.isfinite(torch.cat(params)).all()) if params else True


def _best(dists: Sequence[Tensor], distributed: bool) -> int:
    """Index of the smallest distance; under DDP summed over shards first, so every shard
    picks the same defender (the argmin on the global batch)."""
    if len(dists) == 1:
        return 0
    values = torch.stack([v.detach() for v in dists])
    if distributed:
        dist.all_reduce(values)
    return int(values.argmin())


def _batches_per_epoch(n: int, batch_size: int) -> int:
    """Batches an epoch of ``n`` images runs: a trailing one-image batch is skipped (BatchNorm
    cannot train on it) unless it is all there is. The training loop and the per-batch
    schedule both count batches with this."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= 2 or (rest == 1 and n <= 2) else 0)


def evaluate_accuracy(net: nn.Module, split: Split, batch_size: int = _EVAL_BATCH,
                      device: str | torch.device | None = None) -> float:
    """Classification accuracy of ``net`` on a split (eval mode, no grad)."""
    return reprint_accuracy(net, split.x, split.y, batch_size, device)


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
) -> TrainResult:
    """Train ``net`` (= ``remote ∘ local``, modules shared) with Algorithm 1.

    Randomness: data order comes from a generator seeded with ``cfg.seed`` (the same on
    every shard, which then takes every ``world``-th index of the permutation after
    trimming it to a multiple of ``world``); dropout and augmentation use the global RNG
    seeded with ``cfg.seed + rank``. ``on_epoch(row, state_fn)`` runs after each epoch;
    ``state_fn()`` returns a CPU snapshot that ``resume=`` continues from the next epoch.
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
    """
    lo, hi = float(value_range[0]), float(value_range[1])
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range!r}")
    rank, world = shard
    if not (world >= 1 and 0 <= rank < world):
        raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard!r}")
    if cfg.defense == "partition":
        if cfg.lam > 0 and not defenders:
            raise ValueError(f"lam={cfg.lam} > 0 needs at least one defender")
    elif defenders:
        raise ValueError(f"defense {cfg.defense!r} trains no defenders, got {len(defenders)}")
    if cfg.defense == "noise" and cfg.lam > 0:
        sigmas = [m.sigma for m in local.modules() if isinstance(m, GaussianNoise)]
        if not any(math.isclose(s, cfg.lam, rel_tol=1e-9, abs_tol=0.0) for s in sigmas):
            raise ValueError(f"defense 'noise' with lam={cfg.lam}: the local partition must add that noise "
                             f"(add_activation_noise before split); its GaussianNoise sigmas: {sigmas}")
    for name, s in (("train", train), ("test", test)):
        if len(s) == 0 or len(s.y) != len(s):
            raise ValueError(f"{name} split must be non-empty with one label per image, got "
                             f"{len(s)} images and {len(s.y)} labels")
    if len(train) < world:
        raise ValueError(f"train split has {len(train)} images, fewer than the {world} shards")
    if resume is not None and len(resume["defenders"]) != len(defenders):
        raise ValueError(f"resume state has {len(resume['defenders'])} defenders, this run {len(defenders)}")
    if resume is not None and not 0 <= resume["epoch"] <= cfg.epochs:
        raise ValueError(f"resume state is at epoch {resume['epoch']}, outside 0..{cfg.epochs}")

    t_start = time.perf_counter()
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
    classifier = _Partitioned(local, remote)
    model = wrap(classifier) if wrap else classifier
    wrapped_defenders = [wrap(d) if wrap else d for d in defenders]

    optimizer = build_optimizer(cfg.optimizer, classifier.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
    d_name, d_lr, d_momentum, d_wd = cfg.defender_settings()
    d_optimizers = [build_optimizer(d_name, d.parameters(), d_lr, d_momentum, d_wd) for d in defenders]
    all_optimizers = [optimizer, *d_optimizers]
    n_used = len(train) - len(train) % world
    per_epoch = _batches_per_epoch(n_used // world, cfg.batch_size)
    schedulers, batch_scheduler = [], None
    if cfg.schedule == "step" and cfg.lr_step:
        schedulers = [torch.optim.lr_scheduler.StepLR(o, cfg.lr_step, cfg.lr_gamma) for o in all_optimizers]
    elif cfg.schedule == "onecycle":
        batch_scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=max(1, cfg.epochs * per_epoch), pct_start=0.3)
        schedulers = [batch_scheduler]  # saved and restored with the rest; stepped per batch

    order_gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed + rank)
    start = 1
    if resume is not None:
        for o, s in zip(all_optimizers, [resume["optimizer"], *resume["defender_optimizers"]]):
            o.load_state_dict(s)
        for sch, s in zip(schedulers, resume["schedulers"]):
            sch.load_state_dict(s)
        rng = resume["rng"]
        order_gen.set_state(rng["order"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        start = resume["epoch"] + 1

    x_train = train.x.to(device).contiguous(memory_format=fmt)
    y_train = train.y.to(device)
    test_on_device = Split(test.x.to(device).contiguous(memory_format=fmt), test.y.to(device))

    distributed = world > 1 and dist.is_available() and dist.is_initialized()

    def amp() -> torch.autocast:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp)

    def state_fn(epoch: int) -> dict[str, Any]:
        return _snapshot({
            "epoch": epoch,
            "net": net.state_dict(),
            "defenders": [d.state_dict() for d in defenders],
            "optimizer": optimizer.state_dict(),
            "defender_optimizers": [o.state_dict() for o in d_optimizers],
            "schedulers": [s.state_dict() for s in schedulers],
            "rng": {"order": order_gen.get_state(), "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        })

    def diverged(epoch: int) -> TrainResult:
        return TrainResult("diverged", epoch, None, None, None, None, rows, time.perf_counter() - t_start)

    nopeek = cfg.defense == "nopeek"
    tracks_distance = bool(defenders) or nopeek  # the rows' "distance": d(x, D_best(h)) or dCor
    rows: list[dict[str, Any]] = []
    for epoch in range(start, cfg.epochs + 1):
        t_epoch = time.perf_counter()
        model.train()
        for d in wrapped_defenders:
            d.train()
        lr = optimizer.param_groups[0]["lr"]
        order = torch.randperm(len(train), generator=order_gen)[:n_used][rank::world].to(device)
        task_sum = dist_sum = 0.0
        correct = seen = batches = 0
        best_counts = [0] * len(defenders)
        for b in range(per_epoch):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            x, y = x_train[idx], y_train[idx]
            if cfg.augment == "crop_flip":
                x = _crop_flip(x, lo, fmt)
            with amp():
                h, logits = model(x)
                task = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            watched = [task]
            loss, h_grad = task, None
            if defenders and cfg.update == "simultaneous":
                # (1)-(3) on one pass per defender: d's backward through a detached copy of h
                # gives the defender's gradient and ∂d/∂h; the argmin is taken before the step.
                inputs = [h.detach().requires_grad_(cfg.lam > 0) for _ in defenders]
                dists = []
                for d, opt, h_d in zip(wrapped_defenders, d_optimizers, inputs):
                    opt.zero_grad(set_to_none=True)
                    with amp():
                        rec = d(h_d)
                    dists.append(distance(cfg.distance, x, rec.float(), value_range))
                torch.stack(dists).sum().backward()
                for opt in d_optimizers:
                    opt.step()
                watched.extend(v.detach() for v in dists)
                best = _best(dists, distributed)
                best_counts[best] += 1
                loss = task - cfg.lam * dists[best].detach()
                if cfg.lam > 0:
                    h_grad = -cfg.lam * inputs[best].grad
                watched.append(dists[best].detach())
            elif defenders:
                # (1) each defender steps on d(x, D(h)) with h detached: the classifier is untouched.
                for d, opt in zip(wrapped_defenders, d_optimizers):
                    opt.zero_grad(set_to_none=True)
                    with amp():
                        rec = d(h.detach())
                    d_loss = distance(cfg.distance, x, rec.float(), value_range)
                    d_loss.backward()
                    opt.step()
                    watched.append(d_loss.detach())
                # (2) distances after the update, differentiable in h only (defender weights
                # as constants); (3) the classifier's loss uses the argmin.
                with torch.set_grad_enabled(cfg.lam > 0):
                    dists = []
                    for d in defenders:
                        frozen = {k: p.detach() for k, p in d.named_parameters()}
                        with amp():
                            rec = functional_call(d, frozen, (h if cfg.lam > 0 else h.detach(),))
                        dists.append(distance(cfg.distance, x, rec.float(), value_range))
                best = _best(dists, distributed)
                best_counts[best] += 1
                loss = task - cfg.lam * dists[best]
                watched.append(dists[best].detach())
            elif nopeek:  # NoPeek: CE + α·dCor(x, h), the gradient reaching the local part through h
                with torch.set_grad_enabled(cfg.lam > 0):
                    dcor = distance_correlation(x, h)
                if cfg.lam > 0:
                    loss = task + cfg.lam * dcor
                watched.append(dcor.detach())
            optimizer.zero_grad(set_to_none=True)
            if h_grad is None:
                loss.backward()
            else:  # CE's gradient plus -λ·∂d_best/∂h entering the local partition at h
                torch.autograd.backward([task, h], [torch.ones_like(task), h_grad])
            optimizer.step()
            if batch_scheduler is not None:
                batch_scheduler.step()

            stats = torch.stack([loss.detach().float(), *(w.float() for w in watched),
                                 (logits.argmax(dim=1) == y).sum().float()]).tolist()
            finite = all(math.isfinite(v) for v in stats[:-1])
            if distributed:  # stop every shard together, or the others would wait forever
                flag = torch.tensor(float(finite), device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MIN)
                finite = bool(flag)
            if not finite:
                return diverged(epoch)
            task_sum += stats[1]
            dist_sum += stats[-2] if tracks_distance else 0.0
            correct += int(stats[-1])
            seen += len(idx)
            batches += 1
        for sch in schedulers:
            if sch is not batch_scheduler:
                sch.step()
        if not _all_finite([net, *defenders]):
            return diverged(epoch)
        row = {
            "epoch": epoch,
            "task_loss": task_sum / batches,
            "distance": dist_sum / batches if tracks_distance else None,
            "train_acc": correct / seen,
            "test_acc": evaluate_accuracy(net, test_on_device, _EVAL_BATCH, device),
            "lr": lr,
            "seconds": time.perf_counter() - t_epoch,
        }
        if defenders:
            row["best_defender_counts"] = best_counts
        rows.append(row)
        if on_epoch is not None:
            on_epoch(row, lambda e=epoch: state_fn(e))

    last = rows[-1] if rows else {}
    return TrainResult(
        status="ok",
        diverged_epoch=None,
        test_acc=last["test_acc"] if rows else evaluate_accuracy(net, test_on_device, _EVAL_BATCH, device),
        train_acc=evaluate_accuracy(net, Split(x_train, y_train), _EVAL_BATCH, device),
        final_task_loss=last.get("task_loss"),
        final_distance=last.get("distance"),
        epochs=rows,
        seconds=time.perf_counter() - t_start,
    )
