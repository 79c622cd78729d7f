"""The results page (analysis/results_md.py): deterministic, its numbers what the tables say,
significance that follows the data, and docs/results_lfw.md in step with the committed reference
tables (docs/reference/lfw_cpu/)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from test_analysis import attack_row, model_row, per_image

from analysis.results_md import results_markdown, write_markdown
from pp_cluster.results.store import ResultStore

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "docs" / "reference" / "lfw_cpu"
PAGE = REPO / "docs" / "results_lfw.md"
SWEEP = "lfw_tiny"
N_IMAGES = 30
PARTITIONS = ("pool1", "pool2")
# (seed, partition or None for the undefended model) -> worst-attacker SSIM; the other attacker
# and the mean-image baseline sit below it.
SSIM = {
    (0, None): {"pool1": 0.80, "pool2": 0.70},
    (1, None): {"pool1": 0.78, "pool2": 0.69},
    (0, "pool1"): {"pool1": 0.50},
    (1, "pool1"): {"pool1": 0.52},
    (0, "pool2"): {"pool2": 0.45},
    (1, "pool2"): {"pool2": 0.40},
}
RUN = {
    "command": "python sweeps/lfw_grid.py --quick --seeds 0 1 --results results/lfw_tiny",
    "date": "2026-11-27",
    "machine": "2-core CPU laptop",
    "wall_seconds": 5400,
    "notes": "a test run",
}


def model_id(seed: int, partition: str | None) -> str:
    return f"{'u' if partition is None else 'd-' + partition}-s{seed}"


def write_attacks(store: ResultStore, mid: str, part: str, worst: float, rng: np.random.Generator) -> None:
    """deconv (the strongest), fc and the mean-image baseline at one partition; the scalar SSIM/MSE
    are the means of the per-image lists, as the farm writes them."""
    for attacker, ssim, gender in (
        ("deconv", worst, (30, 36, 40)),
        ("fc", worst - 0.1, (28, 35, 40)),
        ("mean_image", 0.3, (39, 40, 40)),
    ):
        ssim_images, mse_images = (
            per_image(rng, ssim, 0.05, N_IMAGES),
            per_image(rng, 0.1 - ssim / 10, 0.005, N_IMAGES),
        )
        aid = f"{mid}-{part}-{attacker}"
        store.write(
            "attacks",
            SWEEP,
            aid,
            [
                attack_row(
                    SWEEP,
                    mid,
                    aid,
                    attacker=attacker,
                    partition=part,
                    ssim=float(np.mean(ssim_images)),
                    mse=float(np.mean(mse_images)),
                    ssim_images=ssim_images,
                    mse_images=mse_images,
                    dpd=None,
                    dpd_reason="no offline LPIPS weights",
                    reprint_acc=0.4,
                    n_eval=N_IMAGES,
                    n_cg=gender[0],
                    n_df=gender[1],
                    n_ti=gender[2],
                )
            ],
        )


def write_root(root: Path, run: dict | None = RUN) -> None:
    """2 seeds × (one undefended model attacked at both partitions + a defended model per partition)."""
    store = ResultStore(str(root))
    rng = np.random.default_rng(7)
    for (seed, part), worst in SSIM.items():
        mid = model_id(seed, part)
        defended = part is not None
        store.write(
            "models",
            SWEEP,
            mid,
            [
                model_row(
                    SWEEP,
                    mid,
                    seed=seed,
                    dataset="lfw",
                    arch="face_cnn",
                    partition=part,
                    lam=1.0 if defended else 0.0,
                    defenders="deconv" if defended else "",
                    defense="partition" if defended else "none",
                    test_acc=0.85 - 0.05 * defended + 0.025 * seed - 0.02 * (defended and seed),
                    n_test=40,
                )
            ],
        )
        for p, ssim in worst.items():
            write_attacks(store, mid, p, ssim, rng)
    if run is not None:
        (root / "run.json").write_text(json.dumps(run))


@pytest.fixture
def root(tmp_path) -> Path:
    write_root(tmp_path / "tables")
    return tmp_path / "tables"


def section(md: str, heading: str) -> str:
    """The text under the heading that starts with ``heading``, up to the next heading."""
    start = md.index(f"\n{heading}")
    rest = md[start + 1 :]
    ends = [i for i in (rest.find("\n## ", 1), rest.find("\n### ", 1)) if i > 0]
    return rest[: min(ends)] if ends else rest


def row(text: str, *cells: str) -> list[str]:
    """The cells of the table row whose first cells are ``cells``."""
    prefix = "| " + " | ".join(cells) + " |"
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, f"{prefix!r}: {lines}"
    return [c.strip() for c in lines[0].strip("|").split(" | ")]


def worst_ssim(root: Path, mid: str, part: str) -> float:
    """Independently of analysis/: the strongest non-baseline attacker's mean per-image SSIM."""
    store = ResultStore(str(root))
    a = store.read("attacks")
    a = a[(a["model_id"] == mid) & (a["partition"] == part) & (a["attacker"] != "mean_image")]
    return max(float(np.mean(x)) for x in a["ssim_images"])


