"""One mini-batch of defended training: a step function per (defense, update order).

:func:`pp_cluster.privacy.defense.train_defended` is the epoch driver (data order,
schedule, checkpoints, divergence, history); per batch it calls one function of this
module, looked up in :data:`STEPS` by ``(TrainConfig.defense, TrainConfig.update)``:

=================  ======================================  =====================================
defense            ``update="alternating"``                ``update="simultaneous"``
=================  ======================================  =====================================
``"partition"``    :func:`partition_alternating_step`      :func:`partition_simultaneous_step`
                   (Algorithm 1 as the paper states it)    (one pass per defender)
``"nopeek"``       :func:`nopeek_step`                     :func:`nopeek_step` (no defenders)
``"noise"``        :func:`plain_step`                      :func:`plain_step` (noise is in the net)
=================  ======================================  =====================================

A step function is ``step(ctx, x, y) -> StepStats``: it runs the forward pass, every
optimiser step of the batch, and returns a :class:`StepStats`, the batch's statistics by
name. ``ctx`` (:class:`StepContext`) holds what stays fixed over a run: the
x -> (h, logits) module, the defenders, their optimisers, the config, the autocast switch.
A step never touches the data order, a schedule, or the history: the driver does.

A step reads nothing back from the device: under the driver its statistics stay there
(``ctx.stats_on_device``) and an epoch's move to the host at once, so a GPU never waits for
the host between batches. The one exception is Algorithm 1's step 3 with a suite at λ > 0
(:func:`partition_alternating_step`): it differentiates the best defender's graph alone, and
which graph to run is the host's decision.

A *partition suite* (Section IV-F) defends one network at several partitions at once: the
forward pass returns the activation at each (``Forward.h`` is then their tuple, in stage
order), ``ctx.defended_at`` says which partition each defender defends, and the two partition
steps apply Algorithm 1 per partition: each partition's defenders train on its activation, each
partition picks its own best defender, and the classifier steps on CE − λ·Σ_p d(x, D_best,p(h_p)).
With one partition (``defended_at`` empty) they compute exactly what they did before suites.

Adding a defense (here or in a plugin module: README, "Extending")
--------------------------------------------------------------------
1. Write its step function: call :func:`forward`, step whatever it trains, step the
   classifier (:func:`classifier_step`), and end with :func:`record`, passing
   ``distance=`` if the defense has one to report (it becomes the history's
   ``"distance"``) and ``best=`` if it picks among the defenders (``"best_defender_counts"``).
   Every value it passes to :func:`record` is checked for divergence.
2. Register it with :func:`register_defense` (a decorator): one step function, or one per
   update order; ``defenders=True`` if it trains the sweep's defender suite; ``check=`` if
   it needs something of the local partition. :data:`DEFENSE_REGISTRY` is the one place a
   defense is defined; :data:`STEPS` and :data:`DEFENSES` (the names
   :class:`~pp_cluster.privacy.defense.TrainConfig` and ``SweepSpec`` accept) are read off it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from pp_cluster.nets.noise import GaussianNoise
from pp_cluster.plugins import Registry
from pp_cluster.privacy.metrics import distance as distance_fn
from pp_cluster.privacy.nopeek import distance_correlation

if TYPE_CHECKING:
    from pp_cluster.privacy.defense import TrainConfig

UPDATES = ("alternating", "simultaneous")


@dataclass(frozen=True)
class StepStats:
    """One batch's statistics. Host numbers when a step runs on its own (one transfer per
    batch); under the driver (``StepContext.stats_on_device``) 0-d tensors left on the
    device, which it stacks and moves once per epoch (``n`` is always a host int)."""

    loss: float | Tensor  # the objective the classifier stepped on
    task_loss: float | Tensor  # CE(y, f(x))
    correct: int | Tensor  # images of the batch classified right (train mode, before the step)
    n: int  # images in the batch
    # d(x, D_best(h)), dCor(x, h); None: the defense has none. A partition suite: the mean over
    # its partitions of each one's best defender's distance (the loss weighs their sum).
    distance: float | Tensor | None = None
    defender_losses: tuple[float | Tensor, ...] = ()  # each defender's d(x, D_k(h)) in its own step
    # Index of the best defender, when the defense has defenders; a partition suite: a tuple,
    # the index (among all its defenders) of each partition's best, in stage order.
    best: int | Tensor | tuple[int | Tensor, ...] | None = None

    @property
    def finite(self) -> bool:
        """False once any loss or distance is NaN or infinite: the run has diverged (host
        numbers; the driver checks its device statistics itself)."""
        values = (
            self.loss,
            self.task_loss,
            *self.defender_losses,
            *(() if self.distance is None else (self.distance,)),
        )
        return all(math.isfinite(v) for v in values)


@dataclass(frozen=True)
class StepContext:
    """What every step of one run reads; built once by the driver."""

    cfg: TrainConfig
    model: nn.Module  # x -> (h, logits): local + remote, possibly wrapped (DDP)
    defenders: Sequence[nn.Module]  # as given: their parameters enter step 3 as constants
    wrapped_defenders: Sequence[nn.Module]  # the same, possibly wrapped: what steps 1 call
    optimizer: torch.optim.Optimizer  # the classifier's
    defender_optimizers: Sequence[torch.optim.Optimizer]
    value_range: tuple[float, float]
    use_amp: bool
    device_type: str
    distributed: bool  # under DDP: the best defender is the argmin on the global batch
    stats_on_device: bool = False  # record() leaves the statistics on the device (the driver's)
    # A partition suite's: per defender, the index into the forward's activations (Forward.h,
    # then a tuple) of the partition it defends, each partition's defenders together and in
    # stage order. Empty: one partition, every defender reads its activation.
    defended_at: tuple[int, ...] = ()

    def amp(self) -> torch.autocast:
        return torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.use_amp)

    def distance(self, x: Tensor, rec: Tensor) -> Tensor:
        """The privacy distance d(x, rec) of ``cfg.distance``, in fp32."""
        return distance_fn(self.cfg.distance, x, rec.float(), self.value_range)


@dataclass(frozen=True)
class Forward:
    """The classifier's forward pass on one batch."""

    # f_local(x), the activation the defenders (and an attacker) see; a partition suite's:
    # the tuple of its activations, one per partition in stage order, from the one forward
    h: Tensor | tuple[Tensor, ...]
    logits: Tensor
    task: Tensor  # CE(y, f(x)), with the config's label smoothing
    stats_on_device: bool = False  # the context's: what record() does with the statistics


