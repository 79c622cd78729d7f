"""Results and Ray's storage on ``s3://``, against a local S3-compatible server (moto's, on
127.0.0.1; no cloud is reachable here): a tiny sweep writes its three tables and Ray Tune's
and Ray Train's state to the bucket, nothing lands on local disk, and pandas reads the tables
back from S3 exactly as the farm's ResultStore does.

The sweep runs in a child process (this file run as a script) that starts its own Ray, as
``python sweeps/…py --results s3://…`` does, so that the S3 endpoint and credentials in its
environment reach every Ray worker; the farm tests' shared Ray (conftest) was started
without them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest

pytestmark = pytest.mark.farm

HERE = Path(__file__).resolve().parent
BUCKET, PREFIX, SWEEP = "pp-results", "runs/tiny", "s3tiny"
KEYS = {"models": "model_id", "attacks": "attack_id", "epochs": "model_id"}
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
               "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3_endpoint(monkeypatch):
    """A moto S3 server on a free port of 127.0.0.1 with an empty bucket; this process's
    AWS settings point at it (and at nothing else)."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.mark.timeout(600)
def test_sweep_writes_its_tables_to_s3_and_pandas_reads_them_back_identical(s3_endpoint, tmp_path):
    import boto3

    from pp_cluster.farm.store import ResultStore

    results = f"s3://{BUCKET}/{PREFIX}"
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    child = subprocess.run([sys.executable, __file__, results], env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=540)
    assert child.returncode == 0, (child.stdout + child.stderr)[-6000:]

    # Everything went to the bucket: the tables and Ray's experiment state and checkpoints.
    listing = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=BUCKET, Prefix=PREFIX + "/")
    keys = [o["Key"] for o in listing.get("Contents", [])]
    for table in KEYS:
        assert any(k.startswith(f"{PREFIX}/{table}/sweep={SWEEP}/") and k.endswith(".parquet") for k in keys), keys
    assert any(k.startswith(f"{PREFIX}/_ray/{SWEEP}/") for k in keys), keys
    assert any(k.startswith(f"{PREFIX}/_ray/train-") and k.endswith("/state.pt") for k in keys), keys
    # ... and nothing to a local directory named after the URI.
    assert sorted(p.name for p in tmp_path.iterdir()) == [], sorted(tmp_path.iterdir())

    store = ResultStore(results)
    expected_rows = {"models": 1, "attacks": 1, "epochs": 1}
    path_fs = pafs.S3FileSystem(endpoint_override=s3_endpoint, access_key="testing", secret_key="testing",
                                region="us-east-1")
    for table, key in KEYS.items():
        ours = store.read(table, SWEEP)
        assert len(ours) == expected_rows[table] and ours[key].is_unique, ours
        # pandas as docs/cluster.md shows it (pyarrow's S3, endpoint from AWS_ENDPOINT_URL),
        # with fsspec's storage_options, and with the endpoint given explicitly as a filesystem.
        options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_endpoint}}
        for via in (pd.read_parquet(f"{results}/{table}"),
                    pd.read_parquet(f"{results}/{table}", storage_options=options),
                    pd.read_parquet(f"{BUCKET}/{PREFIX}/{table}", filesystem=path_fs)):
            assert sorted(via.columns) == sorted(ours.columns)
            pd.testing.assert_frame_equal(
                via[ours.columns].sort_values(key, ignore_index=True), ours.sort_values(key, ignore_index=True))
    models = store.read("models", SWEEP)
    assert (models["status"] == "ok").all() and models["test_acc"].notna().all()


def _child(results: str) -> None:
    sys.path.insert(0, str(HERE))  # conftest's tiny sweep builder
    from conftest import _tiny_sweep

    from pp_cluster.farm.sweep import run_sweep

    spec = _tiny_sweep(results, name=SWEEP, partitions=("pool1",), lams=(0.0,), attackers=("fc",))
    outcome = run_sweep(spec, num_cpus=2)
    if outcome.n_errored:
        raise SystemExit(f"{outcome.n_errored} trial(s) errored")


if __name__ == "__main__":
    _child(sys.argv[1])
