"""Partition suites (Section IV-F), without Ray: one network defended at several partitions at
once, a defender suite per partition, the loss CE − λ·Σ_p d_p; the sweep axis and its checks;
ids of single-partition models unchanged; the report's comparison with single-partition models."""

from __future__ import annotations

import copy
import datetime as dt

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.report import build_report, partition_suites_md
from analysis.tables import load, paired_differences, partition_suites, table_i
from pp_cluster import pipeline
from pp_cluster.config import AttackSpec, ModelSpec, SpecError, SweepSpec, content_id
from pp_cluster.data import load_dataset
from pp_cluster.data.base import Split
from pp_cluster.nets import activation_shape, split
from pp_cluster.privacy.defense import TrainConfig, train_defended
from pp_cluster.privacy.metrics import distance
from pp_cluster.results import rows
from pp_cluster.results.store import ResultStore, provenance

ARCH = {"widths": (4, 8, 8, 8), "fc": 16}
LAM, LR = 0.5, 0.05


@pytest.fixture(scope="module")
def faces():
    return load_dataset("lfw-subset", None, size=16)


def _spec(partition=None, suite=(), lam=LAM, defenders=("deconv",), seed=0, **kw) -> ModelSpec:
    return ModelSpec(
        dataset="lfw-subset",
        arch="face_cnn",
        partition=partition,
        lam=lam,
        defenders=defenders,
        distance="ssim",
        seed=seed,
        epochs=1,
        batch_size=32,
        arch_options={**ARCH, "dropout": 0.0},
        partition_suite=suite,
        **kw,
    )


def _sweep(tmp_path, **kw) -> SweepSpec:
    base = dict(
        name="suites",
        dataset="lfw-subset",
        arch="face_cnn",
        arch_options=ARCH,
        partitions=("pool1",),
        partition_suites=(("pool1", "pool2"),),
        lams=(0.0, 1.0),
        attackers=("fc",),
        results=str(tmp_path / "res"),
    )
    return SweepSpec(**{**base, **kw})


# -- training --------------------------------------------------------------------------------


def test_each_partition_has_its_own_defenders_on_its_own_activation(faces):
    model = pipeline.build_model(_spec(suite=("pool1", "pool2"), defenders=("deconv", "fc")), faces)
    assert model.defended_at == ["pool1", "pool1", "pool2", "pool2"]
    assert [n for n, _ in model.local.named_children()] == ["pool1", "pool2"]  # cut at the deepest
    x = faces.train.x[:4]
    h = {p: split(model.net, p)[0](x) for p in ("pool1", "pool2")}
    assert h["pool1"].shape[1:] != h["pool2"].shape[1:]
    for defender, p in zip(model.defenders, model.defended_at):
        assert tuple(h[p].shape[1:]) == activation_shape(model.net, p)
        assert defender(h[p]).shape == x.shape  # built for its partition's activation...
        other = "pool2" if p == "pool1" else "pool1"
        with pytest.raises(RuntimeError):
            defender(h[other])  # ...and not the other's

    _, result = pipeline.train_model(_spec(suite=("pool1", "pool2"), defenders=("deconv", "fc")), faces)
    assert result.status == "ok"
    counts = result.epochs[0]["best_defender_counts"]
    batches = 5  # 160 images, batches of 32
    # each partition picks its own best defender every batch
    assert len(counts) == 4 and sum(counts[:2]) == batches and sum(counts[2:]) == batches