StepFn = Callable[[StepContext, Tensor, Tensor], StepStats]


def forward(ctx: StepContext, x: Tensor, y: Tensor) -> Forward:
    with ctx.amp():
        h, logits = ctx.model(x)
        task = F.cross_entropy(logits, y, label_smoothing=ctx.cfg.label_smoothing)
    return Forward(h, logits, task, ctx.stats_on_device)


def classifier_step(ctx: StepContext, loss: Tensor) -> None:
    """One optimiser step of the classifier (local + remote) on ``loss``."""
    ctx.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    ctx.optimizer.step()


def record(
    fwd: Forward,
    y: Tensor,
    loss: Tensor,
    *,
    defender_losses: Sequence[Tensor] = (),
    distance: Tensor | None = None,
    best: int | Tensor | None = None,
) -> StepStats:
    """The batch's :class:`StepStats`: left on the device under the driver
    (``fwd.stats_on_device``), else moved to the host in one transfer."""
    named = {"loss": loss, "task_loss": fwd.task, "correct": (fwd.logits.argmax(dim=1) == y).sum()}
    named |= {f"defender_{k}": v for k, v in enumerate(defender_losses)}
    if distance is not None:
        named["distance"] = distance
    bests = best if isinstance(best, tuple) else (best,)
    named |= {f"best_{k}": b for k, b in enumerate(bests) if isinstance(b, Tensor)}
    stacked = torch.stack([v.detach().float() for v in named.values()])
    if fwd.stats_on_device:
        values = dict(zip(named, stacked.unbind()))
    else:
        values = dict(zip(named, stacked.tolist()))
        values |= {k: int(v) for k, v in values.items() if k == "correct" or k.startswith("best_")}
    bests = tuple(values.get(f"best_{k}", b) for k, b in enumerate(bests))
    return StepStats(
        loss=values["loss"],
        task_loss=values["task_loss"],
        correct=values["correct"],
        n=len(y),
        distance=values.get("distance"),
        best=bests if isinstance(best, tuple) else bests[0],
        defender_losses=tuple(values[f"defender_{k}"] for k in range(len(defender_losses))),
    )


