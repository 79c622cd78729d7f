"""The Tune trainable: one model and its attacks, as a dozen calls.

A trial trains its model through Ray Train (``train.fit_model``; inside the trial's own
process when the model has one worker), computes the activations of the attacker's images
once per partition, fans the attacker zoo out to the sweep's attacker pool, writes its rows
(``results.rows``), and reports the test accuracy and the strongest attacker's metrics
(``results.rules``) to Tune. Every row is keyed by content, so a retried or resumed trial
skips what is already written and never duplicates a row; it reads only its own rows.

Tune hears from a trial once per epoch while it trains (``train.epoch_metrics``) and once at
the end (``trial_metrics``): a search, ``ResultGrid`` and Tune's metric/mode use that last
report; logger callbacks (``run_sweep(callbacks=...)``) get every one.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import ray
import ray.tune as tune

from pp_cluster import pipeline
from pp_cluster.config import SweepSpec, content_id
from pp_cluster.data.base import Split
from pp_cluster.farm.capacity import process_device
from pp_cluster.farm.pool import get_pool
from pp_cluster.farm.train import fit_model
from pp_cluster.nets import split
from pp_cluster.results import rows, rules
from pp_cluster.results.store import ResultStore, provenance

N_RECONSTRUCTIONS = 8


def run_trial(config: dict[str, Any], sweep: SweepSpec, refs: list) -> None:
    """The Tune trainable: one model and its attacks. ``refs`` = [data set, attribute judge
    or None], both in the object store."""
    spec = sweep.point_spec(config["model"] if "model" in config else config)
    model_id = spec.model_id(sweep.name)
    store = ResultStore(sweep.results_uri())
    attacks = attack_plan(sweep, spec, model_id)

    done_rows = read_ok_attacks(store, sweep.name, model_id, attacks)
    model_row = read_model_row(store, sweep.name, model_id)
    if model_row is not None and (model_row["status"] != rules.OK or len(done_rows) == len(attacks)):
        tune.report(trial_metrics(model_row, done_rows, model_id, skipped=True))
        return

    started = rows.utcnow()
    final, history, net_state = fit_model(
        spec, model_id, refs[0], sweep.resources, bool(config["use_gpu"]), sweep.storage()
    )
    if model_row is None:
        model_row = _write_model(store, sweep, spec, model_id, final, history, started)
    if final["status"] == rules.OK:
        todo = {i: pa for i, pa in attacks.items() if i not in {r["attack_id"] for r in done_rows}}
        done_rows += _attack(store, sweep, spec, model_id, net_state, todo, refs, bool(config["use_gpu"]))
    tune.report(trial_metrics(model_row, done_rows, model_id, skipped=False))


def attack_plan(sweep: SweepSpec, spec, model_id: str) -> dict[str, tuple[str, Any]]:
    """attack id -> (partition, attack spec): one attack per (partition it splits the model
    at, attacker); a partition-suite model is attacked at each partition of its suite, an
    undefended one at every partition of the grid."""
    return {
        a.attack_id(model_id, p): (p, a) for p in sweep.attack_partitions(spec) for a in sweep.attack_specs()
    }


def _attack(
    store: ResultStore,
    sweep: SweepSpec,
    spec,
    model_id: str,
    net_state: dict,
    todo: dict[str, tuple[str, Any]],
    refs: list,
    use_gpu: bool,
) -> list[dict]:
    """Run ``todo`` on the sweep's attacker pool (DP pixelation too, for an undefended model);
    the pool's actors write the successful rows, this the failed ones. Returns every row."""
    ds = ray.get(refs[0])
    model = pipeline.build_model(spec, ds)
    model.net.load_state_dict(net_state)
    device = process_device(use_gpu)
    model.net.to(device)
    if spec.lam == 0 and sweep.dp_epsilons:  # once per undefended model, not per partition
        _write_dp_pixelation(store, sweep, spec, model_id, model.net, ds, device)
    net_ref, pool = ray.put(net_state), get_pool(sweep.name)
    shape = (list(ds.image_shape), ds.num_classes, list(ds.value_range))
    pending = []
    for partition in dict.fromkeys(p for p, _ in todo.values()):
        # The activations of the attacker's images: computed ONCE per (model, partition),
        # whatever the zoo.
        local, _ = split(model.net, partition)
        inputs_ref = ray.put(
            pipeline.attack_inputs(local, ds, sweep.attacker_data, sweep.attacker_fraction, spec.seed, device)
        )
        for attack_id, (p, attack) in todo.items():
            if p != partition:
                continue
            job = {
                "sweep": sweep.name,
                "model_id": model_id,
                "attack_id": attack_id,
                "model": spec.at(partition).to_dict(),
                "attack": attack.__dict__,
                "shape": shape,
                "n_keep": N_RECONSTRUCTIONS if sweep.save_reconstructions else 0,
            }
            pending.append(pool.attack.remote(job, [inputs_ref, net_ref, refs[1]]))
    out = ray.get(pending)
    for row in out:
        if row["status"] != rules.OK:
            store.write("attacks", sweep.name, row["attack_id"], [rows.failed_attack_row(sweep.name, row)])
    return out


