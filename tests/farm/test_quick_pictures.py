"""Issue 17, acceptance 2: the quick LFW profile keeps a few reconstructions by default, and
``pp-farm report`` turns them into a page that opens with the Figure 4 grid and a per-image
table pandas reads back. The quick profile, shrunk by flags to two models and two attackers."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

pytestmark = pytest.mark.farm

REPO = Path(__file__).resolve().parents[2]
SHRUNK = [
    "--seeds", "0",
    "--epochs", "1",
    "--partitions", "pool1",
    "--lams", "0,3",
    "--attackers", "deconv,mean_image",
    "--attack-epochs", "1",
    "--num-cpus", "2",
]  # fmt: skip


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_quick_sweep_then_pp_farm_report_shows_the_reconstructions(tmp_path):
    results, out = tmp_path / "results", tmp_path / "report"
    _run(
        [sys.executable, str(REPO / "sweeps" / "lfw_grid.py"), "--quick", *SHRUNK, "--results", str(results)],
        REPO,
    )
    attacks = pd.read_parquet(results / "attacks")
    recon = pd.read_parquet(results / "reconstructions")
    assert len(attacks) == 4 and (attacks["status"] == "ok").all()  # 2 models × (deconv, mean_image)
    assert set(recon["attack_id"]) == set(attacks["attack_id"]) and len(recon) == 4 * 8

    pp_farm = Path(sys.executable).with_name("pp-farm")  # the console script pip installed
    _run([str(pp_farm), "report", str(results), "--out", str(out)], tmp_path)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.index("<h2>Figure 4") < page.index("<h2>Summary")  # the pictures open the page
    figure4 = page.split("<h2>Figure 4")[1].split("<h2>")[0]
    src = figure4.split('src="data:image/png;base64,')[1].split('"')[0]
    grid = Image.open(io.BytesIO(base64.b64decode(src)))
    # Two row pairs (undefended and λ = 3 at pool1) of eight images each, 32×32 crops or larger.
    assert grid.width > 8 * 32 and grid.height > 4 * 32
    (png,) = out.glob("figure4_*.png")
    assert grid.tobytes() == Image.open(png).tobytes()

    per_image = pd.read_parquet(out / "per_image.parquet")
    assert len(per_image) == attacks["n_eval"].sum() == 4 * 40  # 40 test crops per attack
    assert per_image.groupby("attack_id")["index"].agg(list).map(lambda i: i == list(range(40))).all()
    means = per_image.groupby("attack_id")["ssim"].mean()
    assert means.to_dict() == pytest.approx(attacks.set_index("attack_id")["ssim"].to_dict(), abs=1e-6)
    assert set(per_image["lam"]) == {0.0, 3.0} and set(per_image["partition"]) == {"pool1"}