def best_defender(dists: Sequence[Tensor], distributed: bool) -> int | Tensor:
    """Index of the smallest distance: 0 for a lone defender, else a 0-d tensor on the device
    (no host read); under DDP summed over shards first, so every shard picks the same
    defender (the argmin on the global batch)."""
    if len(dists) == 1:
        return 0
    values = torch.stack([v.detach() for v in dists])
    if distributed:
        dist.all_reduce(values)
    return values.argmin()


def pick(values: Sequence[Tensor], best: int | Tensor) -> Tensor:
    """``values[best]``; selected on the device when ``best`` is a device index."""
    return values[best] if isinstance(best, int) else torch.stack(list(values))[best]


def activations(fwd: Forward) -> tuple[Tensor, ...]:
    """The defended activations of a forward pass, in stage order: one, or a suite's."""
    return fwd.h if isinstance(fwd.h, tuple) else (fwd.h,)


def defender_inputs(ctx: StepContext, fwd: Forward) -> list[Tensor]:
    """The activation each defender reads: its partition's (``ctx.defended_at``)."""
    hs = activations(fwd)
    return [hs[k] for k in ctx.defended_at] if ctx.defended_at else [fwd.h] * len(ctx.defenders)


def partition_groups(ctx: StepContext) -> list[range]:
    """The indices of each defended partition's defenders, in stage order (one partition: all)."""
    at = ctx.defended_at or (0,) * len(ctx.defenders)
    return [range(at.index(p), len(at) - at[::-1].index(p)) for p in dict.fromkeys(at)]


def suite_record(
    groups: Sequence[range], bests: Sequence[int | Tensor], d_bests: Sequence[Tensor]
) -> tuple[Tensor, int | Tensor | tuple[int | Tensor, ...]]:
    """(distance, best) for :func:`record`: with one partition its best defender's distance and
    index; with a suite the mean of the partitions' distances and each one's best, as an index
    among all the defenders (on the device where it is)."""
    if len(groups) == 1:
        return d_bests[0], bests[0]
    return torch.stack(d_bests).mean(), tuple(g.start + b for g, b in zip(groups, bests))


# --- the step functions -------------------------------------------------------------------
def plain_step(ctx: StepContext, x: Tensor, y: Tensor) -> StepStats:
    """Cross-entropy only: the noise defense (its noise lives in the local partition) and
    λ = 0 without defenders."""
    fwd = forward(ctx, x, y)
    classifier_step(ctx, fwd.task)
    return record(fwd, y, fwd.task)


def nopeek_step(ctx: StepContext, x: Tensor, y: Tensor) -> StepStats:
    """NoPeek: the classifier steps on CE(y, f(x)) + α·dCor(x, h), α = ``cfg.lam``, the
    gradient reaching the local partition through h; at α = 0 dCor is only reported."""
    lam = ctx.cfg.lam
    fwd = forward(ctx, x, y)
    with torch.set_grad_enabled(lam > 0):
        dcor = distance_correlation(x, fwd.h)
    loss = fwd.task + lam * dcor if lam > 0 else fwd.task
    classifier_step(ctx, loss)
    return record(fwd, y, loss, distance=dcor)


