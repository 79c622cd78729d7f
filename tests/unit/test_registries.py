"""The registries (issue 16, "Open registries"): the README's "Extending" module registers one
network, decoder, data set, defense and distance from outside the package; every name is then
valid wherever a built-in's is (live views, validation, the CLI), and each one works. Plugin
modules that fail are SpecErrors naming them; what reaches Ray's workers is a plain dict."""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pp_cluster.config import AttackSpec, ModelSpec, SpecError, SweepSpec
from pp_cluster.data import DATASET_REGISTRY, DATASETS, EMBEDDED, load_dataset
from pp_cluster.nets import (
    ARCHS,
    DECODER_REGISTRY,
    DECODERS,
    NET_REGISTRY,
    build_decoder,
    build_net,
    register_net,
    split,
)
from pp_cluster.plugins import PLUGINS_ENV, Names, Registry, runtime_env, setup_worker
from pp_cluster.privacy.metrics import DISTANCE_REGISTRY, DISTANCES, distance_per_sample
from pp_cluster.privacy.recipes import RECIPES, recipe
from pp_cluster.privacy.steps import DEFENSE_REGISTRY, DEFENSES, STEPS

README = Path(__file__).resolve().parents[2] / "README.md"
REGISTRIES = (NET_REGISTRY, DECODER_REGISTRY, DATASET_REGISTRY, DEFENSE_REGISTRY, DISTANCE_REGISTRY)


