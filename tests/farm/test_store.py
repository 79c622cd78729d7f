"""The Parquet results store: dtypes, idempotent atomic writes, validation, S3. No Ray."""

from __future__ import annotations

import datetime as dt
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pytest
from PIL import Image

from pp_cluster.results.store import (
    SCHEMAS,
    TABLES,
    ResultStore,
    content_id,
    empty_frame,
    provenance,
    schema_markdown,
)

NOW = dt.datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=dt.UTC)
REPO = Path(__file__).resolve().parents[2]


def model_row(model_id: str = "m0", **changes) -> dict:
    row = {
        "model_id": model_id,
        "trial_id": "t_0001",
        "seed": 3,
        "dataset": "lfw",
        "arch": "face_cnn",
        "partition": "pool2",
        "lam": 0.1,
        "defenders": "deconv,fc",
        "distance": "ssim",
        "defense": "partition",
        "epochs": 5,
        "lr": 1e-3,
        "batch_size": 32,
        "test_acc": 0.9,
        "train_acc": 0.95,
        "final_task_loss": 0.2,
        "final_distance": 0.4,
        "status": "ok",
        "train_seconds": 12.5,
        "started_at": NOW,
        "finished_at": NOW,
        "config_json": '{"arch": "face_cnn"}',
        **provenance(),
    }
    return {**row, **changes}


def attack_row(attack_id: str = "a0", model_id: str = "m0", **changes) -> dict:
    row = {
        "model_id": model_id,
        "attack_id": attack_id,
        "attacker": "deconv",
        "attacker_arch": "Conv(8)",
        "attacker_data": "train",
        "attacker_fraction": 1.0,
        "mse": 0.01,
        "ssim": 0.8,
        "psnr": 20.0,
        "dpd": None,
        "dpd_reason": "no LPIPS weights offline",
        "reprint_acc": 0.7,
        "n_eval": 64,
        "best_epoch": 3,
        "train_seconds": 4.0,
        "status": "ok",
        "host": "h",
        "gpu": None,
        "finished_at": NOW,
    }
    return {**row, **changes}


def epoch_rows(model_id: str = "m0", n: int = 3) -> list[dict]:
    return [
        {
            "model_id": model_id,
            "epoch": e,
            "task_loss": 1.0 / (e + 1),
            "distance": None if e == 0 else 0.5,
            "train_acc": 0.5,
            "test_acc": 0.6,
            "lr": 1e-3,
            "seconds": 2.0,
        }
        for e in range(n)
    ]


@pytest.fixture
def store(tmp_path) -> ResultStore:
    s = ResultStore(str(tmp_path / "results"))
    s.check_writable()
    return s


EXPECTED = {
    "models": {
        "sweep": "category",
        "model_id": "str",
        "seed": "int64",
        "lam": "float64",
        "test_acc": "float64",
        "diverged_epoch": "Int64",
        "pareto": "boolean",
        "error": "str",
        "gpu": "str",
        "started_at": "datetime64[us, UTC]",
        "finished_at": "datetime64[us, UTC]",
    },
    "attacks": {
        "sweep": "category",
        "mse": "float64",
        "dpd": "float64",
        "n_eval": "Int64",
        "n_cg": "Int64",
        "attacker": "str",
        "finished_at": "datetime64[us, UTC]",
    },
    "epochs": {"epoch": "int64", "distance": "float64", "test_acc": "float64"},
    "reconstructions": {"index": "int64", "original": "object"},
}


