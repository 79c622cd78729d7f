"""``--snapshot OUT``: a running or stopped sweep's finished models (the model ok and every
planned attack ok), with their attacks and epochs, copied into another results root, compacted:
a reference folder for the report, and a root that a ``--resume`` on another machine adopts."""

from __future__ import annotations

import pandas as pd
import pytest

from pp_cluster.cli import sweep_main
from pp_cluster.results.store import ResultStore


def _small_files(root) -> list[str]:
    return [p.name for p in root.rglob("*.parquet") if not p.name.startswith(("compact-", "empty"))]


@pytest.mark.farm
def test_a_snapshot_keeps_only_finished_models_and_a_resume_on_it_computes_the_rest(
    tiny_sweep, ray_cluster, tmp_path
):
    from pp_cluster.farm.sweep import run_sweep, snapshot

    root, ref = tmp_path / "res", tmp_path / "ref"
    spec = tiny_sweep(root, name="snap", partitions=("pool1",), lams=(0.0, 1.0), attackers=("fc",))
    run_sweep(spec, verbose=False)
    models, attacks = pd.read_parquet(root / "models"), pd.read_parquet(root / "attacks")
    defended = models.loc[models["lam"] == 1.0, "model_id"].item()
    undefended = models.loc[models["lam"] == 0.0, "model_id"].item()
    unfinished = attacks.loc[attacks["model_id"] == defended, "attack_id"].item()
    (root / "attacks" / "sweep=snap" / f"{unfinished}.parquet").unlink()  # its attack is still running

    n = snapshot(ResultStore(str(root)), ResultStore(str(ref)), spec)
    assert n == {"models": 1, "epochs": 1, "attacks": 1, "finished": 1}
    copied = pd.read_parquet(ref / "models")
    assert list(copied["model_id"]) == [undefended]
    assert set(pd.read_parquet(ref / "epochs")["model_id"]) == {undefended}
    assert set(pd.read_parquet(ref / "attacks")["model_id"]) == {undefended}
    assert _small_files(ref) == []  # compacted
    before = pd.read_parquet(root / "models").set_index("model_id").loc[undefended]
    assert copied.set_index("model_id").loc[undefended, "finished_at"] == before["finished_at"]
    # Written once: a second snapshot copies nothing and leaves the packed files as they are.
    packed = {p: p.stat().st_mtime_ns for p in ref.rglob("compact-*.parquet")}
    assert snapshot(ResultStore(str(root)), ResultStore(str(ref)), spec)["models"] == 0
    assert {p: p.stat().st_mtime_ns for p in ref.rglob("compact-*.parquet")} == packed

    # Another machine resumes on the snapshot: the finished model is adopted, not trained again;
    # the defended one is trained and attacked there.
    run_sweep(spec.with_(results=str(ref)), resume=True, verbose=False)
    m, a = pd.read_parquet(ref / "models"), pd.read_parquet(ref / "attacks")
    assert sorted(m["model_id"]) == sorted([defended, undefended]) and m["model_id"].is_unique
    assert m.set_index("model_id").loc[undefended, "finished_at"] == before["finished_at"]
    assert len(a) == 2 and a["attack_id"].is_unique


def test_snapshot_refuses_bad_input_before_copying(tmp_path, capsys):
    doc = "lfw_grid"
    res, out = tmp_path / "res", tmp_path / "out"
    res.mkdir()
    assert sweep_main("lfw_grid", doc, ["--quick", "--results", str(res), "--snapshot", str(out)]) == 2
    assert "has no models" in capsys.readouterr().err
    assert sweep_main("lfw_grid", doc, ["--quick", "--results", str(res), "--snapshot", str(res)]) == 2
    assert "OUT must be another results root" in capsys.readouterr().err
    assert not out.exists()