def partition_alternating_step(ctx: StepContext, x: Tensor, y: Tensor) -> StepStats:
    """Algorithm 1 of the paper, one mini-batch, its three steps in the paper's order; under a
    partition suite, per partition (module docstring)."""
    if not ctx.defenders:  # an empty suite (λ = 0 only) is plain training
        return plain_step(ctx, x, y)
    lam = ctx.cfg.lam
    fwd = forward(ctx, x, y)  # h = f_θl(x), computed once for the three steps
    hs = defender_inputs(ctx, fwd)

    # 1. "Update the defender suite parameters θ_d ∈ {θ_d1, …, θ_dD} via SGD using the
    #    gradient ∇_θd 1/m Σ_i d(x_i, f_θd(f_θl(x_i)))": h is detached, so this step never
    #    touches the classifier.
    defender_losses = []
    for defender, opt, h in zip(ctx.wrapped_defenders, ctx.defender_optimizers, hs):
        opt.zero_grad(set_to_none=True)
        with ctx.amp():
            rec = defender(h.detach())
        d_loss = ctx.distance(x, rec)
        d_loss.backward()
        opt.step()
        defender_losses.append(d_loss.detach())

    # 2. "Choose the best defender via θ_d = argmin_{θd ∈ {θd1, …, θdD}} 1/B Σ_i
    #    d(x_i, f_θd(f_θl(x_i)))", after the update of step 1 (a suite: each partition its
    #    own). The distances are differentiable in h only: the defenders' weights enter as
    #    constants.
    with torch.set_grad_enabled(lam > 0):
        dists = []
        for defender, h in zip(ctx.defenders, hs):
            frozen = {k: p.detach() for k, p in defender.named_parameters()}
            with ctx.amp():
                rec = functional_call(defender, frozen, (h if lam > 0 else h.detach(),))
            dists.append(ctx.distance(x, rec))
    groups = partition_groups(ctx)
    bests = [best_defender(dists[g.start : g.stop], ctx.distributed) for g in groups]

    # 3. "Update the model parameters θ via SGD using the gradient ∇_θ 1/B Σ_i
    #    l(y_i, f_θ(x_i)) − λ·d(x_i, f_θd(f_θl(x_i)))" (a suite: −λ·d of each partition's
    #    best): the λ-term reaches the local partition through h; the remote partition gets
    #    the task gradient alone. Only the best defender's graph is differentiated, so the
    #    host reads which one it is (a suite's one host read per batch and partition; at
    #    λ = 0 nothing is differentiated through it).
    if lam > 0:
        for p, best in enumerate(bests):
            bests[p] = int(best)
    d_bests = [pick(dists[g.start : g.stop], best) for g, best in zip(groups, bests)]
    loss = fwd.task
    for d_best in d_bests:
        loss = loss - lam * d_best
    classifier_step(ctx, loss)
    distance, best = suite_record(groups, bests, d_bests)
    return record(fwd, y, loss, defender_losses=defender_losses, distance=distance, best=best)


def partition_simultaneous_step(ctx: StepContext, x: Tensor, y: Tensor) -> StepStats:
    """Algorithm 1's three steps on one forward and one backward pass per defender
    (simultaneous gradient play; the defense module's docstring): the λ-gradient comes
    from the defenders as they were at the start of the batch. Under a partition suite, per
    partition (module docstring)."""
    if not ctx.defenders:  # an empty suite (λ = 0 only) is plain training
        return plain_step(ctx, x, y)
    lam = ctx.cfg.lam
    fwd = forward(ctx, x, y)
    # d(x, D_k(h)) on a detached copy of its partition's h that requires grad: one backward
    # gives the defender's gradient (step 1) and ∂d/∂h (for step 3).
    inputs = [h.detach().requires_grad_(lam > 0) for h in defender_inputs(ctx, fwd)]
    dists = []
    for defender, opt, h_k in zip(ctx.wrapped_defenders, ctx.defender_optimizers, inputs):
        opt.zero_grad(set_to_none=True)
        with ctx.amp():
            rec = defender(h_k)
        dists.append(ctx.distance(x, rec))
    torch.stack(dists).sum().backward()
    for opt in ctx.defender_optimizers:  # step 1
        opt.step()
    groups = partition_groups(ctx)
    # step 2, per partition, on the distances before step 1
    bests = [best_defender(dists[g.start : g.stop], ctx.distributed) for g in groups]
    d_bests = [  # on the device: no host read
        pick([d.detach() for d in dists[g.start : g.stop]], best) for g, best in zip(groups, bests)
    ]
    loss = fwd.task
    for d_best in d_bests:
        loss = loss - lam * d_best
    if lam > 0:  # step 3: CE's gradient plus -λ·∂d_best/∂h entering the local partition at each h
        h_grads = [
            -lam * pick([h_k.grad for h_k in inputs[g.start : g.stop]], best)
            for g, best in zip(groups, bests)
        ]
        hs = list(activations(fwd))
        ctx.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward([fwd.task, *hs], [torch.ones_like(fwd.task), *h_grads])
        ctx.optimizer.step()
    else:
        classifier_step(ctx, loss)
    distance, best = suite_record(groups, bests, d_bests)
    return record(fwd, y, loss, defender_losses=dists, distance=distance, best=best)


