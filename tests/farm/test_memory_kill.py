"""A trial killed by Ray's memory monitor does not end the sweep: the grid starts again (as
--resume would), at most max_failures times; any other error still ends it."""

from __future__ import annotations

import pytest
import ray

from pp_cluster.farm.sweep import fit_through_memory_kills


class FakeTuner:
    """Fails its first ``kills`` fits as Tune's actor manager does after an OOM kill."""

    calls = 0

    def __init__(self, kills: int, error: Exception | None = None):
        self.kills, self.error = kills, error

    def fit(self):
        FakeTuner.calls += 1
        if FakeTuner.calls <= self.kills:
            cause = self.error or ray.exceptions.OutOfMemoryError(
                "1 worker(s) were killed due to the node running low on memory."
            )
            raise RuntimeError(f"Caught unexpected exception: {cause}") from cause
        return "grid"


@pytest.fixture(autouse=True)
def _count():
    FakeTuner.calls = 0


def test_a_memory_kill_starts_the_grid_again(capsys):
    assert fit_through_memory_kills(lambda: FakeTuner(kills=2), retries=2) == "grid"
    assert FakeTuner.calls == 3
    err = capsys.readouterr().err
    assert err.count("memory monitor killed a trial") == 2 and "(2 of 2)" in err


def test_more_kills_than_retries_end_the_run():
    with pytest.raises(RuntimeError, match="Caught unexpected exception") as info:
        fit_through_memory_kills(lambda: FakeTuner(kills=3), retries=2)
    assert isinstance(info.value.__cause__, ray.exceptions.OutOfMemoryError) and FakeTuner.calls == 3


def test_other_errors_are_not_retried():
    with pytest.raises(RuntimeError, match="boom"):
        fit_through_memory_kills(lambda: FakeTuner(kills=1, error=ValueError("boom")), retries=2)
    assert FakeTuner.calls == 1


def test_max_failures_is_a_flag_and_is_checked(tmp_path):
    import argparse

    from pp_cluster.cli import add_sweep_args, spec_from_args
    from pp_cluster.config import SpecError

    p = argparse.ArgumentParser()
    add_sweep_args(p)
    spec = spec_from_args(
        p.parse_args(["--quick", "--max-failures", "5", "--results", str(tmp_path)]), "lfw_grid"
    )
    assert spec.resources.max_failures == 5
    bad = spec_from_args(
        p.parse_args(["--quick", "--max-failures", "-1", "--results", str(tmp_path)]), "lfw_grid"
    )
    with pytest.raises(SpecError, match="max_failures"):
        bad.validate()
