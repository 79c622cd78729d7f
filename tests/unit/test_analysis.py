"""analysis/: worst-case attacks, seed statistics, Pareto set and hypervolume, and the report,
on a small sweep written through the farm's own ResultStore (no Ray)."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis import aggregate, frontier, hypervolume, load, pareto_mask, worst_case
from analysis.report import build_report
from analysis.tables import Missing, figure4_data, figure5_data, figure7_data, table_i, table_ii, table_iii
from pp_cluster.farm.store import ResultStore, provenance

SWEEP = "lfw-mini"
T_975 = {1: 12.706204736174698, 2: 4.302652729749464}  # Student t 0.975 quantiles (tables)

# (model, partition, λ, defenders, seed, test acc, status, defense, ε)
MODELS = [
    ("A", "pool1", 0.0, "", 0, 0.80, "ok", "none", None),
    ("B", "pool1", 0.0, "", 1, 0.90, "ok", "none", None),
    ("C", "pool1", 0.1, "deconv", 0, 0.70, "ok", "partition", None),
    ("D", "pool1", 0.1, "deconv", 1, 0.74, "ok", "partition", None),
    ("E", "pool2", 0.0, "", 0, 0.85, "ok", "none", None),
    ("F", "pool2", 0.1, "deconv", 0, 0.82, "ok", "partition", None),
    ("G", "pool2", 0.1, "deconv,fc", 0, 0.78, "ok", "partition", None),
    ("H", "pool2", 0.1, "deconv", 1, None, "diverged", "partition", None),
    ("P1", "pool1", 0.0, "", 0, 0.30, "ok", "dp_pixelation", 1.0),
    ("P2", "pool1", 0.0, "", 0, 0.60, "ok", "dp_pixelation", 10.0),
]
# model -> {attacker: (ssim, mse, psnr, dpd, reprint_acc, (n_cg, n_df, n_ti) or None)}
ATTACKS = {
    "A": {"deconv": (0.80, 0.020, 17.0, 0.30, 0.50, (40, 45, 50)), "fc": (0.70, 0.030, 18.0, 0.20, 0.40, (42, 44, 50)),
          "sparse_fc": (0.60, 0.010, 16.0, None, 0.60, None)},
    "B": {"deconv": (0.78, 0.022, 17.5, 0.31, 0.55, (38, 46, 50)), "fc": (0.72, 0.028, 17.0, 0.25, 0.45, None),
          "sparse_fc": (0.50, 0.040, 15.0, None, 0.35, None)},
    "C": {"deconv": (0.50, 0.050, 14.0, 0.40, 0.30, (20, 25, 50)), "fc": (0.55, 0.045, 14.5, 0.42, 0.20, None),
          "sparse_fc": (0.40, 0.060, 13.0, None, 0.10, None)},
    "D": {"deconv": (0.45, 0.055, 13.5, 0.45, 0.25, None), "fc": (0.52, 0.047, 14.2, 0.41, 0.22, None),
          "sparse_fc": (0.41, 0.058, 13.2, None, 0.12, None)},
    "E": {"deconv": (0.60, 0.030, 16.0, 0.35, 0.40, (30, 35, 50)), "fc": (0.65, 0.029, 16.2, 0.33, 0.42, None),
          "sparse_fc": (0.58, 0.033, 15.8, None, 0.38, None)},
    "F": {"deconv": (0.35, 0.070, 12.0, 0.50, 0.10, (10, 12, 50)), "fc": (0.30, 0.075, 11.5, 0.52, 0.08, None),
          "sparse_fc": (0.33, 0.072, 11.8, None, 0.09, None)},
    "G": {"deconv": (0.20, 0.090, 10.0, 0.60, 0.05, None), "fc": (0.25, 0.085, 10.5, 0.58, 0.06, None),
          "sparse_fc": (0.22, 0.088, 10.2, None, 0.05, None)},
    "P1": {"deconv": (0.10, 0.120, 9.0, 0.70, 0.02, None)},
    "P2": {"deconv": (0.40, 0.060, 12.5, 0.50, 0.20, None)},
}


NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc)
PROV = {k: v for k, v in provenance().items() if k != "git_sha"}


def model_row(sweep: str, model_id: str, **kw) -> dict:
    """A models row as the farm writes it; ``kw`` overrides the defaults."""
    return {"sweep": sweep, "model_id": model_id, "trial_id": f"t-{model_id}", "seed": 0, "dataset": "digits",
            "arch": "mnist_mlp", "partition": "fc2", "lam": 0.0, "defenders": "", "distance": "ssim",
            "defense": "none", "epochs": 3, "lr": 0.01, "batch_size": 32, "status": "ok", "train_seconds": 10.0,
            "started_at": NOW, "finished_at": NOW, "config_json": "{}", **PROV, **kw}


def attack_row(sweep: str, model_id: str, attack_id: str, **kw) -> dict:
    return {"sweep": sweep, "model_id": model_id, "attack_id": attack_id, "attacker_arch": kw.get("attacker"),
            "attacker_data": "train", "attacker_fraction": 1.0, "n_eval": 50, "best_epoch": 4,
            "train_seconds": 2.0, "status": "ok", "finished_at": NOW, **kw}


def write_sweep(root: str) -> None:
    """A small LFW-like sweep: 2 partitions × λ {0, 0.1} × 2 seeds, a 2-defender suite, a diverged
    model, two DP-pixelation models, 3 attackers each (plus one failed attack), epochs, images."""
    store = ResultStore(root)
    rng = np.random.default_rng(0)
    for mid, part, lam, defenders, seed, acc, status, defense, eps in MODELS:
        config = {"partition": part, "lam": lam, "seed": seed, **({"epsilon": eps} if eps else {})}
        store.write("models", SWEEP, mid, [model_row(
            SWEEP, mid, seed=seed, dataset="lfw-subset", arch="face_cnn", partition=part, lam=lam,
            defenders=defenders, defense=defense, test_acc=acc, train_acc=None if acc is None else acc + 0.05,
            status=status, diverged_epoch=2 if status == "diverged" else None,
            error="loss is NaN at epoch 2" if status == "diverged" else None, config_json=json.dumps(config),
        )])
        if status == "ok" and defense != "dp_pixelation":
            store.write("epochs", SWEEP, mid, [{
                "sweep": SWEEP, "model_id": mid, "epoch": e, "task_loss": 2.0 / (e + 1), "distance": 0.5 - 0.1 * e,
                "train_acc": acc - 0.1 / (e + 1), "test_acc": acc - 0.2 / (e + 1), "lr": 0.01, "seconds": 1.0,
            } for e in range(3)])
    for mid, zoo in ATTACKS.items():
        for attacker, (ssim, mse, psnr, dpd, reprint, gender) in zoo.items():
            aid = f"{mid}-{attacker}"
            row = attack_row(SWEEP, mid, aid, attacker=attacker, mse=mse, ssim=ssim, psnr=psnr, dpd=dpd,
                             dpd_reason=None if dpd is not None else "LPIPS weights not cached",
                             reprint_acc=reprint)
            if gender:
                row.update(n_cg=gender[0], n_df=gender[1], n_ti=gender[2], gender_acc=gender[0] / gender[2])
            store.write("attacks", SWEEP, aid, [row])
            if mid in ("A", "C", "E", "F") and attacker == "deconv":
                # What the attacker pool calls: images in [0, 1], N×C×H×W, stored as PNGs.
                store.write_reconstructions(SWEEP, mid, aid, rng.random((4, 1, 25, 25)), rng.random((4, 1, 25, 25)))
    # A failed attack with a (bogus) SSIM above every real one: it must not count as the worst case.
    store.write("attacks", SWEEP, "A-broken", [attack_row(SWEEP, "A", "A-broken", attacker="broken", ssim=0.99,
                                                          mse=0.0, status="failed", error="CUDA OOM")])


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("results"))
    write_sweep(path)
    return path


@pytest.fixture(scope="module")
def res(root):
    return load(root)


def test_load_reads_the_store_and_rejects_bad_roots(root, res, tmp_path):
    assert len(res.models) == len(MODELS) and len(res.attacks) == 24 and len(res.epochs) == 21
    joined = res.joined()
    assert len(joined) == 24 and {"status", "status_model", "partition", "ssim"} <= set(joined.columns)
    assert joined.loc[joined["attack_id"] == "A-broken", "status"].item() == "failed"
    assert load(root, sweep=SWEEP).models["model_id"].nunique() == len(MODELS)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="'other'.*lfw-mini"):
        load(root, sweep="other")


def test_worst_case_picks_the_strongest_successful_attacker(res):
    w = worst_case(res.attacks).set_index("model_id")
    a = w.loc["A"]
    # The failed "broken" row (SSIM 0.99, MSE 0) is ignored.
    assert a["n_attacks"] == 3
    assert (a["ssim"], a["ssim_attacker"]) == (0.80, "deconv")
    assert (a["mse"], a["mse_attacker"]) == (0.010, "sparse_fc")
    assert (a["psnr"], a["psnr_attacker"]) == (18.0, "fc")
    assert (a["dpd"], a["dpd_attacker"]) == (0.20, "fc")
    assert (a["reprint_acc"], a["reprint_acc_attacker"]) == (0.60, "sparse_fc")
    assert w.loc["C", "ssim_attacker"] == "fc" and w.loc["G", "mse"] == 0.085
    assert w["ssim"].dtype == "float64" and sorted(w.index) == sorted(ATTACKS)
    # A metric nobody measured stays null rather than becoming a number.
    only_sparse = res.attacks[res.attacks["attacker"] == "sparse_fc"]
    assert worst_case(only_sparse)["dpd"].isna().all()
    with pytest.raises(ValueError, match="ssim"):
        worst_case(res.attacks.drop(columns=["ssim"]))


def test_aggregate_over_seeds_mean_std_and_t_interval(res):
    ok = res.models[(res.models["status"] == "ok") & (res.models["defense"] != "dp_pixelation")]
    agg = aggregate(ok, ["partition", "lam"], ["test_acc"]).set_index(["partition", "lam"])
    p1 = agg.loc[("pool1", 0.0)]  # seeds: 0.80, 0.90
    half = T_975[1] * math.sqrt(0.005) / math.sqrt(2)
    assert p1["test_acc_n"] == 2
    assert p1["test_acc_mean"] == pytest.approx(0.85)
    assert p1["test_acc_std"] == pytest.approx(math.sqrt(0.005))
    assert (p1["test_acc_ci_lo"], p1["test_acc_ci_hi"]) == pytest.approx((0.85 - half, 0.85 + half))
    single = agg.loc[("pool2", 0.0)]  # one seed: no spread, no interval
    assert single["test_acc_n"] == 1 and math.isnan(single["test_acc_std"]) and math.isnan(single["test_acc_ci_lo"])
    three = aggregate(pd.DataFrame({"g": ["x"] * 3, "v": [1.0, 2.0, 3.0]}), ["g"], ["v"]).iloc[0]
    assert (three["v_ci_lo"], three["v_ci_hi"]) == pytest.approx((2 - T_975[2] / math.sqrt(3), 2 + T_975[2] / math.sqrt(3)))
    assert "Student t" in agg.attrs["ci_method"]
    with pytest.raises(ValueError, match="nope"):
        aggregate(ok, ["nope"], ["test_acc"])


def test_pareto_set_and_hypervolume_by_hand(res):
    mw = res.models_with_worst()
    front = frontier(mw[mw["status"] == "ok"])
    # (acc, worst SSIM): B .90/.78, E .85/.65, F .82/.35, G .78/.25, P1 .30/.10 are undominated;
    # A (.80/.80) by B, C (.70/.55) and D (.74/.52) and P2 (.60/.40) by G; H diverged.
    assert list(front["model_id"]) == ["B", "E", "F", "G", "P1"]
    expected = 0.90 * (1 - 0.78) + 0.85 * (0.78 - 0.65) + 0.82 * (0.65 - 0.35) + 0.78 * (0.35 - 0.25) + 0.30 * (0.25 - 0.10)
    assert hypervolume(front[["test_acc", "ssim"]].to_numpy()) == pytest.approx(expected)
    assert hypervolume(mw.dropna(subset=["test_acc", "ssim"])[["test_acc", "ssim"]].to_numpy()) == pytest.approx(expected)


def test_pareto_mask_and_hypervolume_edge_cases():
    # Ties: identical points are both optimal; equal accuracy keeps only the lowest leakage.
    assert pareto_mask([0.9, 0.9, 0.9, 0.5], [0.3, 0.3, 0.4, 0.1]).tolist() == [True, True, False, True]
    assert hypervolume([(0.5, 0.5)]) == pytest.approx(0.25)
    assert hypervolume([(0.5, 0.5), (0.5, 0.5), (0.4, 0.6)]) == pytest.approx(0.25)
    assert hypervolume(np.empty((0, 2))) == 0.0
    assert hypervolume([(0.8, 1.2), (-0.1, 0.2)]) == 0.0  # beyond the reference point
    assert hypervolume([(0.8, 0.4)], ref=(0.5, 0.9)) == pytest.approx(0.3 * 0.5)
    with pytest.raises(ValueError, match="shape"):
        hypervolume([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        pareto_mask([0.1, float("nan")], [0.2, 0.3])


def test_paper_tables(res):
    t1 = table_i(res).set_index(["partition", "lam", "attacker"])
    assert t1.loc[("pool1", 0.0, "deconv"), "ssim_mean"] == pytest.approx((0.80 + 0.78) / 2)
    assert t1.loc[("pool1", 0.1, "fc"), "mse_mean"] == pytest.approx((0.045 + 0.047) / 2)
    assert t1.loc[("pool1", 0.1, "fc"), "test_acc_mean"] == pytest.approx(0.72)
    # G (two defenders), H (diverged) and the DP models are not Table I material.
    assert t1.loc[("pool2", 0.1, "deconv"), "ssim_n"] == 1 and 0.0 in t1.loc["pool2"].index
    assert t1.loc[("pool2", 0.1, "deconv"), "ssim_mean"] == 0.35
    t2 = table_ii(res)
    assert set(t2["defenders_present"]) == {"none", "single", "multiple"}
    multi = t2[(t2["defenders_present"] == "multiple") & (t2["attacker"] == "fc")].iloc[0]
    assert (multi["ssim_mean"], multi["test_acc_mean"]) == (0.25, 0.78)
    t3 = table_iii(res).set_index(["partition", "defense"])
    # Per model the attacker with most correct genders: A → fc (42/44/50), B → deconv (38/46/50).
    assert tuple(t3.loc[("pool1", "none"), ["n_cg_mean", "n_df_mean", "n_ti_mean"]]) == (40.0, 45.0, 50.0)
    assert t3.loc[("pool1", "none"), "attackers"] == "deconv,fc"
    assert t3.loc[("pool2", "partition"), "n_cg_mean"] == 10.0


def write_bare(root: str) -> None:
    """One undefended model, one attacker, nothing else: most artefacts have no input."""
    store = ResultStore(root)
    store.write("models", "s", "m", [model_row("s", "m", test_acc=0.9)])
    store.write("attacks", "s", "a", [attack_row("s", "m", "a", attacker="fc", ssim=0.5, mse=0.1)])


def test_figure_data(res):
    f4 = figure4_data(res)
    # Per partition × setting: the lowest seed's model, its strongest attacker with saved images.
    assert sorted(f4["attack_id"].unique()) == ["A-deconv", "C-deconv", "E-deconv", "F-deconv"]
    assert len(f4) == 16 and f4["original"].map(lambda b: b[:8] == b"\x89PNG\r\n\x1a\n").all()
    f5 = figure5_data(res).set_index(["partition", "defenders"])
    assert f5.loc[("pool1", ""), "ssim_mean"] == pytest.approx(0.79)  # max SSIM of A (.80) and B (.78)
    assert f5.loc[("pool1", ""), "mse_mean"] == pytest.approx((0.010 + 0.022) / 2)  # min MSE per model
    assert f5.loc[("pool2", "deconv"), "test_acc_n"] == 1  # H diverged
    f7 = figure7_data(res).set_index("epsilon")
    assert (f7.loc[1.0, "ssim_mean"], f7.loc[10.0, "test_acc_mean"]) == (0.10, 0.60)


def test_missing_inputs_raise_missing(tmp_path):
    write_bare(str(tmp_path))
    res = load(str(tmp_path))
    for build, words in ((table_i, "two or more λ"), (table_ii, "more than one defender"),
                         (table_iii, "no attribute results")):
        with pytest.raises(Missing, match=words):
            build(res)


def test_report_command_writes_markdown_figures_and_csv(root, tmp_path):
    out = tmp_path / "report"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-m", "analysis.report", root, "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert proc.returncode == 0, proc.stderr
    assert str(out / "report.md") in proc.stdout
    # The budget is 30 s; CPU time, not wall time, so a busy shared machine does not fail it.
    assert (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime) < 30
    md = (out / "report.md").read_text()
    for heading in ("Table I —", "Table II —", "Table III —", "Figure 4 —", "Figure 5 —", "Figure 7 —",
                    "Accuracy–privacy frontier", "Training curves"):
        assert f"\n## {heading}" in md
    assert "Nothing: every artefact was built." in md
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [f"{k}_lfw-mini_lfw-subset.png" for k in ("curves", "figure4", "figure5", "figure7", "frontier")]
    for png in pngs:
        assert f"]({png})" in md
        with Image.open(out / png) as im:
            assert min(im.size) > 300
    csvs = {p.stem for p in out.glob("*.csv")}
    assert csvs == {"table_i", "table_ii", "table_iii", "figure5", "figure7", "frontier", "hypervolume",
                    "models_worst_case"}
    t1 = pd.read_csv(out / "table_i.csv")
    assert {"ssim_mean", "ssim_std", "ssim_ci_lo", "mse_mean", "test_acc_mean"} <= set(t1.columns)
    assert "0.790" in md  # Table I cell: pool1, λ=0, deconv SSIM mean
    hv = pd.read_csv(out / "hypervolume.csv")
    assert hv["n_pareto"].item() == 5


def test_report_says_what_is_missing(tmp_path):
    write_bare(str(tmp_path / "r"))

    md = build_report(str(tmp_path / "r"), tmp_path / "out").read_text()
    missing = md.split("## Missing")[1]
    for words in ("Table I", "Table II", "Table III: no attribute results", "Figure 4: no reconstructions",
                  "Figure 7: no dp_pixelation", "Training curves: the epochs table is empty"):
        assert words in missing
    assert "## Figure 5" in md and "## Accuracy–privacy frontier" in md
    assert (tmp_path / "out" / "figure5_s_digits.png").exists()


def test_docs_queries_run_against_a_results_root(root, capsys):
    """docs/queries.md promises five runnable queries: run every code block on the test sweep."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "queries.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert len(blocks) >= 6 and sum(line.startswith("## ") for line in doc.splitlines()) == 5
    code = "\n".join(blocks).replace('ROOT = "results"', f"ROOT = {root!r}")
    exec(compile(code, "docs/queries.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "deconv,fc" in printed and "loss is NaN at epoch 2" in printed and "CUDA OOM" in printed
