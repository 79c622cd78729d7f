"""One damaged results file never poisons a sweep (issue 18, item 4): a truncated attack file
is named and skipped by ``pp-farm status`` and the report, does not fail another model's
trial, and ``--resume`` moves it to ``_quarantine/`` and computes its row again, once."""

from __future__ import annotations

import pandas as pd
import pytest

from pp_cluster.cli import main
from pp_cluster.farm.sweep import run_sweep
from pp_cluster.farm.trial import read_ok_attacks
from pp_cluster.results.store import KEY_COLUMN, ResultStore, UnreadableFile

pytestmark = pytest.mark.farm


def test_truncated_attack_file_is_skipped_quarantined_and_recomputed(
    tiny_sweep, ray_cluster, tmp_path, capsys
):
    root = tmp_path / "res"
    spec = tiny_sweep(root, name="damaged", partitions=("pool1",), lams=(0.0, 1.0), attackers=("fc",))
    run_sweep(spec, verbose=False)
    attacks_dir = root / "attacks" / "sweep=damaged"
    files = sorted(p for p in attacks_dir.glob("*.parquet") if p.name != "empty.parquet")
    assert len(files) == 2
    bad, good = files
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    untouched = {p: p.stat().st_mtime_ns for p in root.rglob("*.parquet") if p != bad}
    capsys.readouterr()

    # status names the file and still reports the rest.
    assert main(["status", str(root)]) == 0
    out, err = capsys.readouterr()
    assert bad.name in err and "_quarantine" in err
    assert "sweep damaged: 2 models" in out and "1 attacks" in out

    # The report's reader skips it with a warning.
    from analysis.results_md import write_markdown

    with pytest.warns(UnreadableFile, match=bad.name):
        write_markdown(str(root), str(tmp_path / "page.md"))
    assert (tmp_path / "page.md").stat().st_size > 0

    # Another model's trial reads only its own attack files: the damaged one cannot fail it.
    store = ResultStore(str(root))
    good_row = pd.read_parquet(good)
    rows = read_ok_attacks(store, "damaged", good_row["model_id"].item(), {good.stem: None})
    assert [r["attack_id"] for r in rows] == [good.stem]

    # --resume: the file is moved aside (not deleted), its attack computed again, once.
    run_sweep(spec, resume=True, verbose=False)
    quarantined = list((root / "_quarantine" / "attacks" / "sweep=damaged").iterdir())
    assert [q.name.split(".parquet")[0] for q in quarantined] == [bad.stem]
    attacks = pd.read_parquet(root / "attacks")
    assert len(attacks) == 2 and attacks["attack_id"].is_unique and bad.stem in set(attacks["attack_id"])
    assert (attacks["status"] == "ok").all()
    for p, mtime in untouched.items():
        assert p.stat().st_mtime_ns == mtime, f"{p} was rewritten"


def test_documented_reads_work_before_any_row(tmp_path):
    store = ResultStore(str(tmp_path))
    store.ensure_tables("nothing_yet")
    for table in ("models", "attacks", "epochs"):
        df = pd.read_parquet(tmp_path / table)
        assert df.empty and KEY_COLUMN[table] in df.columns
        assert store.done_keys(table, "nothing_yet") == set()
    assert list(pd.read_parquet(tmp_path / "attacks").columns)[:3] == ["model_id", "attack_id", "attacker"]