def test_round_trip_dtypes_and_values(store):
    store.write("models", "s1", "m0", [model_row()])
    store.write("models", "s1", "m1", [model_row("m1", status="diverged", test_acc=None, diverged_epoch=2)])
    store.write("attacks", "s1", "a0", [attack_row()])
    store.write(
        "attacks",
        "s1",
        "a1",
        [
            {
                "model_id": "m0",
                "attack_id": "a1",
                "attacker": "fc",
                "status": "failed",
                "error": "CUDA OOM",
                "finished_at": NOW,
            }
        ],
    )
    store.write("epochs", "s1", "m0", epoch_rows())
    store.write_reconstructions("s1", "m0", "a0", np.full((2, 1, 4, 4), 0.5), np.zeros((2, 1, 4, 4)))
    for table in TABLES:
        for df in (store.read(table), pd.read_parquet(f"{store.base}/{table}")):
            assert sorted(df.columns) == sorted(SCHEMAS[table].names)
            for col, dtype in EXPECTED[table].items():
                assert str(df[col].dtype) == dtype, (table, col)
            numeric = [f.name for f in SCHEMAS[table] if str(f.type) in ("int64", "double", "bool")]
            assert not any(df[c].dtype == object for c in numeric)
        assert list(store.read(table).columns) == SCHEMAS[table].names

    models = store.read("models").set_index("model_id")
    assert models.loc["m0", "seed"] == 3 and models.loc["m0", "lam"] == 0.1
    assert models.loc["m0", "started_at"] == pd.Timestamp(NOW)
    assert pd.isna(models.loc["m1", "test_acc"]) and models.loc["m1", "diverged_epoch"] == 2
    assert pd.isna(models.loc["m0", "diverged_epoch"]) and pd.isna(models.loc["m0", "pareto"])
    attacks = store.read("attacks").set_index("attack_id")
    assert attacks.loc["a0", "n_eval"] == 64 and pd.isna(attacks.loc["a1", "n_eval"])
    assert attacks.loc["a1", "error"] == "CUDA OOM" and pd.isna(attacks.loc["a1", "mse"])
    epochs = store.read("epochs")
    assert epochs["epoch"].tolist() == [0, 1, 2] and epochs["distance"].isna().tolist() == [
        True,
        False,
        False,
    ]


def test_reconstructions_are_pngs_of_the_images(store):
    rng = np.random.default_rng(0)
    orig, rec = rng.random((3, 3, 5, 6)), rng.random((3, 3, 5, 6))
    store.write_reconstructions("s", "m0", "a0", orig, rec)
    df = store.read("reconstructions")
    assert df["index"].tolist() == [0, 1, 2]
    for i in range(3):
        for col, images in (("original", orig), ("reconstruction", rec)):
            decoded = np.asarray(Image.open(io.BytesIO(df[col][i])))
            assert decoded.shape == (5, 6, 3)
            np.testing.assert_array_equal(
                decoded, np.round(images[i].transpose(1, 2, 0) * 255).astype(np.uint8)
            )
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        store.write_reconstructions("s", "m0", "a1", orig * 2, rec)
    with pytest.raises(ValueError, match="differ in shape"):
        store.write_reconstructions("s", "m0", "a1", orig, rec[:2])


def test_rewriting_a_key_replaces_its_rows(store):
    store.write("epochs", "s", "m0", epoch_rows(n=3))
    store.write("epochs", "s", "m0", epoch_rows(n=2))
    store.write("models", "s", "m0", [model_row(test_acc=0.5)])
    store.write("models", "s", "m0", [model_row(test_acc=0.7)])
    assert len(store.read("epochs")) == 2
    models = store.read("models")
    assert models["test_acc"].tolist() == [0.7]
    assert sorted(p.name for p in Path(store.base, "models", "sweep=s").iterdir()) == ["m0.parquet"]