# --- the registry: the one place a defense plugs in (module docstring) -----------------
class Defense(NamedTuple):
    alternating: StepFn  # the step under update="alternating" (Algorithm 1's order)
    simultaneous: StepFn  # under update="simultaneous"
    defenders: bool = False  # trains the sweep's defender suite beside the classifier
    check: Callable[[TrainConfig, nn.Module], None] | None = None  # what it needs of the local partition


DEFENSE_REGISTRY: Registry[Defense] = Registry("defense")


def register_defense(
    name: str,
    step: StepFn | None = None,
    *,
    simultaneous: StepFn | None = None,
    defenders: bool = False,
    check: Callable[[TrainConfig, nn.Module], None] | None = None,
):
    """Register defense ``name`` (what λ > 0 trains; the ``defense`` column): ``step`` for
    ``update="alternating"`` and, unless ``simultaneous`` is given, for ``"simultaneous"``
    too (where the order means nothing). ``defenders``: it trains the sweep's defender suite
    (``ctx.defenders``; a suite is then required at λ > 0, and refused otherwise).
    ``check(cfg, local)`` raises ValueError when the local partition lacks what the defense
    needs. Without ``step``, a decorator."""

    def add(fn: StepFn) -> StepFn:
        DEFENSE_REGISTRY.register(name, Defense(fn, simultaneous or fn, defenders, check))
        return fn

    return add if step is None else add(step)


def _check_noise(cfg: TrainConfig, local: nn.Module) -> None:
    if cfg.lam > 0:
        sigmas = [m.sigma for m in local.modules() if isinstance(m, GaussianNoise)]
        if not any(math.isclose(s, cfg.lam, rel_tol=1e-9, abs_tol=0.0) for s in sigmas):
            raise ValueError(
                f"defense 'noise' with lam={cfg.lam}: the local partition must add that noise "
                f"(add_activation_noise before split); its GaussianNoise sigmas: {sigmas}"
            )


register_defense(
    "partition", partition_alternating_step, simultaneous=partition_simultaneous_step, defenders=True
)
register_defense("nopeek", nopeek_step)  # no defenders: the two orders coincide
register_defense("noise", plain_step, check=_check_noise)  # the noise is in the net


class _Steps(Mapping[tuple[str, str], StepFn]):
    """``(defense, update) -> step function``, read off :data:`DEFENSE_REGISTRY` at every use."""

    def _table(self) -> dict[tuple[str, str], StepFn]:
        return {(name, u): getattr(d, u) for name, d in DEFENSE_REGISTRY.items() for u in UPDATES}

    def __getitem__(self, key: tuple[str, str]) -> StepFn:
        return self._table()[key]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(DEFENSE_REGISTRY) * len(UPDATES)


STEPS: Mapping[tuple[str, str], StepFn] = _Steps()
# The names are the `defense` column's (the results store adds "none" for λ = 0); live.
DEFENSES = DEFENSE_REGISTRY.names()


def trains_defenders(defense: str) -> bool:
    """Whether ``defense`` trains a defender suite ("none", λ = 0, trains none)."""
    return defense in DEFENSE_REGISTRY and DEFENSE_REGISTRY[defense].defenders


def step_function(defense: str, update: str) -> StepFn:
    """The step function of ``(defense, update)``; ValueError naming the registered pairs."""
    try:
        return STEPS[(defense, update)]
    except KeyError:
        pairs = ", ".join(f"({d!r}, {u!r})" for d, u in STEPS)
        raise ValueError(
            f"no training step for defense={defense!r} with update={update!r}; "
            f"registered (defense, update) pairs: {pairs}"
        ) from None


def check_defense(cfg: TrainConfig, local: nn.Module, defenders: Sequence[nn.Module]) -> None:
    """What each defense needs of ``train_defended``'s inputs; ValueError otherwise."""
    defense = DEFENSE_REGISTRY[cfg.defense]
    if defense.defenders:
        if cfg.lam > 0 and not defenders:
            raise ValueError(f"lam={cfg.lam} > 0 needs at least one defender")
    elif defenders:
        raise ValueError(f"defense {cfg.defense!r} trains no defenders, got {len(defenders)}")
    if defense.check is not None:
        defense.check(cfg, local)
