"""Compaction: merge a sweep's one-row files into a few large ones, readers seeing the same rows.

Every result is written as its own small file (exactly once, atomically, by content id). At
thousands of models that is thousands of listings and opens per report on an object store.
``compact`` packs a table's small files into ``compact-<id>.parquet`` files (at most
``rows_per_file`` rows each, sorted by key, so a lookup by key reads one row group), adds them
to the table folder's ``_compacted.json`` index, and only then deletes the small files:

- a reader (``ResultStore.read``, ``pd.read_parquet``) sees the same rows before and after;
- a compaction cut short leaves keys in both places; ``ResultStore.read`` keeps one copy,
  the small file's (so does a key packed earlier and written again), and ``compact`` never
  packs a key twice;
- only final rows are packed: failed attack rows stay small files, so that a resumed sweep
  can replace them, and a resumed sweep finds packed rows by key and never writes them again.

Run it while no driver runs the sweep (``pp-farm compact`` takes the sweep's lease).
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc

from pp_cluster.config import content_id
from pp_cluster.results.rules import OK
from pp_cluster.results.store import (
    COMPACT_INDEX,
    COMPACT_PREFIX,
    EMPTY_KEY,
    FILE_SCHEMAS,
    KEY_COLUMN,
    ResultStore,
)

ROWS_PER_FILE = 50_000


def compact(
    store: ResultStore,
    sweep: str,
    tables: tuple[str, ...] = ("models", "attacks", "epochs"),
    rows_per_file: int = ROWS_PER_FILE,
) -> dict[str, int]:
    """Pack each table's small files of ``sweep``; returns how many files each table merged."""
    return {table: _compact_table(store, table, sweep, rows_per_file) for table in tables}


def _small_files(store: ResultStore, table: str, sweep: str) -> list[str]:
    names = {p: p.rsplit("/", 1)[1] for p in store._files(table, sweep)}
    return [p for p, n in names.items() if not n.startswith(COMPACT_PREFIX) and n != f"{EMPTY_KEY}.parquet"]


def _compact_table(store: ResultStore, table: str, sweep: str, rows_per_file: int) -> int:
    files = _small_files(store, table, sweep)
    if not files:
        return 0
    key = KEY_COLUMN[table]
    rows = store._table(table, files)  # (unreadable files are left where they are, and reported)
    if rows is None:
        return 0
    if table == "attacks":  # failed rows stay replaceable by a resumed sweep
        rows = rows.filter(pc.equal(rows.column("status"), OK))
    index = store.compacted_index(table, sweep)
    packed_before = store.keys_in(table, store.compacted(table, sweep))
    if packed_before:  # a key already packed keeps its small file (the reader's choice)
        rows = rows.filter(pc.invert(pc.is_in(rows.column(key), value_set=pa.array(sorted(packed_before)))))
    rows = rows.drop_columns(["sweep"]).select(FILE_SCHEMAS[table].names).cast(FILE_SCHEMAS[table])
    rows = rows.sort_by([(key, "ascending")])
    for start in range(0, rows.num_rows, rows_per_file):
        part = rows.slice(start, rows_per_file)
        name = f"{COMPACT_PREFIX}{content_id(table, sweep, part.column(key).to_pylist())}.parquet"
        store._put(f"{store._dir(table, sweep)}/{name}", part)
        keys = part.column(key)
        entry = {"name": name, "min": keys[0].as_py(), "max": keys[-1].as_py()}
        if entry not in index:
            index.append(entry)
    _write_index(store, table, sweep, index)
    packed = set(rows.column(key).to_pylist())
    merged = 0
    for path in files:
        if path.rsplit("/", 1)[1].removesuffix(".parquet") in packed:
            store.fs.delete_file(path)
            merged += 1
    return merged


def _write_index(store: ResultStore, table: str, sweep: str, entries: list[dict[str, str]]) -> None:
    path = f"{store._dir(table, sweep)}/{COMPACT_INDEX}"

    def write(p: str) -> None:
        with store.fs.open_output_stream(p) as f:
            f.write(json.dumps(sorted(entries, key=lambda e: e["name"]), indent=0).encode())

    from pp_cluster.results.fs import replace_file

    replace_file(store.fs, path, write)
