"""Files under a results root are data, never code (issue 18, item 1): a planted training state
or Tune experiment file must not run when a sweep starts or resumes."""

from __future__ import annotations

import os
import pickle

import pandas as pd
import pytest

from pp_cluster.config import Resources, SpecError
from pp_cluster.farm.sweep import run_sweep
from pp_cluster.farm.train import state_uri

pytestmark = pytest.mark.farm


class _Payload:
    """Unpickling this creates ``marker``: the proof that a file ran code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path, marker) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(_Payload(str(marker))))


def test_planted_state_and_tuner_files_never_run(tiny_sweep, ray_cluster, tmp_path):
    marker = tmp_path / "PWNED"
    spec = tiny_sweep(
        tmp_path / "res",
        name="trust",
        partitions=("pool1",),
        lams=(0.0,),
        attackers=("fc",),
        resources=Resources(pool_size=1, attacker_cpus=0.5, max_failures=0),
    )
    model_id = spec.model_spec(None, 0.0, 0).model_id(spec.name)
    state = tmp_path / "res" / "_ray" / f"train-{model_id}" / "state.pt"
    _plant(state, marker)
    # A fresh sweep reads the planted state as data: the trial fails with a clear message.
    outcome = run_sweep(spec, verbose=False)
    assert not marker.exists()
    assert outcome.n_errored == 1
    assert state_uri(spec.storage(), model_id) == str(state)

    # Tune's experiment state is never unpickled: a fresh run is refused, --resume starts a
    # fresh Tuner (the state file moved aside, the sweep then trains and attacks normally).
    tuner = tmp_path / "res" / "_ray" / spec.name / "tuner.pkl"
    _plant(tuner, marker)
    with pytest.raises(SpecError, match="--resume"):
        run_sweep(spec, verbose=False)
    state.unlink()
    _plant(tuner, marker)  # the first run's Tuner rewrote it: plant again
    outcome = run_sweep(spec, resume=True, verbose=False)
    assert not marker.exists()
    assert outcome.n_errored == 0
    assert len(pd.read_parquet(tmp_path / "res" / "attacks")) == 1