def readme_blocks(lang: str) -> list[str]:
    section = README.read_text().split("## Extending", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{lang}\n(.*?)```", section, re.S)


def readme_plugin() -> str:
    """The README's my_plugins.py: its python blocks that start with that file name."""
    return "\n".join(b for b in readme_blocks("python") if b.startswith("# my_plugins.py"))


@pytest.fixture
def my_plugins(tmp_path, monkeypatch):
    """The README's module in a folder outside the package, on sys.path; on the way out every
    name it registered is unregistered, so no other test sees it."""
    before = {id(r): set(r) for r in REGISTRIES}
    (tmp_path / "my_plugins.py").write_text(readme_plugin())
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path / "my_plugins.py"
    for r in REGISTRIES:
        for name in set(r) - before[id(r)]:
            r.unregister(name)
    RECIPES.pop("stripes", None)
    sys.modules.pop("my_plugins", None)


def _stripes_sweep(tmp_path, **changes) -> SweepSpec:
    return SweepSpec(
        name="stripes",
        dataset="stripes",
        arch="tiny_cnn",
        partitions=("block1", "block2"),
        lams=(0.0, 1.0),
        defense="shrink",
        attackers=("upsampler", "mean_image"),
        epochs=1,
        results=str(tmp_path / "results"),
        plugins=("my_plugins",),
    ).with_(**changes)


def test_a_plugin_module_registers_one_of_each_and_the_views_see_it(my_plugins, tmp_path):
    names = {
        "tiny_cnn": ARCHS,
        "upsampler": DECODERS,
        "stripes": DATASETS,
        "shrink": DEFENSES,
        "l1": DISTANCES,
    }
    assert not any(name in view for name, view in names.items())
    assert DEFENSES == ("partition", "nopeek", "noise") and DISTANCES == ("ssim", "mse")
    _stripes_sweep(tmp_path).validate()  # imports my_plugins first
    assert all(name in view for name, view in names.items())  # the same objects, imported before
    assert "stripes" in EMBEDDED and ("shrink", "simultaneous") in STEPS
    assert DEFENSES == ("partition", "nopeek", "noise", "shrink") and DECODERS[-1].startswith("mnist_")
    with pytest.raises(ValueError, match="tiny_cnn"):
        build_net("no_such_arch", (1, 16, 16), 2)  # the error lists what is registered now


def test_every_readme_example_works_in_training_and_attack(my_plugins, tmp_path):
    from pp_cluster import pipeline

    _stripes_sweep(tmp_path).validate()
    ds = load_dataset("stripes", n=100)
    assert ds.train.x.shape == (80, 1, 16, 16) and ds.value_range == (0.0, 1.0) and ds.num_classes == 2
    assert recipe("stripes").optimizer == "adam"

    net = build_net("tiny_cnn", ds.image_shape, 2, width=4)
    assert net.partitions == ("block1", "block2")
    local, remote = split(net, "block2")
    x = ds.test.x[:5]
    assert torch.equal(remote(local(x)), net(x))
    for partition in net.partitions:
        rec = build_decoder("upsampler", net, partition, ds.value_range, width=8)(split(net, partition)[0](x))
        assert rec.shape == x.shape and 0 <= rec.min() and rec.max() <= 1

    d = distance_per_sample("l1", x, torch.zeros_like(x), ds.value_range)
    assert d.shape == (5,) and torch.allclose(d, x.flatten(1).mean(dim=1))

    base = ModelSpec(
        dataset="stripes",
        arch="tiny_cnn",
        partition="block1",
        lam=1.0,
        defenders=(),
        distance="ssim",
        seed=0,
        epochs=1,
        batch_size=32,
        defense="shrink",
        arch_options={"width": 4},
    )
    for spec in (base, replace(base, defense="partition", defenders=("upsampler",), distance="l1")):
        model, result = pipeline.train_model(spec, ds)
        assert result.status == "ok" and result.final_distance is not None and result.final_distance >= 0
    inputs = pipeline.attack_inputs(model.local, ds, "train", 1.0, seed=0)
    row, _ = pipeline.run_attack(
        AttackSpec("upsampler", epochs=1), model.net, spec, (ds.image_shape, 2, ds.value_range), inputs
    )
    assert row["attacker"] == "upsampler" and 0 <= row["mse"] <= 1 and "Upsample" in row["attacker_arch"]


def test_the_readme_sweeps_and_command_line_validate(my_plugins, tmp_path, monkeypatch):
    import pp_cluster.farm.sweep as farm_sweep
    from pp_cluster.cli import add_sweep_args, spec_from_args

    monkeypatch.chdir(tmp_path)
    ran = []
    monkeypatch.setattr(farm_sweep, "run_sweep", lambda spec: ran.append(spec.validate()))
    [run_block] = [b for b in readme_blocks("python") if "run_sweep(mine)" in b]
    exec(run_block, {})
    assert [(s.defense, s.distance, s.defender_suites) for s in ran] == [
        ("shrink", "ssim", (("deconv",),)),
        ("partition", "l1", (("upsampler",),)),
    ]

    [command] = [b for b in readme_blocks("bash") if "--plugins my_plugins" in b]
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[:3] == ["PYTHONPATH=.", "python", "sweeps/lfw_grid.py"]
    p = argparse.ArgumentParser()
    add_sweep_args(p)
    spec = spec_from_args(p.parse_args(argv[3:] + ["--results", str(tmp_path / "r")]), "lfw_grid").validate()
    assert spec.plugins == ("my_plugins",) and spec.defense == "shrink" and "upsampler" in spec.attackers


def test_a_plugin_that_cannot_be_imported_is_a_spec_error_before_ray(tmp_path, monkeypatch, capsys):
    from pp_cluster.cli import sweep_main

    spec = _stripes_sweep(tmp_path)
    with pytest.raises(
        SpecError,
        match=r"SweepSpec.plugins: plugin module 'no_such_plugin_zz' could not be "
        r"imported: ModuleNotFoundError.*PYTHONPATH",
    ):
        spec.with_(plugins=("no_such_plugin_zz",)).validate()
    (tmp_path / "broken_plugin_zz.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        SpecError, match="'broken_plugin_zz' could not be imported: RuntimeError: boom at import"
    ):
        spec.with_(plugins=("broken_plugin_zz",)).validate()
    with pytest.raises(SpecError, match="SweepSpec.plugins: a tuple of module names"):
        spec.with_(plugins="my_plugins").validate()

    import ray

    monkeypatch.setattr(
        ray, "init", lambda *a, **k: pytest.fail("Ray started before the plugins were checked")
    )
    rc = sweep_main(
        "lfw_grid", None, ["--quick", "--plugins", "no_such_plugin_zz", "--results", str(tmp_path / "r")]
    )
    assert rc == 2 and "SweepSpec.plugins: plugin module 'no_such_plugin_zz'" in capsys.readouterr().err


def test_registry_refuses_a_second_entry_under_a_name_and_bad_names():
    with pytest.raises(ValueError, match="network 'face_cnn' is already registered"):
        register_net("face_cnn", input_shape=(3, 64, 64))(lambda image_shape, num_classes: None)
    r: Registry[int] = Registry("thing")
    view = r.names(where=lambda v: v > 1, key=lambda n: -r[n])
    r.register("ab", 1)
    r.register("ba", 2)
    r.register("ca", 3)
    r.register("ca", 3)  # the same entry again (a module imported twice): no change
    assert view == ("ca", "ba") and view == Names(lambda: ["ca", "ba"]) and list(r) == ["ab", "ba", "ca"]
    for bad in ("", "a,b", "a;b", " a", 3):
        with pytest.raises(ValueError, match="a thing name is"):
            r.register(bad, 1)
    r.unregister("ca")
    assert view == ("ba",)


def test_runtime_env_ships_what_is_not_installed_and_the_hook_imports_it(my_plugins, tmp_path, monkeypatch):
    import importlib

    importlib.import_module("my_plugins")
    assert runtime_env(()) == {}
    assert runtime_env(("my_plugins", "json")) == {
        "env_vars": {PLUGINS_ENV: "my_plugins,json"},
        "worker_process_setup_hook": "pp_cluster.plugins.setup_worker",
        "py_modules": [str(my_plugins.resolve())],  # json is in the standard library: not shipped
    }
    pkg = tmp_path / "pkg_zz"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text("LOADED = True\n")
    monkeypatch.setenv(PLUGINS_ENV, "pkg_zz.models")
    setup_worker()  # what every Ray worker runs before its first task
    assert sys.modules["pkg_zz.models"].LOADED
    assert runtime_env(("pkg_zz.models",))["py_modules"] == [
        str(pkg.resolve())
    ]  # the whole top-level package
    for name in ("pkg_zz.models", "pkg_zz"):
        sys.modules.pop(name)