def test_a_crash_mid_write_is_invisible(store):
    store.write("models", "s", "m0", [model_row()])
    sweep_dir = Path(store.base, "models", "sweep=s")
    good = (sweep_dir / "m0.parquet").read_bytes()
    (sweep_dir / ".m1.parquet.tmp-deadbeef").write_bytes(good[: len(good) // 2])  # half-written file
    for df in (store.read("models"), store.read("models", "s"), pd.read_parquet(f"{store.base}/models")):
        assert df["model_id"].tolist() == ["m0"]
    assert store.done_keys("models", "s") == {"m0"} and not store.exists("models", "s", "m1")


def test_done_keys_exists_and_sweeps(store):
    assert store.done_keys("attacks", "s") == set()
    assert not store.exists("attacks", "s", "a0")
    for i in range(3):
        store.write("attacks", "s" if i < 2 else "other", f"a{i}", [attack_row(f"a{i}")])
    assert store.done_keys("attacks", "s") == {"a0", "a1"}
    assert store.exists("attacks", "other", "a2") and not store.exists("attacks", "s", "a2")
    assert store.read("attacks", "other")["attack_id"].tolist() == ["a2"]
    both = store.read("attacks")
    assert both.groupby("sweep", observed=True).size().to_dict() == {"other": 1, "s": 2}


def test_empty_read_has_columns_and_dtypes(store):
    for table in TABLES:
        df = store.read(table)
        assert df.empty and list(df.columns) == SCHEMAS[table].names
        assert df.dtypes.equals(empty_frame(table).dtypes)
    assert str(store.read("models")["seed"].dtype) == "int64"
    assert str(store.read("attacks")["n_eval"].dtype) == "Int64"


def test_update_column_marks_pareto(store):
    store.write("models", "s", "m0", [model_row()])
    store.write("models", "s", "m1", [model_row("m1")])
    store.update_column("models", "s", "m1", "pareto", True)
    df = store.read("models").set_index("model_id")
    assert df.loc["m1", "pareto"] is np.True_ and pd.isna(df.loc["m0", "pareto"])
    assert df.loc["m1", "test_acc"] == 0.9 and str(df["pareto"].dtype) == "boolean"
    assert not list(Path(store.base, "models", "sweep=s").glob(".*"))  # no temp file left
    with pytest.raises(ValueError, match="pareto must be a bool"):
        store.update_column("models", "s", "m1", "pareto", 1)
    with pytest.raises(ValueError, match="cannot update column 'nope'"):
        store.update_column("models", "s", "m1", "nope", 1)
    with pytest.raises(FileNotFoundError, match="m9"):
        store.update_column("models", "s", "m9", "pareto", True)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"colour": "red", "zz": 1}, "unknown columns colour, zz"),
        ({"seed": 1.5}, "models.seed must be an int"),
        ({"seed": True}, "models.seed must be an int"),
        ({"lam": True}, "models.lam must be a number"),
        ({"lam": "0.1"}, "models.lam must be a number"),
        ({"arch": 3}, "models.arch must be a str"),
        ({"started_at": dt.datetime(2026, 1, 1)}, "started_at must be a timezone-aware datetime"),
        ({"status": "okay"}, "models.status must be one of diverged, failed, ok"),
        ({"defense": "magic"}, "models.defense must be one of"),
        ({"status": None}, "models.status is required"),
        ({"model_id": "other"}, "model_id must be 'm0'"),
        ({"sweep": "elsewhere"}, "sweep must be 's'"),
    ],
)
def test_bad_rows_are_refused(store, changes, message):
    with pytest.raises(ValueError, match=message):
        store.write("models", "s", "m0", [model_row(**changes)])
    assert not store.exists("models", "s", "m0")


def test_bad_names_are_refused(store):
    with pytest.raises(ValueError, match="unknown table 'model'"):
        store.write("model", "s", "m0", [model_row()])
    with pytest.raises(ValueError, match="sweep '../up'"):
        store.write("models", "../up", "m0", [model_row()])
    with pytest.raises(ValueError, match="key '.hidden'"):
        store.write("models", "s", ".hidden", [model_row(".hidden")])
    with pytest.raises(ValueError, match="non-empty list of dicts"):
        store.write("models", "s", "m0", [])
    with pytest.raises(ValueError, match="results root"):
        ResultStore("")


