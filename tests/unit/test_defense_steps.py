"""The per-batch step functions of defended training (pp_cluster.privacy.steps): each
returns its named, frozen StepStats with finite values; the (defense, update) registry
covers every configurable pair and refuses an unknown one by name."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from pp_cluster.privacy.defense import DEFENSES, UPDATES, TrainConfig, build_optimizer
from pp_cluster.privacy.steps import (
    STEPS,
    StepContext,
    StepStats,
    nopeek_step,
    partition_alternating_step,
    partition_simultaneous_step,
    plain_step,
    step_function,
)

SHAPE = (1, 8, 8)
VR = (0.0, 1.0)


class _XToHLogits(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.local = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU())
        self.remote = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.local(x)
        return h, self.remote(h)


def _context(defense: str, update: str, lam: float, n_defenders: int) -> StepContext:
    torch.manual_seed(0)
    model = _XToHLogits()
    defenders = [
        nn.Sequential(nn.Linear(16, 64), nn.Sigmoid(), nn.Unflatten(1, SHAPE)) for _ in range(n_defenders)
    ]
    cfg = TrainConfig(defense=defense, update=update, lam=lam, batch_size=8, lr=1e-2)
    return StepContext(
        cfg=cfg,
        model=model,
        defenders=defenders,
        wrapped_defenders=defenders,
        optimizer=build_optimizer("adam", model.parameters(), 1e-2),
        defender_optimizers=[build_optimizer("adam", d.parameters(), 1e-2) for d in defenders],
        value_range=VR,
        use_amp=False,
        device_type="cpu",
        distributed=False,
    )


def _batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, *SHAPE, generator=g), torch.randint(0, 3, (n,), generator=g)


CASES = [  # (defense, update, λ, defenders, what the record carries)
    ("partition", "alternating", 0.5, 1, "defenders"),
    ("partition", "alternating", 0.5, 2, "defenders"),
    ("partition", "alternating", 0.0, 2, "defenders"),
    ("partition", "simultaneous", 0.5, 1, "defenders"),
    ("partition", "simultaneous", 0.5, 2, "defenders"),
    ("partition", "simultaneous", 0.0, 2, "defenders"),
    ("partition", "alternating", 0.0, 0, "plain"),  # λ = 0 without defenders
    ("partition", "simultaneous", 0.0, 0, "plain"),
    ("nopeek", "alternating", 0.3, 0, "distance"),
    ("nopeek", "simultaneous", 0.0, 0, "distance"),
    ("noise", "alternating", 0.0, 0, "plain"),
    ("noise", "simultaneous", 0.0, 0, "plain"),
]


@pytest.mark.parametrize(("defense", "update", "lam", "n_defenders", "carries"), CASES)
def test_each_step_returns_its_named_record_with_finite_values(defense, update, lam, n_defenders, carries):
    ctx = _context(defense, update, lam, n_defenders)
    before = [p.detach().clone() for p in ctx.model.parameters()]
    x, y = _batch()
    stats = step_function(defense, update)(ctx, x, y)

    assert type(stats) is StepStats
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.task_loss = 0.0  # type: ignore[misc]
    assert stats.finite
    assert isinstance(stats.loss, float) and isinstance(stats.task_loss, float)
    assert math.isfinite(stats.loss) and math.isfinite(stats.task_loss) and stats.task_loss > 0
    assert isinstance(stats.correct, int) and 0 <= stats.correct <= stats.n == len(y)
    if carries == "defenders":
        assert len(stats.defender_losses) == n_defenders
        assert all(isinstance(v, float) and 0 <= v <= 2 for v in stats.defender_losses)  # 1 - SSIM
        assert stats.best in range(n_defenders)
        assert isinstance(stats.distance, float) and 0 <= stats.distance <= 2
        assert stats.loss == pytest.approx(stats.task_loss - lam * stats.distance, rel=1e-5, abs=1e-6)
    elif carries == "distance":  # NoPeek's dCor(x, h), reported at α = 0 too
        assert stats.defender_losses == () and stats.best is None
        assert isinstance(stats.distance, float) and 0 < stats.distance <= 1
        assert stats.loss == pytest.approx(stats.task_loss + lam * stats.distance, rel=1e-5, abs=1e-6)
    else:
        assert stats.defender_losses == () and stats.best is None and stats.distance is None
        assert stats.loss == stats.task_loss
    # the classifier took its step
    assert any(not torch.equal(a, b) for a, b in zip(before, ctx.model.parameters()))


def test_a_record_with_a_nan_or_inf_is_not_finite():
    ok = StepStats(loss=1.0, task_loss=1.0, correct=3, n=8, distance=0.5, defender_losses=(0.4, 0.6), best=0)
    assert ok.finite
    assert not dataclasses.replace(ok, loss=math.inf).finite
    assert not dataclasses.replace(ok, distance=math.nan).finite
    assert not dataclasses.replace(ok, defender_losses=(0.4, math.nan)).finite
    assert dataclasses.replace(ok, distance=None, defender_losses=(), best=None).finite


def test_the_registry_covers_every_configurable_pair_and_names_the_steps():
    assert DEFENSES == ("partition", "nopeek", "noise") and UPDATES == ("alternating", "simultaneous")
    assert set(STEPS) == {(d, u) for d in DEFENSES for u in UPDATES}
    assert step_function("partition", "alternating") is partition_alternating_step  # Algorithm 1
    assert step_function("partition", "simultaneous") is partition_simultaneous_step
    assert step_function("nopeek", "simultaneous") is nopeek_step
    assert step_function("noise", "alternating") is plain_step


@pytest.mark.parametrize(
    ("defense", "update"), [("partition", "sideways"), ("dropout", "alternating"), ("none", "alternating")]
)
def test_an_unknown_defense_update_pair_is_a_clear_value_error(defense, update):
    with pytest.raises(
        ValueError, match=rf"defense={defense!r} with update={update!r}.*\('partition', 'alternating'\)"
    ):
        step_function(defense, update)
