"""A results root is claimed by one driver and one spec (issue 18, items 2 and 5): a changed
spec on --resume is refused with the fields that differ, a fresh run of an existing sweep is
refused, a second live driver is refused naming the holder, a dead holder's lease is taken
over. All of it happens before Ray starts (``no_ray``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from pp_cluster.config import SpecError
from pp_cluster.farm import manifest
from pp_cluster.farm.lease import LEASE, Lease, LeaseHeld
from pp_cluster.farm.sweep import run_sweep

pytestmark = pytest.mark.farm


@pytest.fixture
def no_ray(monkeypatch):
    import ray

    def refuse(*a, **k):
        raise AssertionError("Ray was started although the run should have been refused")

    monkeypatch.setattr(ray, "init", refuse)


def test_resume_with_a_changed_spec_is_refused_naming_the_fields(tiny_sweep, tmp_path, no_ray):
    spec = tiny_sweep(tmp_path / "res", name="claimed").validate()
    manifest.write(spec.results_uri(), spec)
    changed = spec.with_(epochs=3, lams=(0.0, 1.0, 2.0))
    with pytest.raises(SpecError) as err:
        run_sweep(changed, resume=True, verbose=False)
    msg = str(err.value)
    assert "epochs: 1 -> 3" in msg and "lams: [0.0, 1.0] -> [0.0, 1.0, 2.0]" in msg
    assert "attackers" not in msg  # only the fields that differ
    # How and where a sweep runs is not part of its identity.
    from pp_cluster.config import Resources

    assert (
        manifest.differences(
            manifest.identity(spec), manifest.identity(spec.with_(resources=Resources(pool_size=7)))
        )
        == []
    )


def test_fresh_run_of_an_existing_sweep_is_refused(tiny_sweep, tmp_path, no_ray):
    spec = tiny_sweep(tmp_path / "res", name="exists").validate()
    manifest.write(spec.results_uri(), spec)
    with pytest.raises(SpecError, match="already exists.*--resume"):
        run_sweep(spec, verbose=False)
    # A sweep from before manifests: its Tune state alone marks it as existing.
    legacy = tiny_sweep(tmp_path / "res2", name="legacy").validate()
    state = tmp_path / "res2" / "_ray" / "legacy"
    state.mkdir(parents=True)
    (state / "tuner.pkl").write_bytes(b"not read")
    with pytest.raises(SpecError, match="already exists"):
        run_sweep(legacy, verbose=False)
    # And the refusals left no lease behind.
    assert not (tmp_path / "res" / "_sweeps" / "exists" / LEASE).exists()


def test_a_bad_data_root_writes_no_manifest(tiny_sweep, tmp_path, no_ray):
    spec = tiny_sweep(tmp_path / "res", name="baddata", dataset="lfw", data_root=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError):
        run_sweep(spec, verbose=False)
    # Fixing the path and rerunning is a fresh start, not a refused repeat.
    assert manifest.read(spec.results_uri(), "baddata") is None


_HOLDER = """
import sys
from pp_cluster.farm.lease import Lease
lease = Lease.acquire(sys.argv[1], "held")
print("held", flush=True)
sys.stdin.read()  # hold until the test closes stdin
lease.release()
"""


def test_a_second_driver_is_refused_and_a_dead_holders_lease_is_taken_over(tiny_sweep, tmp_path, no_ray):
    spec = tiny_sweep(tmp_path / "res", name="held").validate()
    where = manifest.sweep_dir(spec.results_uri(), "held")
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, where], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"  # waits on the holder, not on a clock
        with pytest.raises(LeaseHeld, match=rf"pid {holder.pid}") as err:
            run_sweep(spec, verbose=False)
        assert socket.gethostname() in str(err.value)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert not os.path.exists(f"{where}/{LEASE}")  # released on exit

    # A holder that died without releasing (SIGKILL): same host, pid gone -> taken over at once.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    body = {
        "host": socket.gethostname(),
        "pid": dead.pid,
        "token": "old",
        "started_at": "then",
        "heartbeat": time.time(),
        "ttl_s": 120,
    }
    os.makedirs(where, exist_ok=True)
    with open(f"{where}/{LEASE}", "w") as f:
        json.dump(body, f)
    lease = Lease.acquire(where, "held")
    assert json.load(open(f"{where}/{LEASE}"))["token"] == lease.token
    lease.release()

    # A holder on another host whose heartbeat stopped longer than the ttl ago -> taken over;
    # one whose heartbeat is fresh -> refused.
    with open(f"{where}/{LEASE}", "w") as f:
        json.dump({**body, "host": "elsewhere", "pid": 1, "heartbeat": time.time() - 10}, f)
    with pytest.raises(LeaseHeld, match="elsewhere"):
        Lease.acquire(where, "held")
    with open(f"{where}/{LEASE}", "w") as f:
        json.dump({**body, "host": "elsewhere", "pid": 1, "heartbeat": time.time() - 500}, f)
    with Lease.acquire(where, "held") as lease:
        assert json.load(open(f"{where}/{LEASE}"))["host"] == socket.gethostname()
    assert not os.path.exists(f"{where}/{LEASE}")


def test_a_field_added_to_the_spec_later_counts_as_its_default(tiny_sweep, tmp_path):
    spec = tiny_sweep(tmp_path / "res", name="older").validate()
    recorded = manifest.identity(spec)
    del recorded["plugins"]  # a manifest written before SweepSpec had plugins
    assert manifest.differences(recorded, manifest.identity(spec)) == []
    assert manifest.differences(recorded, manifest.identity(spec.with_(plugins=("x",)))) == [
        'plugins: [] -> ["x"]'
    ]


def test_only_other_lams_or_seeds_of_a_grid_may_be_resumed_and_the_record_is_their_union(
    tiny_sweep, tmp_path
):
    spec = tiny_sweep(tmp_path / "res", name="axes", lams=(0.1,), seeds=(0, 1)).validate()
    manifest.write(spec.results_uri(), spec)

    def check(s):
        return manifest.check(s, resume=True, has_results=True, has_tune_state=False)

    assert check(spec) == "resume"
    wider = spec.with_(lams=(0.0,), seeds=(2, 0))
    assert check(wider) == "widen"
    recorded = manifest.read(spec.results_uri(), "axes")["spec"]
    union = manifest.widened(recorded, wider)
    assert (union.lams, union.seeds) == ((0.0, 0.1), (0, 1, 2))
    assert manifest.identity(union) == {**manifest.identity(spec), "lams": [0.0, 0.1], "seeds": [0, 1, 2]}
    # Without --resume it is still a repeat; with anything else changed it is still refused,
    # naming every differing field; partitions and an Optuna search's λ are not grid axes.
    with pytest.raises(SpecError, match="already exists"):
        manifest.check(wider, resume=False, has_results=True, has_tune_state=False)
    for changed, named in (
        (wider.with_(epochs=2), ("epochs: 1 -> 2", "lams: [0.1] -> [0.0]")),
        (spec.with_(partitions=("pool1",)), ('partitions: ["pool1", "pool2"] -> ["pool1"]',)),
        (spec.with_(search="optuna"), ('search: "grid" -> "optuna"',)),
    ):
        with pytest.raises(SpecError) as err:
            check(changed)
        assert all(n in str(err.value) for n in named), str(err.value)
    searched = tiny_sweep(tmp_path / "res2", name="opt", search="optuna", lam_range=(0.1, 1.0)).validate()
    manifest.write(searched.results_uri(), searched)
    with pytest.raises(SpecError, match="seeds: "):
        manifest.check(searched.with_(seeds=(0, 1)), resume=True, has_results=True, has_tune_state=False)
