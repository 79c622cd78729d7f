"""The command line without Ray: ``--help`` and ``--version`` import neither torch nor Ray,
``--help`` shows every profile as the flags that reproduce it, ``--dry-run`` validates, prints
the grid and its work and never imports Ray, and bad input exits 2 before Ray is imported.
(A run's other exit codes start a Ray cluster and are tested in tests/farm: success 0 and a
failed trial 1 in test_quiet.py, SIGINT 130 and SIGTERM 143 in test_resume.py, a missing data
root under a real run in test_spec.py.)"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

import pp_cluster
from pp_cluster.cli import (
    _NOT_PROFILE,
    _PROFILE_EXTRA_FLAGS,
    _PROFILE_FLAGS,
    _RESOURCE_FLAG_NAMES,
    add_sweep_args,
    profile_flags,
    spec_from_args,
)
from pp_cluster.config import SweepSpec
from pp_cluster.profiles import PROFILES

REPO = Path(__file__).resolve().parents[2]
DRIVERS = sorted(p.stem for p in (REPO / "sweeps").glob("*.py"))

# Runs a driver (a path) or pp-farm ("pp-farm", then its arguments) as its console command
# would, then says which of torch and ray the process imported.
RUN_AND_LIST_IMPORTS = """
import runpy, sys
argv = sys.argv[1:]
try:
    if argv[0] == "pp-farm":
        from pp_cluster.cli import main
        sys.argv = argv
        main(argv[1:])
    else:
        sys.argv = argv
        runpy.run_path(argv[0], run_name="__main__")
except SystemExit as e:
    assert e.code in (0, None), e.code
print("IMPORTED", sorted(m for m in ("torch", "ray") if m in sys.modules))
"""


def _run(args: list[str], env: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env
    )


@pytest.fixture(scope="module")
def no_ray_env(tmp_path_factory) -> dict:
    """An environment in which ``import ray`` raises (a ``ray`` package first on the path)."""
    shim = tmp_path_factory.mktemp("no_ray")
    (shim / "ray").mkdir()
    (shim / "ray" / "__init__.py").write_text("raise ImportError('this test blocks ray')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), str(REPO)])}
    blocked = _run(["-c", "import ray"], env)
    assert blocked.returncode != 0 and "this test blocks ray" in blocked.stderr  # the shim works
    return env


@pytest.mark.parametrize("command", [*(f"sweeps/{d}.py" for d in DRIVERS), "pp-farm", "pp-farm sweep"])
def test_help_and_version_import_neither_torch_nor_ray(command):
    for flag in ("--help", "--version"):
        if command == "pp-farm sweep" and flag == "--version":
            continue
        out = _run(["-c", RUN_AND_LIST_IMPORTS, *command.split(), flag])
        assert out.returncode == 0, out.stderr
        *text, imported = out.stdout.rstrip().splitlines()
        assert imported == "IMPORTED []", f"{command} {flag}: {imported}"
        text = "\n".join(text)
        if flag == "--version":
            assert text == f"pp_cluster {pp_cluster.__version__}"
            continue
        # Each driver's profiles (all of them for pp-farm sweep) with their budgets.
        shown = {Path(command).stem} if command.startswith("sweeps/") else set(PROFILES)
        if command == "pp-farm":
            assert "sweep" in text and "status" in text and "export" in text
            continue
        assert "--dry-run" in text
        for driver in shown:
            for name, spec in PROFILES[driver].items():
                assert f"{name}{' (the default)' if name == 'paper' else ''}: sweep {spec.name}," in text
                for flag, value in (("--epochs", spec.epochs), ("--attack-epochs", spec.attack_epochs)):
                    assert re.search(rf"{flag} {value}(\s|$)", text, re.M), (driver, name, flag)


@pytest.mark.parametrize("driver", sorted(PROFILES))
def test_the_flags_help_shows_reproduce_each_profile(driver):
    """The flags --help lists for a profile, given on top of the paper profile, make every field
    the flags own the profile's; any other field that differs is one --help notes."""
    p = argparse.ArgumentParser()
    add_sweep_args(p)
    for name, spec in PROFILES[driver].items():
        flags, notes = profile_flags(spec)
        args = p.parse_args(shlex.split(" ".join(flags)))
        got = spec_from_args(args, driver)
        for f, _ in (*_PROFILE_FLAGS, *_PROFILE_EXTRA_FLAGS):
            assert getattr(got, f) == getattr(spec, f), (name, f)
        for r in (*_RESOURCE_FLAG_NAMES, "use_gpu"):
            assert getattr(got.resources, r) == getattr(spec.resources, r), (name, r)
        noted = {n.split()[0].split(".")[0] for n in notes}
        differ = {f.name for f in fields(SweepSpec) if getattr(got, f.name) != getattr(spec, f.name)}
        assert differ <= set(_NOT_PROFILE) | noted, (name, differ - set(_NOT_PROFILE) - noted)
        if "resources" not in noted:
            assert got.resources == spec.resources
    # Not vacuous: the quick profiles differ from the paper ones in what the flags set.
    paper, quick = PROFILES[driver]["paper"], PROFILES[driver]["quick"]
    assert profile_flags(paper)[0] != profile_flags(quick)[0]