def test_page_is_deterministic_and_its_numbers_are_the_tables(root, tmp_path):
    page = tmp_path / "docs" / "results.md"
    md = results_markdown(str(root), page)
    assert write_markdown(str(root), page).read_bytes() == md.encode("utf-8")
    assert results_markdown(str(root), page) == md
    assert str(tmp_path) not in md and "[`../tables`](../tables)" in md  # linked relative to the page
    assert f"```\n{RUN['command']}\n```" in md and "2-core CPU laptop" in md and "5,400 s (1.50 h)" in md

    # Figure 5 (c): the undefended models at pool1, worst-case SSIM over the two seeds, t interval.
    seeds = [worst_ssim(root, model_id(s, None), "pool1") for s in (0, 1)]
    mean, half = np.mean(seeds), stats.t.ppf(0.975, 1) * np.std(seeds, ddof=1) / math.sqrt(2)
    cells = row(section(md, "### (c)"), "pool1", "no defense", "2")
    assert cells[3] == f"{mean:.3f} [{mean - half:.3f}, {mean + half:.3f}]" and cells[4] == "t over seeds"
    assert cells[5] == "deconv"  # never the mean-image baseline, which is beside it
    baseline = np.mean(
        [
            float(np.mean(x))
            for x in ResultStore(str(root))
            .read("attacks")
            .query("attacker == 'mean_image' and partition == 'pool1' and model_id.str.startswith('u')")[
                "ssim_images"
            ]
        ]
    )
    assert cells[6].startswith(f"{baseline:.3f} [")
    # (a): two seeds of test accuracy, in percent.
    acc = [0.80, 0.805]
    assert row(section(md, "### (a)"), "pool2", "λ=1 (deconv)", "2")[3].startswith(
        f"{100 * np.mean(acc):.1f} ["
    )
    # (e): DPD is null everywhere, and the page says why instead of showing numbers.
    dpd = section(md, "### (e)")
    n_attacks = 3 * sum(len(parts) for parts in SSIM.values())
    assert f"`attacks.dpd` is null for all {n_attacks} successful attacks" in dpd
    assert "“no offline LPIPS weights”" in dpd
    assert "| pool1 |" not in dpd
    # The paper's numbers beside ours: Table III's counts, and Figure 5 in words only.
    assert row(section(md, "## Table III"), "pool1", "no defense", "2")[-2:] == ["414 / 459 / 474", "87.3%"]
    assert "no values printed" in section(md, "### (c)")


def test_significance_follows_the_paired_interval(root, tmp_path):
    page = tmp_path / "results.md"
    paired = section(results_markdown(str(root), page), "## Defended minus undefended")
    ssim = row(paired, "pool1", "λ=1 (deconv)", "worst-case SSIM", "2 (0,1)")
    diffs = [SSIM[(s, "pool1")]["pool1"] - SSIM[(s, None)]["pool1"] for s in (0, 1)]
    assert ssim[6].startswith(f"{np.mean(diffs):.3f} [") and ssim[7:] == ["t over seeds", "**yes**"]
    # Make the defended pool1 models leak as much as the undefended ones (one a little more, one a
    # little less): the interval now straddles 0 and the mark flips.
    rng = np.random.default_rng(3)
    for seed, delta in ((0, 0.02), (1, -0.03)):
        write_attacks(
            ResultStore(str(root)), model_id(seed, "pool1"), "pool1", SSIM[(seed, None)]["pool1"] + delta, rng
        )
    paired = section(results_markdown(str(root), page), "## Defended minus undefended")
    assert row(paired, "pool1", "λ=1 (deconv)", "worst-case SSIM", "2 (0,1)")[-1] == "no"
    assert row(paired, "pool2", "λ=1 (deconv)", "worst-case SSIM", "2 (0,1)")[-1] == "**yes**"


def test_without_run_json_the_tables_say_when_and_where(tmp_path):
    write_root(tmp_path / "t", run=None)
    md = results_markdown(str(tmp_path / "t"), tmp_path / "results.md")
    made = section(md, "## How the run was made")
    assert "No `run.json`" in made and "2026-11-26 12:00 – 2026-11-26 12:00 UTC" in made
    assert row(made, "test images (models.n_test)") == ["test images (models.n_test)", "40"]


def test_cli_writes_the_page_without_matplotlib(root, tmp_path):
    page = tmp_path / "out" / "results.md"
    code = (
        "import sys; from analysis.report import main; rc = main(sys.argv[1:]); "
        "print('matplotlib' in sys.modules); sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(root), "--markdown", str(page)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == "False"  # the page needs no figures
    assert page.read_text(encoding="utf-8") == results_markdown(str(root), page)
    bare = subprocess.run(
        [sys.executable, "-m", "analysis.report", str(root)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert bare.returncode == 2 and "--out DIR, --markdown PAGE or both" in bare.stderr


def assert_page_matches_its_tables(reference: Path, page: Path) -> None:
    """A committed results page is what its committed reference tables generate, byte for byte
    (skipped while the tables do not exist)."""
    if not reference.is_dir():
        pytest.skip(f"{reference.relative_to(REPO)}/ (the committed reference tables) does not exist yet")
    command = f"python -m analysis.report {reference.relative_to(REPO)} --markdown {page.relative_to(REPO)}"
    assert page.exists(), f"{page.relative_to(REPO)} is missing: run {command}"
    assert results_markdown(str(reference), page) == page.read_text(encoding="utf-8"), (
        f"{page.relative_to(REPO)} drifted from its tables: regenerate it with {command}"
    )


def test_committed_page_matches_the_reference_tables():
    assert_page_matches_its_tables(REFERENCE, PAGE)