def test_unwritable_root_is_named(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    root = str(blocker / "results")
    with pytest.raises(ValueError, match=f"results root '{root}' is not writable"):
        ResultStore(root).check_writable()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_root_is_named(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(ValueError, match="is not writable"):
            ResultStore(str(tmp_path)).check_writable()
    finally:
        tmp_path.chmod(0o755)


def test_check_writable_leaves_nothing(tmp_path):
    ResultStore(str(tmp_path / "r")).check_writable()
    assert list((tmp_path / "r").iterdir()) == []


def test_content_id_is_short_stable_and_order_free():
    a = content_id("model", "s", {"lam": 0.1, "arch": "face_cnn"})
    assert a == content_id("model", "s", {"arch": "face_cnn", "lam": 0.1})
    assert len(a) == 16 and int(a, 16) >= 0
    assert a != content_id("model", "s", {"arch": "face_cnn", "lam": 0.2})


def test_provenance_and_no_ray_import():
    p = provenance()
    assert set(p) == {"package_version", "git_sha", "ray_version", "torch_version", "host", "gpu", "cpu"}
    assert p["package_version"] and p["torch_version"] and p["host"]
    assert p["cpu"].endswith(("(bf16 units: yes)", "(bf16 units: no)"))  # which precision a CPU defaults to
    if (REPO / ".git").exists():
        assert p["git_sha"] is not None and len(p["git_sha"]) == 40
    # Analysts read results without a cluster or a GPU stack: importing the store pulls neither.
    code = "import sys, pp_cluster.results.store; assert not {'ray', 'torch'} & set(sys.modules), sys.modules.keys()"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_worker_without_a_checkout_records_the_drivers_commit(monkeypatch):
    from pp_cluster.results import store

    monkeypatch.setenv(store.GIT_SHA_ENV, "d" * 40)  # what the driver's runtime env hands on
    monkeypatch.setattr(store, "_git_sha", lambda repo: None)  # an installed copy on a cluster node
    assert store.checkout_sha() == "d" * 40
    monkeypatch.setattr(store, "_git_sha", lambda repo: "c" * 40)  # its own checkout comes first
    assert store.checkout_sha() == "c" * 40
    monkeypatch.setattr(store, "_git_sha", lambda repo: None)
    monkeypatch.delenv(store.GIT_SHA_ENV)
    assert store.checkout_sha() is None


def test_docs_match_the_schemas():
    assert schema_markdown() in (REPO / "docs" / "schema.md").read_text()


# -- S3, through a local moto server ------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint():
    server_mod = pytest.importorskip("moto.server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"{host}:{port}"
    fs = pafs.S3FileSystem(
        endpoint_override=endpoint,
        scheme="http",
        access_key="testing",
        secret_key="testing",
        region="us-east-1",
        allow_bucket_creation=True,
    )
    fs.create_dir("results-bucket")
    yield endpoint, fs
    server.stop()


def test_s3_with_explicit_filesystem(s3_endpoint):
    _, fs = s3_endpoint
    store = ResultStore("results-bucket/explicit", filesystem=fs)
    store.check_writable()
    store.write("models", "s", "m0", [model_row(test_acc=0.5)])
    store.write("models", "s", "m0", [model_row(test_acc=0.6)])
    store.write("attacks", "s", "a0", [attack_row()])
    store.update_column("models", "s", "m0", "pareto", False)
    models = store.read("models")
    assert models["test_acc"].tolist() == [0.6] and models["pareto"].tolist() == [False]
    assert str(models["diverged_epoch"].dtype) == "Int64"
    assert store.done_keys("attacks", "s") == {"a0"} and store.exists("models", "s", "m0")
    names = [i.path for i in fs.get_file_info(pafs.FileSelector("results-bucket/explicit", recursive=True))]
    assert not [n for n in names if "/." in n]  # one PUT per file: no temp or probe objects


def test_s3_uri_honours_endpoint_env(s3_endpoint, monkeypatch):
    endpoint, _ = s3_endpoint
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{endpoint}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = ResultStore("s3://results-bucket/from-uri")
    store.check_writable()
    store.write("epochs", "s", "m0", epoch_rows())
    assert store.read("epochs", "s")["epoch"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("n_models", [5, 150])
@pytest.mark.parametrize("compacted", [False, True])
def test_a_trials_reads_do_not_grow_with_its_sweep(tmp_path, n_models, compacted):
    """What one trial reads (its model row, its attacks) is looked up by key: the same number
    of listings, lookups and opens in a sweep of 5 models as in one of 150, before and after
    compaction (results.compact)."""
    from pp_cluster.farm.trial import read_model_row, read_ok_attacks
    from pp_cluster.results.fs import counting

    fs, calls = counting(pafs.LocalFileSystem())
    store = ResultStore(str(tmp_path / "res"), filesystem=fs)
    for m in range(n_models):
        store.write("models", "big", f"m{m}", [model_row(f"m{m}")])
        for a in range(4):
            store.write("attacks", "big", f"a{m}x{a}", [attack_row(f"a{m}x{a}", f"m{m}")])
    if compacted:
        from pp_cluster.results.compact import compact

        compact(store, "big", rows_per_file=100)
    calls.update(dict.fromkeys(calls, 0))
    plan = {f"a3x{a}": None for a in range(5)}  # 4 done, 1 still to do
    assert len(read_ok_attacks(store, "big", "m3", plan)) == 4
    assert read_model_row(store, "big", "m3")["model_id"] == "m3"
    # (lookups: each key's small file, and the compaction index; opens: the files holding
    # the rows, and the index when there is one)
    expected = {"list": 0, "info": 8, "open": 5} if not compacted else {"list": 0, "info": 8}
    assert {k: v for k, v in calls.items() if k in expected} == expected
    if compacted:  # the index and the one packed file each table's rows are in (of 6 for attacks)
        assert calls["open"] == 4
