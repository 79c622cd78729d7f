"""Invalid specs and bad data paths fail before Ray starts, naming the bad field."""

from __future__ import annotations

import pytest

from pp_cluster.cli import main
from pp_cluster.config import Resources, SpecError


@pytest.fixture
def no_ray(monkeypatch):
    import ray

    def refuse(*a, **k):
        raise AssertionError("Ray was started for an invalid spec")

    monkeypatch.setattr(ray, "init", refuse)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"partitions": ("pool9",)}, "partitions"),
        ({"lams": (-0.1,)}, "lams"),
        ({"lams": (float("nan"),)}, "lams"),
        ({"attackers": ("deconv", "telepathy")}, "attackers"),
        ({"seeds": ()}, "seeds"),
        ({"epochs": 0}, "epochs"),
        ({"defender_suites": (("nope",),)}, "defender_suites"),
        ({"defender_suites": ((),)}, "defender_suites"),
        ({"dataset": "imagenet"}, "dataset"),
        ({"arch": "resnet"}, "arch"),
        ({"attacker_fraction": 0.0}, "attacker_fraction"),
        ({"search": "optuna", "lam_range": None}, "lam_range"),
        ({"search": "random"}, "search"),
        ({"name": "a+b"}, "name"),
        ({"defense": "blur"}, "defense"),
        ({"finetune_epochs": -1}, "finetune_epochs"),
        ({"attributes": True}, "attributes"),  # lfw-subset has no gender lists
        ({"dp_epsilons": (0.0,)}, "dp_epsilons"),
        ({"dp_epsilons": (1.0,), "lams": (1.0,)}, "dp_epsilons"),  # no undefended model to pixelate for
        ({"dp_cell": 0}, "dp_cell"),
        ({"train_overrides": {"update": "interleaved"}}, "train_overrides"),
        ({"train_overrides": {"learning_rate": 0.1}}, "train_overrides"),
        (
            {"train_overrides": {"epochs": 3}},
            "train_overrides",
        ),  # the sweep owns it: never silently overwritten
        ({"train_overrides": {"lam": 3.0}}, "train_overrides"),
        ({"resources": Resources(checkpoint_interval_s=-1.0)}, r"resources\.checkpoint_interval_s"),
    ],
)
def test_invalid_spec_names_the_field(tiny_sweep, tmp_path, no_ray, changes, field):
    with pytest.raises(SpecError, match=rf"SweepSpec\.{field}"):
        tiny_sweep(tmp_path, **changes).validate()


def test_unwritable_results_root(tiny_sweep, tmp_path, no_ray):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(SpecError, match=r"SweepSpec\.results"):
        tiny_sweep(blocker / "results").validate()


def test_bad_data_path_fails_before_ray(tiny_sweep, tmp_path, no_ray, capsys):
    rc = main(
        ["sweep", "lfw_grid", "--data-root", str(tmp_path / "missing"), "--results", str(tmp_path / "r")]
    )
    assert rc == 2
    assert str(tmp_path / "missing") in capsys.readouterr().err