def _grid_rows(stdout: str) -> list[list[str]]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["partition", "λ"])
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def test_dry_run_of_a_driver_prints_the_grid_without_ray(no_ray_env, tmp_path):
    results = tmp_path / "results"
    out = _run(["sweeps/lfw_grid.py", "--quick", "--dry-run", "--results", str(results)], no_ray_env)
    assert out.returncode == 0, out.stderr
    # The quick LFW grid: 2 seeds × 3 partitions defended at λ = 3, plus one undefended model per
    # seed attacked at all 3 partitions: 12 (model, partition) pairs × 5 attackers.
    assert "grid: 8 models (6 defended, 2 undefended), attacked at 12 (model, partition) pairs" in out.stdout
    assert "by 5 attacks each: 60 attacks" in out.stdout
    rows = _grid_rows(out.stdout)
    assert len(rows) == 8
    defended = sorted((r[0], r[1], r[2], r[4], r[5], r[6]) for r in rows if r[0] != "-")
    assert defended == sorted(
        (p, "3", s, "deconv", p, "5") for p in ("pool1", "pool2", "pool3") for s in "01"
    )
    undefended = [r for r in rows if r[0] == "-"]
    assert sorted(r[2] for r in undefended) == ["0", "1"]
    assert all(
        r[1] == "0" and r[3] == "none" and r[5] == "pool1,pool2,pool3" and r[6] == "15" for r in undefended
    )
    # The resolved spec, the data set as loaded, the work as counts and no invented time.
    assert re.search(r"^  epochs +30$", out.stdout, re.M) and re.search(r"^  seeds +0,1$", out.stdout, re.M)
    assert "data: lfw-subset, 160 training and 40 test images (1×32×32, 2 classes)" in out.stdout
    assert "240 model-epochs = 38,400 training images" in out.stdout  # 8 models × 30 epochs × 160
    assert "48 decoders: 480 attacker-epochs" in out.stdout  # 12 pairs × 4 trained attackers × 10
    assert "no time estimate" in out.stdout
    assert not results.exists()


def test_dry_run_through_pp_farm_and_with_tuned_and_white_box_attackers(no_ray_env, tmp_path):
    argv = [
        "-m",
        "pp_cluster.cli",
        "sweep",
        "mnist_table1",
        "--quick",
        "--dry-run",
        "--results",
        str(tmp_path),
    ]
    argv += ["--attackers", "mnist_a1,rmle,mean_image", "--tune-attackers", "3", "--lams", "0,1"]
    out = _run(argv, no_ray_env)
    assert out.returncode == 0, out.stderr
    # 2 models at one partition; per pair: mnist_a1, rmle, mean_image and mnist_a1's tuned twin.
    assert "grid: 2 models (1 defended, 1 undefended), attacked at 2 (model, partition) pairs" in out.stdout
    assert "by 4 attacks each: 8 attacks" in out.stdout
    assert "2 tuned twins: each up to 3 candidates of 5-20 epochs" in out.stdout
    assert "2 inversions (rmle)" in out.stdout and "2 (mean_image): closed form" in out.stdout
    assert not list(tmp_path.iterdir())


def test_dry_run_refuses_bad_input_with_the_message_of_a_real_run(no_ray_env, tmp_path):
    argv = ["sweeps/lfw_grid.py", "--data-root", str(tmp_path / "missing"), "--results", str(tmp_path / "r")]
    dry = _run([*argv, "--dry-run"], no_ray_env)
    assert dry.returncode == 2, dry.stderr
    assert f"LFW folder {tmp_path / 'missing'} does not exist" in dry.stderr
    real = _run(argv)  # imports Ray, fails before starting it
    assert real.returncode == 2, real.stderr
    assert real.stderr.strip().splitlines()[-1] == dry.stderr.strip().splitlines()[-1]
    assert not [f for f in tmp_path.rglob("*") if f.is_file()]


BAD_INPUT = """
import contextlib, io, json, sys
from pp_cluster.cli import sweep_main
out = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            rc = sweep_main("lfw_grid", None, argv)
        except SystemExit as e:
            rc = e.code
    out.append([rc, err.getvalue().strip().splitlines()[-1]])
print(json.dumps(out))
"""


@pytest.mark.parametrize("dry", [False, True])
def test_bad_input_exits_2_before_ray_is_imported(no_ray_env, tmp_path, dry):
    cases = {
        "--profile bogus": "argument --profile: invalid choice: 'bogus'",
        "--lams x": "argument --lams: comma-separated numbers, e.g. 0,0.1; got 'x'",
        "--quick --lams=-1": "SweepSpec.lams: λ must be a finite number >= 0, got -1.0",
        "--quick --seeds 0,0": "SweepSpec.seeds: seeds repeat",
        "--profile cpu": "--profile cpu trains on real data: pass --data-root",
        "--quick --recipe bogus": "SweepSpec.recipe: 'bogus': data set 'lfw-subset' has the recipe(s) paper, fast",
        "--quick --update bogus": "choose from alternating, simultaneous, got 'bogus'",
        "--quick --partitions pool7": "SweepSpec.partitions: 'pool7' is not a split point of face_cnn",
        "--quick --callbacks tensorboard": "--callbacks tensorboard: the command line knows mlflow",
    }
    extra = ["--results", str(tmp_path / "r")] + (["--dry-run"] if dry else [])
    argvs = [shlex.split(case) + extra for case in cases]
    out = _run(["-c", BAD_INPUT, json.dumps(argvs)], no_ray_env)
    assert out.returncode == 0, out.stderr
    for (case, message), (rc, last_line) in zip(cases.items(), json.loads(out.stdout)):
        assert rc == 2, (case, rc, last_line)
        assert message in last_line, (case, last_line)
    assert not (tmp_path / "r").exists()


def test_the_report_on_a_missing_root_exits_2(tmp_path):
    out = _run(["-m", "analysis.report", str(tmp_path / "missing"), "--out", str(tmp_path / "report")])
    assert out.returncode == 2
    assert (
        out.stderr.strip() == f"analysis.report: error: results root '{tmp_path / 'missing'}' does not exist"
    )
    assert not (tmp_path / "report").exists()
