"""``pp-farm attack``: a finished sweep's models attacked again with new attackers, without
training them again, each new row written once (a results root built without Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_export import SWEEP, TINY, _finish  # (pytest puts this folder on sys.path)

from pp_cluster import pipeline
from pp_cluster.cli import main
from pp_cluster.config import AttackSpec, ModelSpec, SpecError
from pp_cluster.nets import split
from pp_cluster.reattack import plan
from pp_cluster.results.rows import attack_row
from pp_cluster.results.store import ResultStore, provenance


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """What a sweep over pool1 and pool2 leaves: a defended model (pool1) attacked there, an
    undefended one attacked at both, by the mean-image baseline only."""
    root = tmp_path_factory.mktemp("results")
    torch.manual_seed(0)
    defended = ModelSpec(partition="pool1", lam=0.1, defenders=("deconv",), defense="partition", **TINY)
    plain = ModelSpec(partition=None, lam=0.0, defenders=(), defense="none", **TINY)
    ds = pipeline.load_data(defended)
    store = ResultStore(str(root))
    ids = {}
    for name, spec, partitions in (("defended", defended, ["pool1"]), ("plain", plain, ["pool1", "pool2"])):
        model_id, model = _finish(root, spec, ds)
        ids[name] = model_id
        for p in partitions:
            inputs = pipeline.attack_inputs(split(model.net, p)[0], ds, "train", 1.0, spec.seed)
            attack = AttackSpec("mean_image")
            row, _ = pipeline.run_attack(
                attack, model.net, spec.at(p), (ds.image_shape, ds.num_classes, ds.value_range), inputs
            )
            aid = attack.attack_id(model_id, p)
            store.write(
                "attacks",
                SWEEP,
                aid,
                [attack_row(row, sweep=SWEEP, model_id=model_id, attack_id=aid, prov=provenance())],
            )
    return str(root), ids


def test_the_plan_covers_every_partition_each_model_was_attacked_at(swept):
    root, ids = swept
    store = ResultStore(root)
    jobs = plan(store, SWEEP, ["fc", "rmle"], epochs=1)
    assert sorted((j.model_id == ids["plain"], j.partition, j.attack.attacker) for j in jobs) == sorted(
        [(False, "pool1", a) for a in ("fc", "rmle")]
        + [(True, p, a) for p in ("pool1", "pool2") for a in ("fc", "rmle")]
    )
    # A tuned twin for the attacker that trains, none for the white-box one; ids as the farm's.
    tuned = plan(store, SWEEP, ["fc", "rmle"], epochs=1, tune_trials=2)
    assert len(tuned) == 9 and sum(j.attack.tune_trials == 2 for j in tuned) == 3
    assert all(j.attack_id == j.attack.attack_id(j.model_id, j.partition) for j in tuned)
    assert {j.attack.attacker_data for j in tuned} == {"train"}
    # Shards split the work into disjoint parts that cover it; partitions filter it.
    halves = [plan(store, SWEEP, ["fc", "rmle"], epochs=1, shard=(i, 2)) for i in (0, 1)]
    assert sorted(halves[0] + halves[1], key=str) == sorted(jobs, key=str)
    assert not {j.attack_id for j in halves[0]} & {j.attack_id for j in halves[1]}
    assert {j.partition for j in plan(store, SWEEP, ["fc"], epochs=1, partitions=["pool2"])} == {"pool2"}
    with pytest.raises(SpecError, match="attacked at"):
        plan(store, SWEEP, ["fc"], partitions=["pool3"])
    with pytest.raises(SpecError, match="shard"):
        plan(store, SWEEP, ["fc"], shard=(2, 2))
    # The mean-image attacks exist: planning them again finds nothing to do.
    assert plan(store, SWEEP, ["mean_image"], epochs=20) == []
    for bad, match in ((["nope"], "unknown attacker"), ([], "unknown attacker")):
        with pytest.raises(SpecError, match=match):
            plan(store, SWEEP, bad)
    with pytest.raises(SpecError, match="not finished models"):
        plan(store, SWEEP, ["fc"], models=["0123456789abcdef"])
    with pytest.raises(SpecError, match="no finished, attacked models"):
        plan(store, "other", ["fc"])


def test_pp_farm_attack_writes_each_new_row_once(swept, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # offline DPD
    monkeypatch.setenv("PP_CLUSTER_CPU_BF16", "0")
    root, ids = swept
    args = ["attack", root, SWEEP, "--attackers", "fc,rmle", "--attack-epochs", "1"]
    assert main([*args, "--dry-run"]) == 0
    assert "6 attacks to run on 3 (model, partition) pairs" in capsys.readouterr().out
    assert main(args) == 0
    attacks = ResultStore(root).read("attacks", SWEEP)
    assert len(attacks) == 3 + 6 and attacks["attack_id"].is_unique and (attacks["status"] == "ok").all()
    new = attacks[attacks["attacker"].isin(["fc", "rmle"])]
    assert set(new["partition"]) == {"pool1", "pool2"} and new["ssim"].notna().all()
    assert set(new.loc[new["attacker"] == "fc", "attacker_epochs"]) == {1}
    capsys.readouterr()
    folder = Path(root) / "attacks" / f"sweep={SWEEP}"
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.parquet")}
    assert len(before) == 9
    assert main(args) == 0  # run again: nothing left to do, nothing rewritten
    assert "0 attacks to run" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.parquet")} == before
    assert main(["attack", root, SWEEP, "--attackers", "nope"]) == 2
    assert "unknown attacker" in capsys.readouterr().err


def test_a_suite_model_is_attacked_again_at_its_own_partitions_only():
    from types import SimpleNamespace

    from pp_cluster.reattack import _attacked_at

    everywhere = ["pool1", "pool2", "pool3"]
    suite = SimpleNamespace(partition=None, partition_suite="pool1+pool3")
    assert _attacked_at(suite, everywhere) == ["pool1", "pool3"]
    assert _attacked_at(SimpleNamespace(partition="pool2", partition_suite=None), everywhere) == ["pool2"]
    assert _attacked_at(SimpleNamespace(partition=None, partition_suite=None), everywhere) == everywhere
    assert _attacked_at(SimpleNamespace(partition=None), everywhere) == everywhere  # tables before suites