def test_cli_flags_reach_the_spec(tiny_sweep, tmp_path, no_ray, capsys):
    rc = main(["sweep", "lfw_grid", "--quick", "--partitions", "pool7", "--results", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "SweepSpec.partitions" in err and "pool7" in err


def test_cli_defense_and_evaluation_flags_reach_the_spec(tmp_path):
    import argparse

    from pp_cluster.cli import add_sweep_args, spec_from_args

    p = argparse.ArgumentParser()
    add_sweep_args(p)
    args = p.parse_args(
        [
            "--defense",
            "nopeek",
            "--finetune-epochs",
            "3",
            "--dp-epsilons",
            "0.5,inf",
            "--dp-cell",
            "4",
            "--dp-m",
            "2",
            "--attributes",
            "--data-root",
            str(tmp_path),
            "--update",
            "simultaneous",
            "--lr",
            "0.05",
            "--checkpoint-interval",
            "0",
        ]
    )
    spec = spec_from_args(args, "lfw_grid")
    assert (spec.defense, spec.finetune_epochs, spec.dp_epsilons) == ("nopeek", 3, (0.5, float("inf")))
    assert (spec.dp_cell, spec.dp_neighbourhood, spec.attributes) == (4, 2, True)
    assert dict(spec.train_overrides) == {"update": "simultaneous", "lr": 0.05}
    assert spec.resources.checkpoint_interval_s == 0
    # The gender classifier needs the people outside the model's identities.
    assert spec.dataset == "lfw" and spec.dataset_options["disjoint"] is True
    model = spec.model_spec("pool2", 0.1, 0)
    assert (model.defense, model.defenders, model.finetune_epochs) == ("nopeek", (), 3)
    assert spec.model_spec("pool2", 0.0, 0).defense == "none"


def test_grid_is_seed_major_and_starts_each_seeds_most_defended_models_first(tiny_sweep, tmp_path):
    spec = tiny_sweep(
        tmp_path,
        partitions=("pool1", "pool2"),
        lams=(0.0, 1.0),
        seeds=(0, 1),
        defender_suites=(("deconv",), ("deconv", "fc")),
    )
    points = spec.grid_points()
    # λ=1 × 2 suites per partition and seed; λ=0 once per seed, whatever the partitions
    assert len(points) == 2 * 2 * 2 + 2
    assert len({spec.model_spec(**p).model_id(spec.name) for p in points}) == len(points)
    # Seed-major: all of seed 0 (its undefended twin included) before any of seed 1, so a
    # sweep stopped after the first half holds one complete seed.
    seeds = [p["seed"] for p in points]
    assert seeds == [0] * 5 + [1] * 5
    for half in (points[:5], points[5:]):
        n_defenders = [len(spec.model_spec(**p).defenders) for p in half]
        assert n_defenders == [2, 2, 1, 1, 0]  # within a seed: the longest first
        # within equal cost the order stays the sweep's own (partition, then λ)
        assert [p["partition"] for p in half] == ["pool1", "pool2", "pool1", "pool2", None]


def test_grid_order_follows_the_sweeps_seed_order(tiny_sweep, tmp_path):
    spec = tiny_sweep(tmp_path, partitions=("pool1",), lams=(0.0, 1.0), seeds=(7, 3))
    assert [(p["seed"], p["lam"]) for p in spec.grid_points()] == [(7, 1.0), (7, 0.0), (3, 1.0), (3, 0.0)]


def test_profiles_and_recipe_flags(tmp_path):
    import argparse

    from pp_cluster.cli import add_sweep_args, spec_from_args
    from pp_cluster.config import SpecError
    from pp_cluster.privacy import recipe

    p = argparse.ArgumentParser()
    add_sweep_args(p)
    cpu = spec_from_args(p.parse_args(["--profile", "cpu", "--data-root", str(tmp_path)]), "lfw_grid")
    assert (cpu.recipe, cpu.dataset, cpu.seeds, cpu.attributes) == ("fast", "lfw", (0, 1, 2), True)
    assert "mean_image" in cpu.attackers and "resdec" in cpu.attackers
    assert cpu.model_spec("pool1", 1.0, 0).recipe == "fast"
    with pytest.raises(SpecError, match="--data-root"):
        spec_from_args(p.parse_args(["--profile", "cpu"]), "lfw_grid")
    with pytest.raises(SpecError, match="contradict"):
        spec_from_args(p.parse_args(["--profile", "cpu", "--quick"]), "lfw_grid")
    assert spec_from_args(p.parse_args(["--quick", "--recipe", "paper"]), "lfw_grid").recipe == "paper"
    # Every driver has a real-data cpu profile, and each refuses to start without --data-root.
    for driver, dataset in (("mnist_table1", "mnist"), ("mnist_table2", "mnist"), ("cifar_vgg", "cifar10")):
        with pytest.raises(SpecError, match="--data-root"):
            spec_from_args(p.parse_args(["--profile", "cpu"]), driver)
        spec = spec_from_args(p.parse_args(["--profile", "cpu", "--data-root", str(tmp_path)]), driver)
        assert (spec.recipe, spec.dataset, spec.name) == ("fast", dataset, f"{driver}_cpu")
        assert len(spec.seeds) >= 2 and "mean_image" in spec.attackers
        # a cpu profile trains at its recipe's batch size
        assert spec.model_spec(None, 0.0, 0).batch_size == recipe(spec.dataset, spec.recipe).batch_size, (
            driver
        )
    # strong: the cpu profile's models at pool3, against the white-box and tuned attackers
    with pytest.raises(SpecError, match="--data-root"):
        spec_from_args(p.parse_args(["--profile", "strong"]), "lfw_grid")
    strong = spec_from_args(p.parse_args(["--profile", "strong", "--data-root", str(tmp_path)]), "lfw_grid")
    cpu = spec_from_args(p.parse_args(["--profile", "cpu", "--data-root", str(tmp_path)]), "lfw_grid")
    assert strong.partitions == ("pool3",) and strong.name == "lfw_grid_strong"
    for lam in cpu.lams:  # the same training as the reference's models, seed for seed
        for seed in cpu.seeds:
            assert strong.model_spec("pool3", lam, seed) == cpu.model_spec("pool3", lam, seed)
    plan = [(a.attacker, a.tune_trials) for a in strong.attack_specs()]
    assert ("rmle", 0) in plan and ("deconv", 3) in plan and ("resdec", 3) in plan
    assert not any(t for a, t in plan if a in ("rmle", "mean_image"))  # neither trains: nothing to tune
    with pytest.raises(SpecError, match="mnist_table1 has the profiles"):
        spec_from_args(p.parse_args(["--profile", "strong"]), "mnist_table1")
    table2 = spec_from_args(p.parse_args(["--profile", "cpu", "--data-root", str(tmp_path)]), "mnist_table2")
    assert len(table2.defender_suites) == 2 and table2.lams == (0.0, 1.0)
    # ranked: Table II's single-defender models, and the suite the paper's rule picks from our
    # Table I; the same sweep as the flags the reference run was started with
    from pp_cluster.farm.manifest import identity

    ranked = spec_from_args(
        p.parse_args(["--profile", "ranked", "--data-root", str(tmp_path)]), "mnist_table2"
    )
    flags = "--lams 1 --defenders mnist_a1;mnist_a6,mnist_a1,mnist_a2,mnist_a5 --name mnist_table2_ranked_cpu"
    by_flags = spec_from_args(
        p.parse_args(
            ["--profile", "cpu", "--data-root", str(tmp_path), *flags.split(), "--seeds", "0,1,2,3,4"]
        ),
        "mnist_table2",
    )
    assert identity(ranked) == identity(by_flags) and ranked.name == "mnist_table2_ranked_cpu"
    assert ranked.model_spec("fc2", 1.0, 0) == table2.model_spec("fc2", 1.0, 0)  # the single defender
    assert ranked.defender_suites[1] == ("mnist_a6", "mnist_a1", "mnist_a2", "mnist_a5")
    # run in two parts (seeds 0-2, then --seeds 3,4): the same models as the five-seed profile
    parts = [
        spec_from_args(
            p.parse_args(["--profile", "ranked", "--data-root", str(tmp_path), "--seeds", seeds]),
            "mnist_table2",
        )
        for seeds in ("0,1,2", "3,4")
    ]

    def ids(spec):
        return {spec.point_spec(q).model_id(spec.name) for q in spec.grid_points()}

    assert ids(parts[0]) | ids(parts[1]) == ids(ranked) and len(ids(ranked)) == 10


def test_a_sweep_trains_at_its_recipes_batch_size_unless_it_sets_one(tmp_path):
    from pp_cluster.farm.manifest import identity
    from pp_cluster.profiles import MNIST_TABLE1

    # The paper's MNIST recipe trains at batch 32, the fast one at 128: a profile derived with
    # another recipe follows it, not the batch of the profile it came from.
    assert MNIST_TABLE1.batch_size is None and MNIST_TABLE1.model_spec(None, 0.0, 0).batch_size == 32
    fast = MNIST_TABLE1.with_(recipe="fast")
    assert fast.model_spec("fc2", 1.0, 0).batch_size == 128 == fast.resolved_batch_size()
    assert identity(fast)["batch_size"] == 128  # the manifest records the number it trains at
    # a number of its own overrides the recipe's, for every model of the sweep
    own = fast.with_(batch_size=64)
    assert own.model_spec(None, 0.0, 1).batch_size == 64 and identity(own)["batch_size"] == 64
    # the same training, whether the batch is the recipe's or given as the same number
    assert fast.with_(batch_size=128).model_spec("fc2", 1.0, 0).model_id("s") == fast.model_spec(
        "fc2", 1.0, 0
    ).model_id("s")
    for bad in (0, -1, 2.5):
        with pytest.raises(SpecError, match="batch_size"):
            fast.with_(batch_size=bad).validate()


def test_mean_image_is_an_attacker_only(tiny_sweep, tmp_path):
    from pp_cluster.config import SpecError

    tiny_sweep(tmp_path, attackers=("fc", "mean_image")).validate()
    with pytest.raises(SpecError, match="baseline"):
        tiny_sweep(tmp_path, defender_suites=(("mean_image",),)).validate()


def test_negative_seeds_and_a_missing_status_root_are_errors(tiny_sweep, tmp_path, capsys):
    from pp_cluster.cli import main
    from pp_cluster.config import SpecError

    with pytest.raises(SpecError, match="SweepSpec.seeds"):
        tiny_sweep(tmp_path, seeds=(0, -1)).validate()
    assert main(["status", str(tmp_path / "nonexistent")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_gpu_shares_and_a_file_as_data_root_are_refused_before_ray(tiny_sweep, tmp_path, no_ray, capsys):
    base = ["sweep", "lfw_grid", "--quick", "--results", str(tmp_path / "r")]
    # A GPU share without GPU training would be silently ignored.
    assert main(base + ["--gpus-per-trial", "5"]) == 2
    assert "--gpus-per-trial applies to GPU training only: add --gpu" in capsys.readouterr().err
    # Ray gives fractions of one GPU or whole GPUs.
    with pytest.raises(SpecError, match=r"SweepSpec\.resources\.gpus_per_trial"):
        tiny_sweep(tmp_path, resources=Resources(gpus_per_trial=1.5)).validate()
    # More GPU than this machine has (none here, or fewer than 5): refused naming the flag.
    assert main(base + ["--gpu", "--gpus-per-trial", "5"]) == 2
    err = capsys.readouterr().err
    assert "--gpus-per-trial" in err and "GPU" in err
    # A file where a folder belongs is named as such, not as missing.
    a_file = tmp_path / "lfw.tgz"
    a_file.write_bytes(b"not a folder")
    assert main(["sweep", "lfw_grid", "--data-root", str(a_file), "--results", str(tmp_path / "r2")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert not [f for f in (tmp_path / "r2").rglob("*") if f.is_file()]  # nothing written for a bad input
