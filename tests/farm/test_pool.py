"""The attacker pool: activations computed once, attackers never run the local partition,
and an actor killed mid-attack is replaced without a duplicate or a missing row."""

from __future__ import annotations

import time

import pandas as pd
import pytest
import torch

from pp_cluster import pipeline
from pp_cluster.farm.pool import start_pool

pytestmark = pytest.mark.farm


class _CountingLocal(torch.nn.Module):
    def __init__(self, local):
        super().__init__()
        self.local, self.calls = local, 0

    def forward(self, x):
        self.calls += 1
        return self.local(x)


def test_activations_once_whatever_the_zoo(tiny_sweep, tmp_path):
    spec = tiny_sweep(tmp_path).model_spec(None, 0.0, 0).at("pool2")
    ds = pipeline.load_data(spec)
    model = pipeline.build_model(spec, ds)
    counting = _CountingLocal(model.local)
    inputs = pipeline.attack_inputs(counting, ds, "train", 1.0, 0)
    after_activations = counting.calls
    assert after_activations >= 2  # attacker-train and evaluation images
    model.local.forward = lambda *a, **k: pytest.fail("an attacker ran the local partition")
    for name in ("deconv", "fc", "sparse_fc"):
        attack = tiny_sweep(tmp_path).with_(attackers=(name,)).attack_specs()[0]
        row, _ = pipeline.run_attack(
            attack, model.net, spec, (ds.image_shape, ds.num_classes, ds.value_range), inputs
        )
        assert row["n_eval"] == len(ds.test)
    assert counting.calls == after_activations


def test_killed_attacker_actor_is_replaced_and_its_attack_retried(tiny_sweep, ray_cluster, tmp_path):
    ray = ray_cluster
    sweep = tiny_sweep(tmp_path / "res", name="killer", attack_epochs=60)
    spec = sweep.model_spec(None, 0.0, 0).at("pool1")
    model_id = spec.model_id(sweep.name)
    ds = pipeline.load_data(spec)
    model = pipeline.build_model(spec, ds)
    inputs = pipeline.attack_inputs(model.local, ds, "train", 1.0, 0)
    pool = start_pool(sweep.name, 1, sweep.results_uri(), 0.5, 0.0)
    victim = ray.get(pool.workers.remote())[0]
    ray.get(victim.pid.remote(), timeout=120)  # the actor is up: the kill lands mid-attack
    refs = [ray.put(inputs), ray.put(model.net.state_dict())]
    attack = sweep.attack_specs()[0]
    job = {
        "sweep": sweep.name,
        "model_id": model_id,
        "attack_id": attack.attack_id(model_id, "pool1"),
        "model": spec.to_dict(),
        "attack": attack.__dict__,
        "shape": (list(ds.image_shape), ds.num_classes, list(ds.value_range)),
        "n_keep": 0,
    }
    fut = pool.attack.remote(job, refs)
    deadline = time.monotonic() + 120  # wait for the attack to be running on the only actor
    while ray.get(pool.stats.remote())["running"] != 1:
        assert time.monotonic() < deadline, "the attack never started"
        time.sleep(0.05)
    ray.kill(victim, no_restart=True)
    row = ray.get(fut, timeout=300)
    stats = ray.get(pool.stats.remote())
    assert row["status"] == "ok" and stats["replaced"] == 1 and stats["done"] == 1
    attacks = pd.read_parquet(tmp_path / "res" / "attacks")
    assert len(attacks) == 1 and attacks["attack_id"].iloc[0] == job["attack_id"]
    ray.kill(pool)