@pytest.mark.parametrize("update", ["alternating", "simultaneous"])
def test_the_suite_loss_pushes_every_partitions_best_defender_away(faces, update):
    """One SGD step of the suite pool1+pool2 against one of the model defended at pool1 alone,
    from the same weights: their pool1 defenders are the same, so the steps differ by exactly
    the pool2 term, lr·λ·∇d(x, D_pool2(h_pool2)), on the stages before pool2 and by nothing on
    the remote ones. D_pool2 is the defender after its own step 1 (the paper's order) or before
    it (simultaneous)."""
    x, y = faces.train.x[:16], faces.train.y[:16]
    cfg = TrainConfig(
        lam=LAM,
        epochs=1,
        batch_size=16,
        optimizer="sgd",
        lr=LR,
        amp=False,
        channels_last=False,
        update=update,
    )
    runs = {}
    for name, spec in (("single", _spec("pool1")), ("suite", _spec(suite=("pool1", "pool2")))):
        model = pipeline.build_model(spec, faces)
        before = copy.deepcopy(model.net.state_dict())
        d2_before = copy.deepcopy(model.defenders[-1])
        result = train_defended(
            model.net,
            model.local,
            model.remote,
            model.defenders,
            Split(x, y),
            Split(x, y),
            faces.value_range,
            cfg,
            defended_at=model.defended_at,
        )
        assert result.status == "ok" and len(result.epochs) == 1
        after = model.net.state_dict()
        runs[name] = (
            model,
            before,
            d2_before,
            {k: after[k] - before[k] for k, _ in model.net.named_parameters()},
        )
    single, suite = runs["single"], runs["suite"]
    assert all(torch.equal(single[1][k], suite[1][k]) for k in single[1])  # the same start

    # ∇_θ d(x, D_pool2(h_pool2)) at the starting weights, by hand
    net = copy.deepcopy(suite[0].net)
    net.load_state_dict(suite[1])
    net.train()
    defender = suite[0].defenders[-1] if update == "alternating" else suite[2]
    local2, _ = split(net, "pool2")
    d2 = distance("ssim", x, defender(local2(x)), faces.value_range)
    params = dict(net.named_parameters())
    grads = dict(zip(params, torch.autograd.grad(d2, list(params.values()), allow_unused=True)))

    for k in params:
        diff = suite[3][k] - single[3][k]
        if k.startswith(("stages.pool1.", "stages.pool2.")):
            torch.testing.assert_close(diff, LR * LAM * grads[k], rtol=1e-3, atol=1e-6)
        else:
            assert grads[k] is None
            torch.testing.assert_close(diff, torch.zeros_like(diff), rtol=0, atol=1e-6)
    # and the pool2 term is not vanishingly small: the comparison above could fail
    for stage in ("pool1", "pool2"):
        push = torch.cat([g.flatten() for k, g in grads.items() if k.startswith(f"stages.{stage}.")])
        assert LR * LAM * push.abs().max() > 1e-4


def test_a_suite_history_reports_the_mean_of_its_partitions_distances(faces):
    cfg = TrainConfig(
        lam=LAM, epochs=1, batch_size=160, optimizer="sgd", lr=LR, amp=False, channels_last=False
    )
    model = pipeline.build_model(_spec(suite=("pool1", "pool2")), faces)
    result = train_defended(
        model.net,
        model.local,
        model.remote,
        model.defenders,
        faces.train,
        faces.test,
        faces.value_range,
        cfg,
        defended_at=model.defended_at,
    )
    # one batch: the row's distance is that batch's; recompute it from the trained defenders at
    # the weights the batch saw (the net moved after): the mean of the two partitions' distances
    assert result.status == "ok"
    fresh = pipeline.build_model(_spec(suite=("pool1", "pool2")), faces)
    fresh.net.train()
    d = []
    with torch.no_grad():
        for defender, p in zip(model.defenders, model.defended_at):
            local, _ = split(fresh.net, p)
            d.append(
                float(distance("ssim", faces.train.x, defender(local(faces.train.x)), faces.value_range))
            )
    assert result.epochs[0]["distance"] == pytest.approx(sum(d) / 2, rel=1e-4)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"defended_at": ["pool1"]}, "names 1 partitions for 2 defenders"),
        ({"defended_at": ["pool1", "pool9"]}, r"\['pool9'\] are not stages"),
        ({"defended_at": ["pool2", "pool1"]}, "in stage order"),
        ({"defense": "nopeek"}, "defense 'partition', not 'nopeek'"),
    ],
)
def test_train_defended_refuses_a_suite_it_cannot_train(faces, change, message):
    model = pipeline.build_model(_spec(suite=("pool1", "pool2")), faces)
    cfg = TrainConfig(lam=LAM, epochs=1, defense=change.get("defense", "partition"))
    defended_at = change.get("defended_at", model.defended_at)
    defenders = [] if "defense" in change else model.defenders
    with pytest.raises(ValueError, match=message):
        train_defended(
            model.net,
            model.local,
            model.remote,
            defenders,
            faces.train,
            faces.test,
            faces.value_range,
            cfg,
            defended_at=defended_at,
        )


# -- the spec ---------------------------------------------------------------------------------


