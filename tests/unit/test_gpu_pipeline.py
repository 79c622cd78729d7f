"""benchmarks/gpu_pipeline.py, the Ray-free GPU benchmark (issue 19): its ``--dry-run`` runs on
the CPU where Ray, Optuna and lpips cannot be imported (as on the GPU machine) and prints every
section and column; its budget and projection arithmetic."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_pipeline.py"
BLOCKED = ("ray", "optuna", "lpips")


def _blocking_env(tmp_path: Path) -> dict[str, str]:
    """The environment with a PYTHONPATH entry whose ray/optuna/lpips raise ImportError."""
    block = tmp_path / "blocked"
    for name in BLOCKED:
        (block / name).mkdir(parents=True)
        (block / name / "__init__.py").write_text('raise ImportError("blocked for this test")\n')
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(block), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_pipeline")
    env = _blocking_env(tmp)
    for name in BLOCKED:  # the blockers work: each import fails in a child with this environment
        probe = subprocess.run(
            [sys.executable, "-c", f"import {name}"], env=env, capture_output=True, text=True, timeout=60
        )
        assert probe.returncode != 0 and "blocked for this test" in probe.stderr, name
    out = tmp / "table.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, out


def test_dry_run_without_ray_optuna_lpips_prints_every_section(dry_run):
    proc, out = dry_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    text = proc.stdout
    for expected in (
        "device: cpu",
        "torch: ",
        "data: lfw-subset",
        "GPU utilisation: unavailable",
        "budget: ",
        "DRY RUN",
        # the table's columns
        "| section | measurement | AMP+CL | value | unit | timed | GPU util % mean/max | GPU mem MiB max | note |",
        # training: plain and defended, AMP+CL off and on
        "| train | face_cnn plain λ=0 | off |",
        "| train | face_cnn plain λ=0 | on |",
        "| train | face_cnn defended λ=0.1 deconv @pool2 | off |",
        "| train | face_cnn defended λ=0.1 deconv @pool2 | on |",
        # attackers, AMP+CL off and on
        "| attack | deconv @pool2 | off |",
        "| attack | deconv @pool2 | on |",
        "| attack | fc @pool2 | off |",
        "| attack | fc @pool2 | on |",
        "| attack | resdec @pool2 | off |",
        "| attack | resdec @pool2 | on |",
        # concurrency and the projection
        "| concurrency | 1 process:",
        "| concurrency | 2 processes:",
        "models/h (250 ep)",
        "| projection | paper LFW: 30 models x 250 ep + 90 attackers x 50 ep, 1 process |",
        "| projection | paper LFW: 30 models x 250 ep + 90 attackers x 50 ep, best packing:",
        "s/epoch",
        "| unavailable | unavailable |",
    ):
        assert expected in text, f"{expected!r} missing from the dry run's output:\n{text[-6000:]}"
    assert "error:" not in text and "skipped" not in text, text[-6000:]
    for name in BLOCKED:
        assert f"No module named '{name}'" not in proc.stderr

    doc = json.loads(out.read_text())
    assert doc["dry_run"] is True and doc["utilisation_source"] == "unavailable"
    sections = [r["section"] for r in doc["rows"]]
    assert sections.count("train") == 4 and sections.count("attack") == 6
    assert sections.count("concurrency") == 2 and sections.count("projection") == 2
    assert all(isinstance(r["value"], float) and r["value"] > 0 for r in doc["rows"])


def _module():
    spec = importlib.util.spec_from_file_location("gpu_pipeline_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_budget_arithmetic_and_projection():
    gp = _module()
    # Steady epochs per process: what fits if k processes did not overlap at all; >= 1, <= cap.
    assert gp.concurrency_epochs(60, 10, 1, 1.0, 20) == 20
    assert gp.concurrency_epochs(60, 10, 4, 1.0, 20) == 12
    assert gp.concurrency_epochs(60, 10, 8, 2.0, 20) == 3
    assert gp.concurrency_epochs(5, 10, 8, 2.0, 20) == 1
    now = time.time()
    assert not gp.steady_stop(0, 5, now, 100.0, 1.0, now)  # a steady epoch always runs
    assert gp.steady_stop(5, 5, now, 0.1, 1e9, now + 1e9)  # the cap
    assert gp.steady_stop(1, 5, now, 2.0, 1.0, now + 1e9)  # the slice
    assert not gp.steady_stop(1, 5, now, 0.1, 1e9, now + 1e9)

    # 30 models: 15 plain, 5 defended per partition, x 250 epochs; 90 attackers: per partition
    # 10 models x (deconv + 2 fc, fc standing for sparse_fc), x 50 epochs.
    defended = {"pool1": 3.0, "pool2": 2.0, "pool3": 1.0}
    attacks = {("deconv", p): 0.5 for p in defended} | {("fc", p): 0.25 for p in defended}
    out = gp.project(1.0, defended, attacks, speedup=2.0)
    assert out["train_s"] == pytest.approx(250 * (15 * 1.0 + 5 * 6.0))
    assert out["attack_s"] == pytest.approx(50 * 10 * 3 * (0.5 + 2 * 0.25))
    assert out["packed_s"] == pytest.approx(out["serial_s"] / 2)
    # Measured at one partition only: the others take its times; scale multiplies every epoch.
    one = gp.project(1.0, {"pool2": 2.0}, {("deconv", "pool2"): 0.5, ("fc", "pool2"): 0.25}, 1.0, scale=3.0)
    assert one["serial_s"] == pytest.approx(3 * (250 * (15 + 5 * 6.0) + 50 * 10 * 3 * 1.0))


def test_data_is_replicated_to_the_papers_counts():
    gp = _module()
    ds, what = gp.paper_data(None, 32, gp.PAPER_TRAIN_IMAGES, gp.PAPER_TEST_IMAGES)
    assert (len(ds.train), len(ds.test)) == (1896, 474) and ds.image_shape == (3, 32, 32)
    assert ds.name == "lfw-subset" and "replicated to 1896 / 474" in what
    assert bool((ds.train.x[:160] == ds.train.x[160:320]).all())  # the 160 crops, repeated in order
    fake = gp.synthetic_faces(16)
    assert fake.image_shape == (3, 16, 16) and fake.value_range == (-1.0, 1.0) and fake.name == "lfw-subset"