def read_ok_attacks(store: ResultStore, sweep: str, model_id: str, attacks: dict) -> list[dict]:
    """This model's finished attacks: only their own files are read (another trial's damaged
    file cannot fail this one)."""
    df = store.read("attacks", sweep, keys=list(attacks))
    if df.empty:
        return []
    return _records(df[(df["model_id"] == model_id) & rules.succeeded(df)])


def read_model_row(store: ResultStore, sweep: str, model_id: str) -> dict | None:
    found = _records(store.read("models", sweep, keys=[model_id]))
    return found[0] if found else None


def _records(df) -> list[dict]:
    """Rows as plain dicts with None for missing values (pandas NA/NaN/NaT)."""
    return df.astype(object).where(df.notna(), None).to_dict("records")


def _model_base(sweep: SweepSpec, spec, model_id: str, started: dt.datetime) -> dict:
    from pp_cluster.privacy.recipes import recipe

    lr = float(spec.train_overrides.get("lr", recipe(spec.dataset, spec.recipe).lr))
    return rows.model_base(
        sweep.name,
        spec,
        model_id,
        trial_id=tune.get_context().get_trial_id(),
        lr=lr,
        started=started,
        prov=provenance(),
    )


def _write_model(
    store: ResultStore,
    sweep: SweepSpec,
    spec,
    model_id: str,
    final: dict,
    history: list[dict],
    started: dt.datetime,
) -> dict:
    row = rows.model_row(_model_base(sweep, spec, model_id, started), final)
    if final.get("device") == "cpu":  # trained on the CPU, whatever card this process could see
        row["gpu"] = None
    store.write("models", sweep.name, model_id, [row])
    if history:
        store.write("epochs", sweep.name, model_id, rows.epoch_rows(sweep.name, model_id, history))
    return row


def _write_dp_pixelation(
    store: ResultStore, sweep: SweepSpec, spec, model_id: str, net, ds, device: str
) -> None:
    """Appendix D / Figure 7: release the test images through ε-DP pixelation instead of a
    partition (``privacy.baselines.pixelation_sweep``); per ε one models row (the undefended
    model's accuracy on the released images) and one attacks row for the release itself."""
    from pp_cluster.privacy.baselines import pixelation_sweep

    started = rows.utcnow()
    test = Split(ds.test.x.to(device), ds.test.y.to(device))
    b, m = sweep.dp_cell, sweep.dp_neighbourhood
    for r in pixelation_sweep(net, test, ds.value_range, sweep.dp_epsilons, b=b, m=m, seed=spec.seed):
        # RGB releases since their accounting counts a pixel's three values together
        # (privacy.baselines): a new id, so a resumed sweep does not keep a release of the old,
        # per-channel accounting (3ε-DP); greyscale releases are unchanged, and keep theirs.
        rgb = ("rgb pixel = 3 values",) if ds.image_shape[0] > 1 else ()
        dp_id = content_id("dp_pixelation", sweep.name, model_id, r["eps"], b, m, *rgb)
        if store.exists("models", sweep.name, dp_id):
            continue
        config = {
            **spec.to_dict(),
            "base_model_id": model_id,
            "epsilon": r["eps"],
            "dp_cell": b,
            "dp_neighbourhood": m,
        }
        attack_id = content_id("attack", dp_id, "dp_pixelation")
        model_row, attack_row = rows.dp_rows(
            _model_base(sweep, spec, dp_id, started),
            r,
            attack_id=attack_id,
            config=config,
            n_eval=len(test),
            cell=b,
            neighbourhood=m,
            prov=provenance(),
        )
        store.write("attacks", sweep.name, attack_id, [attack_row])
        store.write("models", sweep.name, dp_id, [model_row])  # last: it marks the ε as done


def trial_metrics(model_row: dict, attack_rows: list[dict], model_id: str, skipped: bool) -> dict:
    test_acc = model_row.get("test_acc")
    metrics = {
        "model_id": model_id,
        "status": model_row["status"],
        "skipped": skipped,
        # Tune and Optuna need numbers: a diverged model scores as useless (acc 0, leak 1).
        "test_acc": float(test_acc) if test_acc is not None else 0.0,
        # The strongest attacker (rules.worst_of) over every partition the model was attacked at.
        **rules.worst_of(pd.DataFrame(attack_rows, columns=["status", "attacker", *rules.STRONGEST])),
    }
    if metrics["worst_ssim"] is None:
        metrics["worst_ssim"] = 1.0
    return metrics