def test_single_partition_ids_are_those_computed_before_suites():
    """Ids (and so file names) of models without a suite are what they were: the spec's fields
    of before, hashed the old way; the values were computed by the code before suites."""
    single = ModelSpec(
        dataset="lfw-subset",
        arch="face_cnn",
        partition="pool1",
        lam=1.0,
        defenders=("deconv",),
        distance="ssim",
        seed=0,
        epochs=1,
        batch_size=32,
    )
    assert single.model_id("tiny") == "850d25e9e9a294f1"
    old_fields = single.to_dict()
    del old_fields["data_root"], old_fields["partition_suite"]
    assert single.model_id("tiny") == content_id("model", "tiny", old_fields)
    sweep = SweepSpec(
        name="ids",
        dataset="lfw-subset",
        arch="face_cnn",
        partitions=("pool1", "pool2"),
        lams=(0.0, 1.0),
        seeds=(0, 1),
        attackers=("fc",),
    )
    ids = sorted(sweep.point_spec(p).model_id("ids") for p in sweep.grid_points())
    assert ids == [
        "1a1e474dfa1fc234",
        "4655bffaaa08d3f6",
        "51664b85ad57ae3c",
        "5ec70cc71c998a6c",
        "7daf5a777bd96b8d",
        "deedfed3ded3c7ff",
    ]
    assert all("partition_suite" not in p for p in sweep.grid_points())  # Tune's configs too
    assert ModelSpec.from_dict(single.to_dict()).model_id("tiny") == "850d25e9e9a294f1"
    suite = ModelSpec.from_dict(
        {**single.to_dict(), "partition": None, "partition_suite": ["pool1", "pool2"]}
    )
    assert suite.partition_suite == ("pool1", "pool2") and ModelSpec.from_dict(suite.to_dict()) == suite
    assert suite.model_id("tiny") != single.model_id("tiny")


def test_a_suite_is_one_model_per_defended_setting_attacked_at_each_of_its_partitions(tmp_path):
    sweep = _sweep(
        tmp_path, partition_suites=(("pool1", "pool2"), ("pool1", "pool3")), seeds=(0, 1)
    ).validate()
    points = sweep.grid_points()
    suites = [p for p in points if "partition_suite" in p]
    assert len(points) == 2 + 2 + 4  # λ = 0 and pool1 per seed, each suite per seed
    assert {tuple(p["partition_suite"]) for p in suites} == {("pool1", "pool2"), ("pool1", "pool3")}
    assert all(p["lam"] == 1.0 and p["partition"] is None for p in suites)  # no suite at λ = 0
    # seed-major; within a seed, a defender at each of two partitions: the longest trials first
    assert [p["seed"] for p in points] == [0] * 4 + [1] * 4
    assert points[:2] == suites[:2] and points[4:6] == suites[2:]
    specs = {tuple(p.get("partition_suite", ())) or p["partition"]: sweep.point_spec(p) for p in points}
    assert sweep.attack_partitions(specs[("pool1", "pool3")]) == ("pool1", "pool3")
    assert sweep.attack_partitions(specs["pool1"]) == ("pool1",)
    # the undefended model is attacked at every partition of the grid, the suites' too
    assert sweep.attack_partitions(specs[None]) == ("pool1", "pool2", "pool3")
    assert len(specs[("pool1", "pool2")].defenders) == 1  # one defender suite, at each partition


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"partition_suites": (("pool1",),)}, "two or more partitions"),
        ({"partition_suites": (("pool1", "pool1"),)}, "repeats within the suite"),
        ({"partition_suites": (("pool1", "pool2"), ("pool1", "pool2"))}, "suites repeat"),
        ({"partition_suites": (("pool2", "pool1"),)}, r"network's order \(pool1\+pool2\)"),
        ({"partition_suites": (("pool1", "pool9"),)}, "'pool9' not a split point of face_cnn"),
        ({"partition_suites": "pool1+pool2"}, "a tuple of suites"),
        ({"lams": (0.0,)}, "a λ = 0 model is undefended and has no suite"),
        ({"defense": "nopeek"}, "defense 'partition', not 'nopeek'"),
        ({"search": "optuna", "lam_range": (0.1, 1.0)}, "on a grid"),
    ],
)
def test_a_bad_partition_suite_is_a_spec_error_naming_it(tmp_path, change, message):
    with pytest.raises(SpecError, match=rf"SweepSpec\.partition_suites: .*{message}"):
        _sweep(tmp_path, **change).validate()


def test_the_cli_flag_sets_the_suites(tmp_path):
    import argparse

    from pp_cluster.cli import add_sweep_args, spec_from_args

    parser = argparse.ArgumentParser()
    add_sweep_args(parser)
    args = parser.parse_args(["--quick", "--partition-suites", "pool1+pool2, pool1+pool3"])
    spec = spec_from_args(args, "lfw_grid")
    assert spec.partition_suites == (("pool1", "pool2"), ("pool1", "pool3"))


# -- rows and the report ----------------------------------------------------------------------

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
# (name, partition, suite, λ, seed, test acc, {partition attacked: worst-case SSIM})
MODELS = [
    ("U0", None, (), 0.0, 0, 0.90, {"pool1": 0.80, "pool2": 0.60}),
    ("U1", None, (), 0.0, 1, 0.92, {"pool1": 0.82, "pool2": 0.62}),
    ("P0", "pool1", (), 1.0, 0, 0.86, {"pool1": 0.70}),
    ("P1", "pool1", (), 1.0, 1, 0.84, {"pool1": 0.74}),
    ("P2", "pool1", (), 1.0, 2, 0.50, {"pool1": 0.10}),  # no suite model of seed 2: left out
    ("Q0", "pool1", (), 2.0, 0, 0.80, {"pool1": 0.50}),  # another λ: not compared
    ("S0", None, ("pool1", "pool2"), 1.0, 0, 0.82, {"pool1": 0.66, "pool2": 0.40}),
    ("S1", None, ("pool1", "pool2"), 1.0, 1, 0.80, {"pool1": 0.68, "pool2": 0.44}),
]


