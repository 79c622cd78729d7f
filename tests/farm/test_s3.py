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

import io
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import pyarrow.fs as pafs
import pytest

pytestmark = pytest.mark.farm

HERE = Path(__file__).resolve().parent
BUCKET, PREFIX, SWEEP = "pp-results", "runs/tiny", "s3tiny"
KEYS = {"models": "model_id", "attacks": "attack_id", "epochs": "model_id"}
# Distinctive credentials for the URI (moto accepts any): easy to grep for.
URI_KEY, URI_SECRET = "AKIAPPCLUSTERURIKEY", "uri/Secret+pp-cluster-7f3a"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


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
    for name, value in {
        **CREDENTIALS,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.mark.timeout(600)
def test_sweep_writes_its_tables_to_s3_and_pandas_reads_them_back_identical(s3_endpoint, tmp_path):
    import boto3

    from pp_cluster.results.store import ResultStore

    results = f"s3://{BUCKET}/{PREFIX}"
    # The child has its credentials only in the URI (issue 18, item 6): they must reach every
    # worker, and never stdout/stderr, a table, the manifest or Ray's pickled state.
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    env["RAY_AUTH_MODE"] = "disabled"
    env.pop("RAY_ADDRESS", None)
    with_credentials = f"s3://{URI_KEY}:{quote(URI_SECRET, safe='')}@{BUCKET}/{PREFIX}"
    child = subprocess.run(
        [sys.executable, __file__, with_credentials],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert child.returncode == 0, (child.stdout + child.stderr)[-6000:]
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    leaks = [
        where
        for where, text in [("stdout", child.stdout), ("stderr", child.stderr)]
        if URI_SECRET in text or quote(URI_SECRET, safe="") in text
    ]
    for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        body = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
        text = repr(pd.read_parquet(io.BytesIO(body)).to_dict()) if obj["Key"].endswith(".parquet") else ""
        if URI_SECRET.encode() in body or URI_SECRET[:12].encode() in body or URI_SECRET in text:
            leaks.append(obj["Key"])
    assert leaks == [], f"the URI's secret leaked into {leaks}"
    assert "***@" in child.stderr or URI_KEY not in child.stderr

    # Everything went to the bucket: the tables and Ray's experiment state and checkpoints.
    listing = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=BUCKET, Prefix=PREFIX + "/")
    keys = [o["Key"] for o in listing.get("Contents", [])]
    for table in KEYS:
        assert any(
            k.startswith(f"{PREFIX}/{table}/sweep={SWEEP}/") and k.endswith(".parquet") for k in keys
        ), keys
    assert any(k.startswith(f"{PREFIX}/_ray/{SWEEP}/") for k in keys), keys
    assert any(k.startswith(f"{PREFIX}/_ray/train-") and k.endswith("/state.pt") for k in keys), keys
    # ... and nothing to a local directory named after the URI.
    assert sorted(p.name for p in tmp_path.iterdir()) == [], sorted(tmp_path.iterdir())

    store = ResultStore(results)
    expected_rows = {"models": 1, "attacks": 1, "epochs": 1}
    path_fs = pafs.S3FileSystem(
        endpoint_override=s3_endpoint, access_key="testing", secret_key="testing", region="us-east-1"
    )
    for table, key in KEYS.items():
        ours = store.read(table, SWEEP)
        assert len(ours) == expected_rows[table] and ours[key].is_unique, ours
        # pandas as docs/cluster.md shows it (pyarrow's S3, endpoint from AWS_ENDPOINT_URL),
        # with fsspec's storage_options, and with the endpoint given explicitly as a filesystem.
        options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_endpoint}}
        for via in (
            pd.read_parquet(f"{results}/{table}"),
            pd.read_parquet(f"{results}/{table}", storage_options=options),
            pd.read_parquet(f"{BUCKET}/{PREFIX}/{table}", filesystem=path_fs),
        ):
            assert sorted(via.columns) == sorted(ours.columns)
            pd.testing.assert_frame_equal(
                via[ours.columns].sort_values(key, ignore_index=True),
                ours.sort_values(key, ignore_index=True),
            )
    models = store.read("models", SWEEP)
    assert (models["status"] == "ok").all() and models["test_acc"].notna().all()


@pytest.mark.parametrize("server", ["silent", "refusing"])
def test_an_object_store_that_never_answers_is_a_clear_error_within_30_s(server, tmp_path):
    """A listener that accepts connections and never answers (and a port nobody listens on):
    the CLI fails before Ray with ``pp-farm: error:`` naming the endpoint, within 30 s."""
    import socket
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    if server == "silent":
        listener.listen(16)  # the kernel accepts; nobody ever reads or answers
    else:
        listener.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        CREDENTIALS,
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_EC2_METADATA_DISABLED="true",
        RAY_AUTH_MODE="disabled",
        NO_PROXY="127.0.0.1,localhost",
    )
    t0 = time.monotonic()
    try:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pp_cluster.cli",
                "sweep",
                "lfw_grid",
                "--quick",
                "--results",
                f"s3://{BUCKET}/x",
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        listener.close()
    seconds = time.monotonic() - t0
    assert run.returncode == 2, run.stderr[-3000:]
    assert run.stderr.startswith("pp-farm: error:") and f"127.0.0.1:{port}" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    assert seconds <= 30, f"took {seconds:.0f} s"


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
