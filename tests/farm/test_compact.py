"""Compaction (issue 16, the store at scale): a sweep's one-row files packed into a few large
ones; every reader sees the same rows; a resumed sweep finds packed rows by key, writes
nothing twice and recomputes only what is missing."""

from __future__ import annotations

import pandas as pd
import pytest
from test_store import attack_row, epoch_rows, model_row  # noqa: E402 (the store tests' row factories)

from pp_cluster.cli import main
from pp_cluster.results.compact import compact
from pp_cluster.results.store import ResultStore


def _fill(store: ResultStore, n: int) -> None:
    for m in range(n):
        store.write("models", "s", f"m{m}", [model_row(f"m{m}")])
        store.write("epochs", "s", f"m{m}", epoch_rows(f"m{m}"))
        for a in range(3):
            status = "failed" if (m, a) == (0, 0) else "ok"
            row = attack_row(
                f"a{m}x{a}", f"m{m}", status=status, error="boom" if status == "failed" else None
            )
            store.write("attacks", "s", f"a{m}x{a}", [row])


def _views(store: ResultStore, root) -> dict[str, pd.DataFrame]:
    keys = {"models": "model_id", "attacks": "attack_id", "epochs": ["model_id", "epoch"]}
    out = {}
    for table, key in keys.items():
        for via, df in (("store", store.read(table, "s")), ("pandas", pd.read_parquet(root / table))):
            df = df.assign(sweep=df["sweep"].astype(str))
            out[f"{table}/{via}"] = df.sort_values(key, ignore_index=True)
    return out


def test_compaction_keeps_every_readers_rows(tmp_path):
    store = ResultStore(str(tmp_path))
    _fill(store, 30)
    before, keys_before = _views(store, tmp_path), {t: store.done_keys(t, "s") for t in ("models", "attacks")}
    merged = compact(store, "s", rows_per_file=40)
    assert merged == {"models": 30, "attacks": 89, "epochs": 30}  # the failed attack stays a small file
    after = _views(store, tmp_path)
    for view, df in before.items():
        pd.testing.assert_frame_equal(after[view], df, check_categorical=False, obj=view)
    assert {t: store.done_keys(t, "s") for t in ("models", "attacks")} == keys_before
    files = sorted(p.name for p in (tmp_path / "attacks" / "sweep=s").glob("*.parquet"))
    assert len([f for f in files if f.startswith("compact-")]) == 3  # 89 rows, 40 per file
    # Lookups by key find packed rows; marking a packed model rewrites only its own row.
    assert store.exists("models", "s", "m7") and not store.exists("models", "s", "m99")
    assert store.read("attacks", "s", keys=["a5x1", "a0x0"])["attack_id"].tolist() == ["a0x0", "a5x1"]
    store.update_column("models", "s", "m7", "pareto", True)
    pareto = store.read("models", "s").set_index("model_id")["pareto"]
    assert pareto["m7"] and pareto.drop("m7").isna().all()
    # Compacting again packs nothing twice.
    assert compact(store, "s") == {"models": 0, "attacks": 0, "epochs": 0}
    # A key written again after it was packed: readers keep one copy, the new one.
    store.write("models", "s", "m3", [model_row("m3", test_acc=0.5)])
    models = store.read("models", "s")
    assert models["model_id"].is_unique and models.set_index("model_id").loc["m3", "test_acc"] == 0.5


@pytest.mark.farm
def test_a_compacted_sweep_resumes_exactly_once(tiny_sweep, ray_cluster, tmp_path, capsys):
    from pp_cluster.farm.sweep import run_sweep

    root = tmp_path / "res"
    spec = tiny_sweep(root, name="packed", partitions=("pool1",), lams=(0.0, 1.0), attackers=("fc",))
    run_sweep(spec, verbose=False)
    missing = next((root / "attacks" / "sweep=packed").glob("[0-9a-f]*.parquet"))
    missing.unlink()  # an attack that had not finished
    assert main(["compact", str(root)]) == 0
    assert "models 2 files merged" in capsys.readouterr().out
    packed = {p: p.stat().st_mtime_ns for p in root.rglob("compact-*.parquet")}
    run_sweep(spec, resume=True, verbose=False)
    attacks, models = pd.read_parquet(root / "attacks"), pd.read_parquet(root / "models")
    assert len(models) == 2 and models["model_id"].is_unique
    assert len(attacks) == 2 and attacks["attack_id"].is_unique and missing.stem in set(attacks["attack_id"])
    assert {p: p.stat().st_mtime_ns for p in root.rglob("compact-*.parquet")} == packed
    assert missing.exists()  # recomputed as a small file, beside the packed rows