def _write_results(root: str) -> dict[str, str]:
    """The models and attacks rows of MODELS, written with the farm's own row builders."""
    store, prov, ids = ResultStore(root), provenance(), {}
    sweep = SweepSpec(name="s", dataset="lfw-subset", arch="face_cnn", partitions=("pool1",))
    for name, partition, suite, lam, seed, acc, worst in MODELS:
        spec = sweep.model_spec(partition, lam, seed, partition_suite=suite)
        model_id = ids[name] = spec.model_id("s")
        base = rows.model_base("s", spec, model_id, trial_id=name, lr=0.01, started=NOW, prov=prov)
        final = {
            "test_acc": acc,
            "train_acc": acc,
            "n_test": 40,
            "final_task_loss": 0.3,
            "final_distance": None,
            "status": "ok",
            "diverged_epoch": None,
            "train_seconds": 1.0,
        }
        store.write("models", "s", model_id, [rows.model_row(base, final)])
        for p, ssim in worst.items():
            attack_id = AttackSpec("fc").attack_id(model_id, p)
            result = {
                "attacker": "fc",
                "partition": p,
                "ssim": ssim,
                "mse": 1 - ssim,
                "ssim_images": list(np.full(10, ssim)),
                "mse_images": list(np.full(10, 1 - ssim)),
                "n_eval": 10,
            }
            store.write(
                "attacks",
                "s",
                attack_id,
                [rows.attack_row(result, sweep="s", model_id=model_id, attack_id=attack_id, prov=prov)],
            )
    return ids


def test_suite_models_are_compared_with_single_partition_ones_over_the_same_seeds(tmp_path):
    ids = _write_results(str(tmp_path / "r"))
    res = load(str(tmp_path / "r"))
    models = res.models.set_index("model_id")
    assert models.loc[ids["S0"], "partition_suite"] == "pool1+pool2" and pd.isna(
        models.loc[ids["S0"], "partition"]
    )
    assert models["partition_suite"].isna().sum() == 6

    t = partition_suites(res).set_index("partition")
    assert list(t.index) == ["pool1", "pool2"] and (t["partition_suite"] == "pool1+pool2").all()
    assert list(t["seeds"]) == ["0,1", "0,1"]
    pool1, pool2 = t.loc["pool1"], t.loc["pool2"]
    assert pool1["suite_ssim_mean"] == pytest.approx(0.67) and pool1["single_ssim_mean"] == pytest.approx(
        0.72
    )
    assert pool1["suite_test_acc_mean"] == pytest.approx(0.81) and pool1[
        "single_test_acc_mean"
    ] == pytest.approx(0.85)
    assert pool1["suite_ssim_ci_method"] == pool1["single_ssim_ci_method"] == "t"
    assert pool1["suite_ssim_ci_lo"] < 0.67 < pool1["suite_ssim_ci_hi"]
    assert pool2["suite_ssim_mean"] == pytest.approx(0.42) and pool2["suite_ssim_n"] == 2
    assert pd.isna(pool2["single_ssim_mean"])  # nothing was defended at pool2 alone
    md = partition_suites_md(t.reset_index())
    assert "| pool1+pool2 | pool1 | λ=1 (deconv) | 0.670 [" in md and "| – |" in md

    # The single-partition tables leave the suite models out: pool1 at λ = 1 pairs seeds 0 and 1
    # (its own models), no defended row at pool2, and Table I's pool1 accuracy is the singles'.
    diff = paired_differences(res)
    acc = diff[(diff["metric"] == "test_acc") & (diff["lam"] == 1.0)]
    assert list(acc["partition"]) == ["pool1"] and acc["n_pairs"].item() == 2
    assert acc["defended"].item() == pytest.approx(0.85)
    t1 = table_i(res)
    assert t1.loc[
        (t1["partition"] == "pool1") & (t1["lam"] == 1.0), "test_acc_mean"
    ].unique() == pytest.approx([(0.86 + 0.84 + 0.50) / 3])
    assert (t1.loc[t1["partition"] == "pool2", "lam"] == 0.0).all()

    text = build_report(str(tmp_path / "r"), tmp_path / "out").read_text()
    assert "\n## Partition suites" in text and (tmp_path / "out" / "partition_suites.csv").exists()
