"""Issue 14's smaller fidelity points: remote fine-tuning continues training (IV-G, V-D(2)),
DP pixelation's ε on colour images (Appendix D), the activation maps of Figures 6/8/9, and the
Table III detector's calibration sample."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from test_attributes import SYM, stripes  # (pytest puts this folder on sys.path)
from test_export import SWEEP, TINY, _finish
from torch.optim.optimizer import register_optimizer_step_pre_hook

from analysis import report
from analysis.tables import load
from pp_cluster import pipeline
from pp_cluster.config import ModelSpec
from pp_cluster.data.base import Split
from pp_cluster.nets import split
from pp_cluster.privacy import attributes, finetune
from pp_cluster.privacy.baselines import dp_pixelate

# -- 1. fine-tuning continues at the schedule's last lr, on the recipe's batches ------------


def _plain(**kw) -> ModelSpec:
    base = {**TINY, "epochs": 3, "finetune_epochs": 2, **kw}
    return ModelSpec(partition="pool2", lam=0.0, defenders=(), defense="none", **base)


class _StepLRs:
    """Every optimiser step's (optimizer, lr) while active (torch's global step hook)."""

    def __enter__(self) -> list[tuple[torch.optim.Optimizer, float]]:
        self.steps: list[tuple[torch.optim.Optimizer, float]] = []
        hook = register_optimizer_step_pre_hook
        self.handle = hook(lambda opt, args, kwargs: self.steps.append((opt, opt.param_groups[0]["lr"])))
        return self.steps

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def _of(steps, module: torch.nn.Module) -> list[float]:
    """The lrs of the steps whose optimiser trains ``module``."""
    ids = {id(p) for p in module.parameters()}
    return [lr for opt, lr in steps if any(id(p) in ids for g in opt.param_groups for p in g["params"])]


@pytest.mark.parametrize(
    "recipe, overrides, last",
    [
        ("fast", {}, None),  # one-cycle: annealed to its floor by the last batch
        ("paper", {"lr_step": 1, "lr_gamma": 0.5}, 0.01 * 0.5**2),  # epochs 1-3 at 0.01, 0.005, 0.0025
    ],
)
def test_finetuning_starts_at_the_lr_training_ended_with(recipe, overrides, last):
    spec = _plain(recipe=recipe, train_overrides=overrides)
    ds = pipeline.load_data(spec)
    with _StepLRs() as steps:
        model, result = pipeline.train_model(spec, ds)
    trained = _of(steps, model.remote)
    assert result.status == "ok" and len(trained) == spec.epochs * 5  # 160 images, batches of 32
    cfg = pipeline.train_config(spec, ds, "cpu")
    with _StepLRs() as steps:
        out = pipeline.finetune(model, spec, ds)
    tuned = _of(steps, model.remote)
    assert len(tuned) == spec.finetune_epochs * 5
    assert tuned[0] == pytest.approx(trained[-1], rel=1e-12) and out["finetune_lr"] == tuned[0]
    assert set(tuned) == {tuned[0]}  # held there: fine-tuning has no schedule of its own
    if last is not None:  # the lr of the last epoch, not the one a further scheduler step would give
        assert trained[-1] == pytest.approx(last, rel=1e-12)
    else:
        assert trained[-1] < cfg.lr / 1e4
    assert finetune.final_lr(cfg, len(ds.train)) == out["finetune_lr"]


@pytest.mark.parametrize("recipe, augments, smoothing", [("fast", True, 0.1), ("paper", False, 0.0)])
def test_finetuning_trains_on_the_recipes_batches(recipe, augments, smoothing, monkeypatch):
    spec = _plain(recipe=recipe, epochs=1)
    ds = pipeline.load_data(spec)
    model, _ = pipeline.train_model(spec, ds)
    real_crop_flip, real_ce = finetune.crop_flip, torch.nn.functional.cross_entropy
    augmented, smoothed, seen = [], [], []

    def crop_flip(x, fill, fmt):
        augmented.append((fill, out := real_crop_flip(x, fill, fmt)))
        return out

    def cross_entropy(logits, y, **kw):
        smoothed.append(kw.get("label_smoothing", 0.0))
        return real_ce(logits, y, **kw)

    monkeypatch.setattr(finetune, "crop_flip", crop_flip)
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", cross_entropy)
    # what the locked local partition is fed while the remote one trains (not the evaluations)
    model.local.register_forward_pre_hook(
        lambda m, args: seen.append(args[0]) if model.remote.training else None
    )
    pipeline.finetune(model, spec, ds)

    assert len(seen) == spec.finetune_epochs * 5 and smoothed == [smoothing] * len(seen)
    is_train_image = [
        (x[:, None] == ds.train.x[None]).flatten(2).all(-1).any(-1) for x in seen
    ]  # per image of each batch: exactly one of the training images?
    if augments:
        assert len(augmented) == len(seen) and all(out is x for (_, out), x in zip(augmented, seen))
        assert {fill for fill, _ in augmented} == {ds.value_range[0]}  # padded as training pads
        assert not torch.cat(is_train_image).all()  # cropped and flipped: not the stored images
    else:
        assert augmented == [] and torch.cat(is_train_image).all()


# -- 2. DP pixelation: an RGB pixel is its three values together -----------------------------


def _noise(out: torch.Tensor, b: int) -> torch.Tensor:
    """One value per cell of a mid-grey (0 in SYM) release: its noise in 0..255 units."""
    return ((out[..., ::b, ::b] + 1) * 127.5 - 127.5).double()


@pytest.mark.parametrize("b, m", [(2, 1), (4, 3)])
def test_rgb_noise_scale_is_three_times_the_grey_one(b, m):
    # At the same ε, m, b a changed RGB pixel moves three cell means (one per channel), each by
    # 255/b², so the L1 sensitivity, hence the Laplace scale, is 3·255·m/b² (÷ε) against 255·m/b².
    eps = 3 * 255 * m / (b * b * 10.0)  # RGB scale 10 grey levels: clipping at ±127.5 never happens
    grey_scale, rgb_scale = 255 * m / (b * b * eps), 3 * 255 * m / (b * b * eps)
    assert rgb_scale == pytest.approx(10.0)
    gen = torch.Generator().manual_seed(0)
    grey = _noise(dp_pixelate(torch.zeros(4, 1, 64 * b, 64 * b), b, m, eps, SYM, gen), b)
    rgb = _noise(dp_pixelate(torch.zeros(4, 3, 64 * b, 64 * b), b, m, eps, SYM, gen), b)
    for noise, scale in ((grey, grey_scale), (rgb, rgb_scale)):
        assert noise.std().item() == pytest.approx(math.sqrt(2) * scale, rel=0.03)  # Laplace: √2·scale
        assert noise.abs().mean().item() == pytest.approx(scale, rel=0.03)  # E|Laplace| = scale
    assert (rgb.std() / grey.std()).item() == pytest.approx(3.0, rel=0.04)
    # each channel's cells get their own draw
    assert abs(np.corrcoef(rgb[:, 0].flatten(), rgb[:, 1].flatten())[0, 1]) < 0.02


def test_every_changed_pixel_costs_at_most_eps_over_m_even_in_border_cells():
    # 3×3 images, b = 2: cells of 4, 2, 2 and 1 pixels. With m = 3 > 2 a cell's own
    # sensitivity 255·min(m, n)/n would under-noise the small cells (three pixels spread over
    # the corner, a border cell and a full one would cost 2.25ε); the scale must be 255·m/(n·ε),
    # so scale × pixels is the same in every cell.
    m, eps = 3, 60.0
    out = dp_pixelate(
        torch.full((20000, 1, 3, 3), 0.5), 2, m, eps, (0.0, 1.0), torch.Generator().manual_seed(1)
    )
    noise = ((out - 0.5) * 255).double()
    cells = {4: noise[..., 0, 0], 2: noise[..., 0, 2], 1: noise[..., 2, 2]}
    for n, values in cells.items():
        assert values.abs().mean().item() == pytest.approx(255 * m / (n * eps), rel=0.04), n


# -- 3. Figures 6, 8, 9: activation maps in the report -------------------------------------


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    """A Ray-free results root: an undefended model and one defended at each of pool1, pool2."""
    root = tmp_path_factory.mktemp("results")
    torch.manual_seed(0)
    specs = {"plain": ModelSpec(partition=None, lam=0.0, defenders=(), defense="none", **TINY)}
    for p in ("pool1", "pool2"):
        specs[p] = ModelSpec(partition=p, lam=0.1, defenders=("deconv",), defense="partition", **TINY)
    ds = pipeline.load_data(specs["plain"])
    return root, ds, {name: _finish(root, spec, ds) for name, spec in specs.items()}


def test_activation_maps_are_the_models_own_at_each_partition(farm):
    root, ds, trained = farm
    data, skipped = report.activation_maps_data(load(str(root)), channels=6)
    assert skipped == [] and len(data) == 4
    x = ds.test.x[:1]
    for _, row in data.iterrows():
        name = "plain" if row["defense"] == "none" else row["partition"]
        model_id, model = trained[name]
        assert row["model_id"] == model_id and row["sweep"] == SWEEP
        with torch.no_grad():
            want = split(model.net, row["partition"])[0](x)[0]
        assert row["n_channels"] == want.shape[0] == {"pool1": 4, "pool2": 8}[row["partition"]]
        np.testing.assert_allclose(row["maps"], want[:6].numpy(), rtol=0, atol=1e-6)
        assert row["image"].shape == (16, 16) and row["image"].min() >= 0 and row["image"].max() <= 1
    assert sorted(zip(data["partition"], data["defense"])) == [
        ("pool1", "none"),
        ("pool1", "partition"),
        ("pool2", "none"),
        ("pool2", "partition"),
    ]


def test_report_draws_the_activation_maps(farm, tmp_path):
    root, _, trained = farm
    text = report.build_report(str(root), tmp_path).read_text()
    section = text.split("## Figures 6, 8, 9")[1].split("\n## ")[0]
    png = tmp_path / f"activations_{SWEEP}_lfw-subset.png"
    assert f"![{png.stem}]({png.name})" in section and png.stat().st_size > 5000
    drawn = pd.read_csv(tmp_path / "activation_maps.csv")
    assert set(drawn["model_id"]) == {mid for mid, _ in trained.values()} and len(drawn) == 4
    assert "Figures 6/8/9" not in text.split("## Missing")[1]


def test_without_state_files_the_maps_are_missing_with_the_reason(farm, tmp_path):
    root, _, _ = farm
    bare = tmp_path / "bare"
    shutil.copytree(root, bare, ignore=shutil.ignore_patterns("_ray"))
    text = report.build_report(str(bare), tmp_path / "out").read_text()
    assert "## Figures 6, 8, 9" not in text
    missing = text.split("## Missing")[1]
    assert "Figures 6/8/9 for lfw-subset" in missing and "no state file" in missing


def test_maps_of_other_data_sets_need_the_flag(farm, tmp_path, monkeypatch):
    # Activation maps of a face are images of that person: only the embedded public data sets
    # are drawn by default. Treat lfw-subset as private to see the gate and the flag.
    root, _, _ = farm
    monkeypatch.setattr(report, "PUBLIC_DATASETS", ())
    text = report.build_report(str(root), tmp_path / "default").read_text()
    assert "## Figures 6, 8, 9" not in text and "--activation-maps" in text.split("## Missing")[1]
    assert not list((tmp_path / "default").glob("activations_*.png"))
    assert report.main([str(root), "--out", str(tmp_path / "flag"), "--activation-maps"]) == 0
    assert list((tmp_path / "flag").glob("activations_*.png"))


# -- 4. the Table III detector's calibration sample ---------------------------------------


def _people(counts: list[int], genders: list[int]) -> Split:
    """Images sorted by person, as a test split comes; person i has counts[i] of gender genders[i]."""
    y = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    g = torch.tensor(genders)[y]
    g[y == 0] = torch.where(torch.arange(counts[0]) % 3 == 0, -1, g[y == 0])  # some unknown
    return Split(torch.zeros(len(y), 1, 2, 2), y, {"gender": g})


COUNTS = [30, 12, 8, 6, 6, 5, 4, 3, 3, 2]
GENDERS = [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]  # 7 men, 3 women


def test_the_calibration_sample_covers_every_person_evenly():
    s = _people(COUNTS, GENDERS)
    idx = attributes.calibration_sample(s, 25, seed=0)
    assert len(idx) == len(set(idx.tolist())) == 25 and torch.equal(idx, idx.sort().values)
    per_person = torch.bincount(s.y[idx], minlength=len(COUNTS)).tolist()
    assert min(per_person) >= 1  # the first 25 images would be person 0 alone
    for p, k in enumerate(per_person):  # one each before anyone twice: at most one apart unless used up
        assert all(k <= q + 1 or q == COUNTS[o] for o, q in enumerate(per_person)), (p, per_person)
    assert torch.equal(attributes.calibration_sample(s, 500, seed=0), torch.arange(len(s.y)))


def test_a_small_calibration_sample_has_distinct_people_in_gender_proportion():
    s = _people(COUNTS, GENDERS)
    for seed in range(5):
        idx = attributes.calibration_sample(s, 4, seed=seed)
        people = s.y[idx].tolist()
        assert len(set(people)) == 4
        men = sum(GENDERS[p] for p in people)
        assert abs(men - 4 * 7 / 10) < 1  # 3 men and 1 woman: 2.8 of 4 people are men


def test_the_calibration_sample_is_reproducible_and_seeded():
    s = _people(COUNTS, GENDERS)
    a = attributes.calibration_sample(s, 20, seed=3)
    assert torch.equal(a, attributes.calibration_sample(s, 20, seed=3))
    assert any(not torch.equal(a, attributes.calibration_sample(s, 20, seed=k)) for k in range(4, 8))
    with pytest.raises(ValueError, match="sample size"):
        attributes.calibration_sample(s, 0)


def test_the_attribute_judge_calibrates_on_the_sample(monkeypatch):
    x, gender = stripes(120, seed=11)
    y = torch.repeat_interleave(torch.arange(6), 20)  # six people, sorted
    test = Split(x, y, {"gender": gender})
    dx, dgender = stripes(80, seed=12)
    disjoint = Split(dx, torch.full((80,), -1), {"gender": dgender})  # other people
    seen = []

    def calibrate(self, originals):
        seen.append(originals)
        return self

    monkeypatch.setattr(attributes.FaceDetector, "calibrate", calibrate)
    attributes.AttributeJudge.for_dataset(test, disjoint, SYM, n_calibrate=12, seed=5)
    assert torch.equal(seen[0], x[attributes.calibration_sample(test, 12, seed=5)])
    assert torch.bincount(y[attributes.calibration_sample(test, 12, seed=5)]).tolist() == [2] * 6
