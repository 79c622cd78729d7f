"""The report's self-contained HTML page, its per-image metrics and ``pp-farm report``; the quick
profiles' reconstructions by default (issue 17). Ray-free: the small sweep of test_analysis."""

from __future__ import annotations

import argparse
import base64
import html
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from test_analysis import write_bare, write_sweep

from analysis import figures
from analysis.report import build_report, report_html
from analysis.tables import Missing, figure5_data, frontiers, load, per_image
from pp_cluster.cli import add_sweep_args, spec_from_args
from pp_cluster.profiles import PROFILES, PUBLIC_DATASETS

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("results"))
    write_sweep(path)
    return path


@pytest.fixture(scope="module")
def report_dir(root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    build_report(root, out)
    return out


class _Tags(HTMLParser):
    """Every start tag with its attributes; every end tag checked against the open one."""

    VOID = {"img", "meta", "br"}

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.starts: list[tuple[str, dict]] = []
        self.bad: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.starts.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if not self.open or self.open.pop() != tag:
            self.bad.append(tag)


def _parse(page: str) -> _Tags:
    tags = _Tags()
    tags.feed(page)
    assert tags.bad == [] and tags.open == [], (tags.bad, tags.open)
    return tags


def test_the_page_has_the_reports_sections_and_figure_4_first(report_dir):
    md = (report_dir / "report.md").read_text()
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    _parse(page)
    md_headings = re.findall(r"^## (.+)$", md, re.M)
    html_headings = [html.unescape(re.sub(r"<[^>]+>", "", h)) for h in re.findall(r"<h2>(.*?)</h2>", page)]
    assert md_headings == html_headings
    assert html_headings[0] == "Figure 4 — original vs reconstructed images"
    for heading in ("Summary", "Table I", "Figure 5", "Accuracy–privacy frontier", "Per-image metrics"):
        assert any(h.startswith(heading) for h in html_headings), heading
    # As many HTML tables as the Markdown has pipe tables (a header row followed by a --- row).
    assert page.count("<table>") == len(re.findall(r"^\|.*\|\n\| --- ", md, re.M)) > 5


def test_every_figure_is_embedded_and_figure_4_is_the_grid(report_dir):
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    imgs = [a for tag, a in _parse(page).starts if tag == "img"]
    pngs = sorted(report_dir.glob("*.png"))
    assert len(imgs) == len(pngs) == 5
    assert all(a["src"].startswith("data:image/png;base64,") for a in imgs)  # no file beside needed
    embedded = {a["alt"]: base64.b64decode(a["src"].split(",", 1)[1]) for a in imgs}
    assert embedded == {p.stem: p.read_bytes() for p in pngs}
    figure4 = page.split("<h2>Figure 4")[1].split("<h2>")[0]
    assert 'alt="figure4_lfw-mini_lfw-subset" src="data:image/png;base64,' in figure4


def test_report_html_renders_the_reports_markdown(tmp_path):
    (tmp_path / "f.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    md = "\n".join(
        [
            "# Title",
            "",
            "## A <section> with `code`",
            "",
            "- item **bold** and `*_ci_method`",
            "- [t.csv](t.csv)",
            "",
            "A paragraph, *italic*, 2 × 3 < 4",
            "that goes on.",
            "",
            "| a | b |",
            "| --- | --- |",
            "| x \\| y | `z` |",
            "",
            "![f](f.png) ![g](missing.png)",
        ]
    )
    page = report_html(md, tmp_path)
    body = page.split("<body>\n")[1].split("\n</body>")[0]
    fake = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
    assert body.splitlines() == [
        "<h1>Title</h1>",
        "<h2>A &lt;section&gt; with <code>code</code></h2>",
        "<ul>",
        "<li>item <strong>bold</strong> and <code>*_ci_method</code></li>",
        '<li><a href="t.csv">t.csv</a></li>',
        "</ul>",
        "<p>A paragraph, <em>italic</em>, 2 × 3 &lt; 4 that goes on.</p>",
        '<div class="table"><table>',
        "<thead><tr><th>a</th><th>b</th></tr></thead>",
        "<tbody>",
        "<tr><td>x | y</td><td><code>z</code></td></tr>",
        "</tbody></table></div>",
        f'<p><img alt="f" src="data:image/png;base64,{fake}"> <img alt="g" src="missing.png"></p>',
    ]
    assert "<title>Title</title>" in page and '<meta charset="utf-8">' in page


def test_per_image_has_one_row_per_image_of_each_attack(root, report_dir):
    res = load(root)
    ok = res.attacks[res.attacks["status"] == "ok"]
    back = pd.read_parquet(report_dir / "per_image.parquet")
    assert len(back) == sum(len(v) for v in ok["ssim_images"]) == len(ok) * 20
    assert back.drop_duplicates(["sweep", "attack_id", "index"]).shape[0] == len(back)
    assert back.dtypes["index"] == "int64" and back.dtypes["ssim"] == back.dtypes["mse"] == "float64"
    for col in ("sweep", "model_id", "attack_id", "attacker", "baseline", "partition", "lam", "seed"):
        assert col in back.columns, col
    pd.testing.assert_frame_equal(back, per_image(res), check_dtype=False)
    # In the attack's evaluation order, its own lists; its model's setting beside.
    one = back[back["attack_id"] == "C-pool1-fc"]
    row = ok.set_index("attack_id").loc["C-pool1-fc"]
    assert one["index"].tolist() == list(range(20))
    assert one["ssim"].tolist() == list(row["ssim_images"]) and one["mse"].tolist() == list(row["mse_images"])
    assert set(one["lam"]) == {0.1} and set(one["seed"]) == {0} and set(one["defense"]) == {"partition"}
    assert one["ssim"].mean() == pytest.approx(row["ssim"])
    assert set(back.loc[back["baseline"], "attacker"]) == {"mean_image"}
    # The report names the best- and worst-reconstructed image per partition, baseline aside.
    section = (report_dir / "report.md").read_text().split("## Per-image metrics")[1].split("\n## ")[0]
    real = back[~back["baseline"] & back["partition"].notna()]
    best = real.loc[real[real["partition"] == "pool1"]["ssim"].idxmax()]
    assert f"| pool1 | best | no defense | {best['seed']} | {best['attacker']} | {best['index']} |" in section


def test_without_reconstructions_the_report_opens_with_the_summary(tmp_path):
    write_bare(str(tmp_path / "r"))
    build_report(str(tmp_path / "r"), tmp_path / "out")
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert re.findall(r"<h2>(.*?)</h2>", page)[0] == "Summary"
    missing = page.split("<h2>Missing</h2>")[1]
    assert "Figure 4: no reconstructions" in missing and "Per-image metrics: no successful attack" in missing
    assert not (tmp_path / "out" / "per_image.parquet").exists()
    with pytest.raises(Missing, match="ssim_images"):
        per_image(load(str(tmp_path / "r")))


def _drawn(monkeypatch) -> list:
    made = []

    def record(**kw):
        fig = make(**kw)
        made.append(fig)
        return fig

    make = figures._figure
    monkeypatch.setattr(figures, "_figure", record)
    return made


def test_figure5_leaves_out_empty_panels(tmp_path, monkeypatch):
    write_bare(str(tmp_path / "r"))  # no reprint accuracy, no DPD
    made = _drawn(monkeypatch)
    figures.figure5(figure5_data(load(str(tmp_path / "r"))), tmp_path)
    (fig,) = made
    assert [ax.get_title() for ax in fig.axes] == [
        "(a) accuracy",
        "(c) SSIM of best attack",
        "(d) MSE of best attack",
    ]
    assert "reprint accuracy, DPD" in fig.get_supxlabel()


def test_frontier_shapes_points_by_lambda(root, tmp_path, monkeypatch):
    made = _drawn(monkeypatch)
    figures.frontier_plot(*frontiers(load(root)), tmp_path)
    (fig,) = made
    legend = fig.axes[0].get_legend()
    shapes = {
        t.get_text(): h.get_marker()
        for t, h in zip(legend.get_texts(), legend.legend_handles)
        if hasattr(h, "get_marker") and h.get_marker() != "None"
    }
    assert shapes.keys() == {"λ=0", "λ=0.1", "dp_pixelation"} and len(set(shapes.values())) == 3
    # ... and the points are drawn in those three shapes.
    drawn = [c for c in fig.axes[0].collections if len(c.get_offsets())]
    assert len({c.get_paths()[0].vertices.tobytes() for c in drawn}) == 3


def _spec(argv: list[str], driver: str = "lfw_grid"):
    p = argparse.ArgumentParser()
    add_sweep_args(p)
    return spec_from_args(p.parse_args(argv), driver)


def test_quick_profiles_keep_reconstructions_of_public_data_only():
    for driver, profiles in PROFILES.items():
        for name, spec in profiles.items():
            assert spec.save_reconstructions == (name == "quick" and spec.dataset in PUBLIC_DATASETS), (
                driver,
                name,
            )
    assert {d for d, p in PROFILES.items() if p["quick"].save_reconstructions} == {
        "lfw_grid",
        "mnist_table1",
        "mnist_table2",
    }
    assert _spec(["--quick"]).save_reconstructions
    assert not _spec(["--quick", "--no-save-reconstructions"]).save_reconstructions
    # --quick on real faces: the quick budget, the paper profile's opt-in.
    real = _spec(["--quick", "--data-root", "/data/lfw-deepfunneled"])
    assert real.dataset == "lfw" and not real.save_reconstructions
    assert _spec(["--quick", "--data-root", "/data/lfw", "--save-reconstructions"]).save_reconstructions
    assert not _spec(["--profile", "cpu", "--data-root", "/data/lfw"]).save_reconstructions
    assert _spec(["--save-reconstructions"]).save_reconstructions and not _spec([]).save_reconstructions


def _pp_farm(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    code = "import sys; from pp_cluster.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def test_pp_farm_report_writes_the_report_and_refuses_a_missing_root(root, tmp_path):
    done = _pp_farm(["report", root], cwd=tmp_path)  # default --out: ./report
    assert done.returncode == 0, done.stderr
    assert "report: report/report.md, report/report.html" in done.stdout
    assert "data:image/png;base64," in (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    ok = load(root).attacks.query("status == 'ok'")
    assert len(pd.read_parquet(tmp_path / "report" / "per_image.parquet")) == ok["ssim_images"].map(len).sum()
    missing = _pp_farm(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")], cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"pp-farm: error: results root '{tmp_path / 'nowhere'}' does not exist"
    assert not (tmp_path / "o").exists()


def test_pp_farm_report_help_imports_no_analysis_torch_or_ray():
    code = (
        "import sys\nfrom pp_cluster.cli import main\n"
        "for argv in (['--help'], ['report', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit as e:\n        assert e.code == 0\n"
        "print('IMPORTED', sorted(m for m in ('torch', 'ray', 'analysis', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "report" in out.stdout and "--activation-maps" in out.stdout and "--out OUT" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "IMPORTED []"
