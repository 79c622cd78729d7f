"""Attack a finished sweep's models again, with attackers it did not have (``pp-farm attack``).

A stronger attacker written after a sweep (the white-box ``rmle``, tuned attackers, a plugin's
decoder) should not need the models trained again: their weights are kept (``models.py``).
:func:`reattack` plans one attack per (finished model, partition it is attacked at, new
attacker) — an undefended model at every partition its sweep attacked it at — skips every
attack whose row exists, and runs the rest in this process with the sweep's own attacker data
(its ``attacker_data`` and ``attacker_fraction``, read from the rows already there), writing
each row under its content id as the attacker pool does. Interrupted, it is simply run again.

Ray-free and sequential: each (model, partition)'s activations are computed once and every new
attacker of that pair trains on them. On a cluster, run the sweep itself with the attackers.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import pandas as pd

from pp_cluster import pipeline
from pp_cluster.config import AttackSpec, ModelSpec, SpecError, tunable
from pp_cluster.data import Dataset
from pp_cluster.models import load_model
from pp_cluster.nets import split
from pp_cluster.results.rows import attack_row
from pp_cluster.results.rules import OK
from pp_cluster.results.store import ResultStore, provenance


@dataclass(frozen=True)
class Job:
    model_id: str
    partition: str
    attack: AttackSpec
    attack_id: str


def _one(values: pd.Series, what: str, sweep: str):
    distinct = values.dropna().unique()
    if len(distinct) != 1:
        raise SpecError(
            f"sweep {sweep!r}: its attacks used {len(distinct)} {what} values {list(distinct)}; expected one"
        )
    return distinct[0].item() if hasattr(distinct[0], "item") else distinct[0]


def _attacked_at(row, everywhere: list[str]) -> list[str]:
    """Where the sweep attacked a model: its partition, each partition of its suite, or (an
    undefended model) every partition the sweep attacked."""
    suite = getattr(row, "partition_suite", None)
    if isinstance(suite, str) and suite:
        return suite.split("+")
    return [row.partition] if isinstance(row.partition, str) else everywhere


def plan(
    store: ResultStore,
    sweep: str,
    attackers: Sequence[str],
    *,
    tune_trials: int = 0,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 1e-3,
    models: Sequence[str] | None = None,
    partitions: Sequence[str] | None = None,
    shard: tuple[int, int] = (0, 1),
) -> list[Job]:
    """The attacks still to run, in (model, partition) order; only at ``partitions`` if given,
    and with ``shard`` = (i, n) only the i-th of n disjoint shares of the (model, partition)
    pairs, so that n processes can share the work without racing for an attack. Raises
    SpecError for a sweep without finished, attacked models, an unknown attacker, partition
    or shard, or a model id not in the sweep."""
    from pp_cluster.nets import DECODERS

    unknown = [a for a in attackers if a not in DECODERS]
    if unknown or not attackers:
        raise SpecError(f"unknown attacker(s) {unknown}; the zoo has {', '.join(DECODERS)}")
    rows, done = store.read("models", sweep), store.read("attacks", sweep)
    rows = rows[(rows["status"] == OK) & (rows["defense"] != "dp_pixelation")]
    done = done[done["attacker"] != "dp_pixelation"]
    if rows.empty or done.empty:
        raise SpecError(f"sweep {sweep!r} has no finished, attacked models under {store.root!r}")
    if models:
        missing = sorted(set(models) - set(rows["model_id"]))
        if missing:
            raise SpecError(f"model(s) {missing} are not finished models of sweep {sweep!r}")
        rows = rows[rows["model_id"].isin(models)]
    data, fraction = (
        _one(done["attacker_data"], "attacker_data", sweep),
        _one(done["attacker_fraction"], "attacker_fraction", sweep),
    )
    attacked = sorted(done["partition"].dropna().unique())
    if partitions is not None and (not partitions or set(partitions) - set(attacked)):
        raise SpecError(f"sweep {sweep!r} was attacked at {attacked}; --partitions {list(partitions)}")
    i, n = shard
    if not (isinstance(i, int) and isinstance(n, int) and 0 <= i < n):
        raise SpecError(f"shard must be i/n with 0 <= i < n, got {i}/{n}")
    have = set(done["attack_id"])
    jobs = []
    pairs = [
        (row.model_id, p)
        for row in rows.sort_values("model_id").itertuples()
        for p in _attacked_at(row, attacked)
        if partitions is None or p in partitions
    ]
    for model_id, partition in pairs[i::n]:
        for name in attackers:
            base = AttackSpec(name, data, float(fraction), epochs, batch_size, lr)
            for attack in [
                base,
                *([replace(base, tune_trials=tune_trials)] if tune_trials and tunable(name) else []),
            ]:
                aid = attack.attack_id(model_id, partition)
                if aid not in have:
                    jobs.append(Job(model_id, partition, attack, aid))
    return jobs


def reattack(
    results: str,
    sweep: str,
    jobs: list[Job],
    *,
    storage: str | None = None,
    data_root: str | None = None,
    device: str = "cpu",
    say: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> int:
    """Run ``jobs`` (:func:`plan`), writing each row as it finishes; returns how many ran. Each
    data set is read once, however many models use it."""
    store, prov = ResultStore(results), provenance()
    specs = {
        r.model_id: ModelSpec.from_dict(json.loads(r.config_json))
        for r in store.read("models", sweep).itertuples()
    }
    datasets: dict[tuple, Dataset] = {}
    t0, done = time.monotonic(), 0
    for model_id in dict.fromkeys(j.model_id for j in jobs):
        spec = specs[model_id] if data_root is None else replace(specs[model_id], data_root=data_root)
        key = (spec.dataset, spec.data_root, json.dumps(dict(spec.dataset_options), sort_keys=True))
        if key not in datasets:
            datasets[key] = pipeline.load_data(spec)
        ds = datasets[key]
        shape = (tuple(ds.image_shape), ds.num_classes, tuple(ds.value_range))
        model = load_model(results, model_id, storage=storage, dataset=ds)  # its weights, read once
        for partition in dict.fromkeys(j.partition for j in jobs if j.model_id == model_id):
            local, _ = split(model.net, partition)
            todo = [j for j in jobs if j.model_id == model_id and j.partition == partition]
            first = todo[0].attack
            inputs = pipeline.attack_inputs(
                local, ds, first.attacker_data, first.attacker_fraction, spec.seed, device
            )
            for job in todo:
                row, _ = pipeline.run_attack(
                    job.attack, model.net, spec.at(partition), shape, inputs, seed=spec.seed, device=device
                )
                row = attack_row(row, sweep=sweep, model_id=model_id, attack_id=job.attack_id, prov=prov)
                store.write("attacks", sweep, job.attack_id, [row])
                done += 1
                tuned = f" tuned x{job.attack.tune_trials}" if job.attack.tune_trials else ""
                say(
                    f"[pp-farm {time.monotonic() - t0:6.0f}s] attack {done}/{len(jobs)}: "
                    f"{job.attack.attacker}{tuned} on {model_id} at {partition}: SSIM {row['ssim']:.3f} "
                    f"({row['train_seconds']:.0f} s)"
                )
    return done
