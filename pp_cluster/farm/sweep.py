"""Ray Tune: one trial per (partition, λ, seed); grid or multi-objective Optuna search.

A trial trains its model through Ray Train (``train.fit_model``; inside the trial's own
process when the model has one worker), computes the activations of the attacker's images
once, fans the attacker zoo out to the sweep's attacker pool, writes its rows, and reports
the test accuracy and the worst-case (strongest) attacker's metrics to Tune. Every row is keyed by content, so a retried or
resumed trial skips what is already written and never duplicates a row.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
import ray
import ray.tune as tune
import torch

from pp_cluster import pipeline
from pp_cluster.config import SpecError, SweepSpec, content_id
from pp_cluster.data.base import Split
from pp_cluster.nets import split
from pp_cluster.farm import manifest
from pp_cluster.results.fs import is_shared, redact, storage_args, strip_credentials
from pp_cluster.farm.lease import Lease
from pp_cluster.farm.pool import get_pool, start_pool
from pp_cluster.results import rows, rules
from pp_cluster.results.store import ResultStore, provenance
from pp_cluster.farm.train import PlacementGroupReaper, fit_model

N_RECONSTRUCTIONS = 8
# Ray Train settings for many short runs: poll the workers often (a run's end is noticed
# in 0.5 s, not 2 s) and give worker start-up time on a busy node before calling it failed.
# Ray Train's Prometheus metrics have no reader without the dashboard: off.
TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600",
             "RAY_TRAIN_METRICS_ENABLED": "0"}


def train_runtime_env() -> dict[str, Any]:
    """The job runtime environment the farm's Ray sessions want (``TRAIN_ENV``); a script or
    test that calls ``ray.init`` itself passes it as ``runtime_env=``."""
    return {"env_vars": dict(TRAIN_ENV)}


def trial_resources(r, use_gpu: bool) -> dict[str, float]:
    """What a Tune trial holds. A one-worker model trains inside the trial (Ray Train's local
    mode, ``train.py``), so the trial holds that worker's CPU and GPU share. With DDP the
    trial is a light driver: no CPU (its Train workers hold theirs), a token of memory, and
    a sliver of GPU when there is one so that it can compute the activations there."""
    if r.num_workers == 1:
        return {"CPU": r.cpus_per_worker, **({"GPU": r.gpus_per_trial} if use_gpu else {})}
    return {"CPU": 0, "memory": 1, **({"GPU": 0.01} if use_gpu else {})}


def run_trial(config: dict[str, Any], sweep: SweepSpec, refs: list) -> None:
    """The Tune trainable: one model and its attacks. ``refs`` = [data set, attribute judge
    or None], both in the object store."""
    point = config["model"] if "model" in config else config
    spec = sweep.model_spec(point["partition"], point["lam"], point.get("seed", sweep.seeds[0]),
                            point.get("suite", 0))
    model_id = spec.model_id(sweep.name)
    store = ResultStore(sweep.results_uri())
    # One attack per (partition it splits the model at, attacker): an undefended model is
    # attacked at every partition of the grid, a defended one at its own.
    attacks = {a.attack_id(model_id, p): (p, a) for p in sweep.attack_partitions(spec) for a in sweep.attack_specs()}

    done_rows = _ok_attack_rows(store, sweep.name, model_id, attacks)
    model_row = _model_row(store, sweep.name, model_id)
    if model_row is not None and (model_row["status"] != rules.OK or len(done_rows) == len(attacks)):
        tune.report(_trial_metrics(model_row, done_rows, model_id, skipped=True))
        return

    started = rows.utcnow()
    use_gpu = bool(config["use_gpu"])
    final, history, net_state = fit_model(spec, model_id, refs[0], sweep.resources, use_gpu, sweep.storage())
    if model_row is None:
        model_row = _write_model(store, sweep, spec, model_id, final, history, started)

    if final["status"] == rules.OK:
        ds = ray.get(refs[0])
        model = pipeline.build_model(spec, ds)
        model.net.load_state_dict(net_state)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model.net.to(device)
        if spec.lam == 0 and sweep.dp_epsilons:  # once per undefended model, not per partition
            _write_dp_pixelation(store, sweep, spec, model_id, model.net, ds, device)
        net_ref = ray.put(net_state)
        pool = get_pool(sweep.name)
        shape = (list(ds.image_shape), ds.num_classes, list(ds.value_range))
        done_ids = {r["attack_id"] for r in done_rows}
        pending = []
        for partition in sweep.attack_partitions(spec):
            todo = {i: a for i, (p, a) in attacks.items() if p == partition and i not in done_ids}
            if not todo:
                continue
            # The activations of the attacker's images: computed ONCE per (model, partition),
            # whatever the zoo.
            local, _ = split(model.net, partition)
            inputs_ref = ray.put(pipeline.attack_inputs(
                local, ds, sweep.attacker_data, sweep.attacker_fraction, spec.seed, device))
            for attack_id, attack in todo.items():
                job = {
                    "sweep": sweep.name, "model_id": model_id, "attack_id": attack_id,
                    "model": spec.at(partition).to_dict(), "attack": attack.__dict__, "shape": shape,
                    "n_keep": N_RECONSTRUCTIONS if sweep.save_reconstructions else 0,
                }
                pending.append(pool.attack.remote(job, [inputs_ref, net_ref, refs[1]]))
        for row in ray.get(pending):
            if row["status"] != rules.OK:
                store.write("attacks", sweep.name, row["attack_id"], [rows.failed_attack_row(sweep.name, row)])
            done_rows.append(row)
    tune.report(_trial_metrics(model_row, done_rows, model_id, skipped=False))


def _ok_attack_rows(store: ResultStore, sweep: str, model_id: str, attacks: dict) -> list[dict]:
    """This model's finished attacks: only their own files are read (another trial's damaged
    file cannot fail this one)."""
    df = store.read("attacks", sweep, keys=list(attacks))
    if df.empty:
        return []
    return _records(df[(df["model_id"] == model_id) & rules.succeeded(df)])


def _model_row(store: ResultStore, sweep: str, model_id: str) -> dict | None:
    found = _records(store.read("models", sweep, keys=[model_id]))
    return found[0] if found else None


def _records(df) -> list[dict]:
    """Rows as plain dicts with None for missing values (pandas NA/NaN/NaT)."""
    return df.astype(object).where(df.notna(), None).to_dict("records")


def _model_base(sweep: SweepSpec, spec, model_id: str, started: dt.datetime) -> dict:
    from pp_cluster.privacy.recipes import recipe

    lr = float(spec.train_overrides.get("lr", recipe(spec.dataset, spec.recipe).lr))
    return rows.model_base(sweep.name, spec, model_id, trial_id=tune.get_context().get_trial_id(), lr=lr,
                           started=started, prov=provenance())


def _write_model(store: ResultStore, sweep: SweepSpec, spec, model_id: str, final: dict,
                 history: list[dict], started: dt.datetime) -> dict:
    row = rows.model_row(_model_base(sweep, spec, model_id, started), final)
    store.write("models", sweep.name, model_id, [row])
    if history:
        store.write("epochs", sweep.name, model_id, rows.epoch_rows(sweep.name, model_id, history))
    return row


def _write_dp_pixelation(store: ResultStore, sweep: SweepSpec, spec, model_id: str, net, ds, device: str) -> None:
    """Appendix D / Figure 7: release the test images through ε-DP pixelation instead of a
    partition (``privacy.baselines.pixelation_sweep``); per ε one models row (the undefended
    model's accuracy on the released images) and one attacks row for the release itself."""
    from pp_cluster.privacy.baselines import pixelation_sweep

    started = rows.utcnow()
    test = Split(ds.test.x.to(device), ds.test.y.to(device))
    b, m = sweep.dp_cell, sweep.dp_neighbourhood
    for r in pixelation_sweep(net, test, ds.value_range, sweep.dp_epsilons, b=b, m=m, seed=spec.seed):
        dp_id = content_id("dp_pixelation", sweep.name, model_id, r["eps"], b, m)
        if store.exists("models", sweep.name, dp_id):
            continue
        config = {**spec.to_dict(), "base_model_id": model_id, "epsilon": r["eps"], "dp_cell": b,
                  "dp_neighbourhood": m}
        attack_id = content_id("attack", dp_id, "dp_pixelation")
        model_row, attack_row = rows.dp_rows(_model_base(sweep, spec, dp_id, started), r, attack_id=attack_id,
                                             config=config, n_eval=len(test), cell=b, neighbourhood=m,
                                             prov=provenance())
        store.write("attacks", sweep.name, attack_id, [attack_row])
        store.write("models", sweep.name, dp_id, [model_row])  # last: it marks the ε as done


def _trial_metrics(model_row: dict, attack_rows: list[dict], model_id: str, skipped: bool) -> dict:
    test_acc = model_row.get("test_acc")
    metrics = {
        "model_id": model_id, "status": model_row["status"], "skipped": skipped,
        # Tune and Optuna need numbers: a diverged model scores as useless (acc 0, leak 1).
        "test_acc": float(test_acc) if test_acc is not None else 0.0,
        # The strongest attacker (rules.worst_of) over every partition the model was attacked at.
        **rules.worst_of(pd.DataFrame(attack_rows, columns=["status", "attacker", *rules.STRONGEST])),
    }
    if metrics["worst_ssim"] is None:
        metrics["worst_ssim"] = 1.0
    return metrics


# -- the driver --------------------------------------------------------------------------


@dataclass
class SweepOutcome:
    results: str
    n_trials: int
    n_errored: int
    seconds: float


class Interrupted(Exception):
    """The sweep was stopped by a signal; ``unfinished`` names what a ``--resume`` will do."""

    def __init__(self, signum: int, unfinished: list[str]) -> None:
        self.signum, self.unfinished = signum, unfinished
        name = signal.Signals(signum).name
        super().__init__(f"sweep interrupted by {name}: {len(unfinished)} model(s) unfinished")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _Signals:
    """Ctrl-C and SIGTERM end a sweep the same way: Tune ends its loop (its own SIGINT
    handling), the driver lists what is unfinished and exits 128 + the signal (130, 143).
    Outside Tune's loop either signal raises KeyboardInterrupt. Which signal it was is
    recorded here: SIGTERM by our handler, SIGINT by wrapping Tune's when its loop starts."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._old_term = None

    def record(self, signum: int) -> None:
        self.received = self.received or signum

    def install(self) -> None:
        """(Re)install the SIGTERM handler: ray.init replaces it with one that exits 1."""
        if threading.current_thread() is threading.main_thread():
            old = signal.signal(signal.SIGTERM, self._on_term)
            if self._old_term is None:
                self._old_term = old

    def restore(self) -> None:
        if self._old_term is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_term)

    def _on_term(self, signum, frame) -> None:
        self.record(signum)
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler) and handler is not signal.default_int_handler:
            handler(signal.SIGINT, frame)  # Tune's: stop the loop gracefully
        else:
            raise KeyboardInterrupt

    def wrap_tune(self) -> None:
        """Called once Tune has installed its SIGINT handler: note a Ctrl-C, then let Tune stop."""
        tune_handler = signal.getsignal(signal.SIGINT)
        if not callable(tune_handler) or threading.current_thread() is not threading.main_thread():
            return

        def on_int(signum, frame):
            self.record(signum)
            tune_handler(signum, frame)

        signal.signal(signal.SIGINT, on_int)


class Progress(tune.Callback):
    """One live line: trials done / running / failed, attacks done / total."""

    def __init__(self, sweep: SweepSpec, n_trials: int | None, signals: _Signals | None = None) -> None:
        self.signals = signals
        self.sweep, self.n_trials = sweep, n_trials
        self.n_attackers = len(sweep.attackers)
        self.done = self.failed = 0
        self.running: set[str] = set()
        self._last = 0.0
        self._t0 = time.time()
        self._stats: dict | None = None
        self._stats_ref = None

    def setup(self, **info):
        if self.signals is not None:
            self.signals.wrap_tune()

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self.done += 1
        self._print(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self.failed += 1
        self._print(force=True)

    def on_step_end(self, iteration, trials, **info):
        self._print()

    def _print(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last < 10:
            return
        self._last = now
        total = f"/{self.n_trials}" if self.n_trials else ""
        print(f"[pp-farm {now - self._t0:6.0f}s] trials {self.done}{total} done, {len(self.running)} running, "
              f"{self.failed} failed | {self._attacks()}", file=sys.stderr, flush=True)

    def _attacks(self) -> str:
        """The pool's counters, without ever blocking Tune's loop: ask, and read the answer
        at the next print if it has arrived."""
        if self._stats_ref is not None and ray.wait([self._stats_ref], timeout=0)[0]:
            try:
                self._stats = ray.get(self._stats_ref)
            except Exception:  # the pool is gone at shutdown; progress is best effort
                self._stats = None
            self._stats_ref = None
        if self._stats_ref is None:
            try:
                self._stats_ref = get_pool(self.sweep.name).stats.remote()
            except ValueError:  # not started yet
                pass
        s = self._stats
        if s is None:
            return "attacks: pool starting"
        return f"attacks {s['done']} done, {s['running']} running, {s['failed']} failed" + (
            f", {s['replaced']} actors replaced" if s["replaced"] else "")


def _attribute_judge(sweep: SweepSpec, ds):
    """Table III's detector and gender classifier, fitted once per sweep on original images
    (before Ray starts: missing gender lists are a bad input, not a failed trial)."""
    from pp_cluster.privacy.attributes import AttributeJudge

    t0 = time.time()
    try:
        judge = AttributeJudge.for_dataset(ds.test, ds.disjoint, ds.value_range, seed=sweep.seeds[0])
    except ValueError as e:
        raise SpecError(f"SweepSpec.attributes: {e}") from None
    cal = judge.detector.calibration
    print(f"[pp-farm] attribute judge: face detector finds {cal['detection_rate']:.3f} of "
          f"{cal['n_originals']} original test faces ({cal['false_rate']:.3f} of non-faces); gender classifier "
          f"trained on {len(ds.disjoint)} images of other people [{time.time() - t0:.0f} s]", file=sys.stderr)
    return judge


def _cluster_has_gpu() -> bool:
    return ray.cluster_resources().get("GPU", 0) > 0


def _alive_nodes() -> int:
    return sum(1 for n in ray.nodes() if n.get("Alive"))


def run_sweep(sweep: SweepSpec, *, resume: bool = False, address: str | None = None, num_cpus: int | None = None,
              num_gpus: int | None = None, verbose: bool = True) -> SweepOutcome:
    """Validate, claim the results root, load the data, start (or join) Ray, run the Tuner,
    mark the Pareto set.

    What a results root must be trusted for: its tables, manifest and lease are JSON and
    Parquet, read as data; training state is read with ``weights_only``; Tune's experiment
    state is never unpickled (whoever can write there could otherwise run code in this
    driver). So a root writable by others can falsify results but not run code.

    Claiming (``manifest``, ``lease``): one driver per (root, sweep), refused with the holder
    named; a fresh run of an existing sweep is refused; ``resume=True`` is refused when the
    spec differs from the recorded one (the fields are listed), else it moves unreadable
    files to ``_quarantine/`` and runs a fresh Tuner over the same grid, every trial skipping
    what the tables hold and continuing training from its state file. An Optuna search
    restarts its sampler (seeded) on resume.

    SIGINT and SIGTERM stop the sweep cleanly: ``Interrupted`` (exit 130 / 143 in the CLI)
    lists the unfinished models."""
    t0 = time.time()
    sweep.validate()
    sweep, secret_env = _credentials_to_environment(sweep)
    # Trials run in other processes with other working directories: pin relative paths now.
    sweep = sweep.with_(results=sweep.results_uri(), storage_path=sweep.storage())
    store = ResultStore(sweep.results_uri())
    store.check_writable()
    _check_local_gpus(sweep, address, num_gpus)
    signals = _Signals()
    signals.install()
    lease = Lease.acquire(manifest.sweep_dir(sweep.results_uri(), sweep.name), sweep.name)
    started_ray, pool = False, None
    try:
        mode = manifest.check(sweep, resume=resume, has_results=bool(store.done_keys("models", sweep.name)),
                              has_tune_state=_has_tune_state(sweep))
        # Bad data paths fail here, before Ray starts; the loaded data set is shared with every
        # trial through the object store (one copy per node).
        ds = pipeline.load_data(sweep.model_spec(sweep.partitions[0], 0.0, sweep.seeds[0]))
        if sweep.attacker_data == "disjoint" and ds.disjoint is None:
            raise SpecError("SweepSpec.attacker_data: 'disjoint' needs a data set with a disjoint split "
                            "(for lfw set dataset option disjoint=True)")
        judge = _attribute_judge(sweep, ds) if sweep.attributes else None
        # Everything is checked: the sweep exists from here on.
        if mode != "resume":
            manifest.write(sweep.results_uri(), sweep)
        if mode != "new":
            moved = store.quarantine(sweep.name)
            for path in moved:
                print(f"[pp-farm] moved unreadable file to {redact(path)}; its rows are computed again",
                      file=sys.stderr)
            print(f"[pp-farm] resuming sweep {sweep.name!r}: finished rows are kept, unfinished models continue "
                  "from their saved state", file=sys.stderr)
        store.ensure_tables(sweep.name, ("models", "attacks", "epochs")
                            + (("reconstructions",) if sweep.save_reconstructions else ()))

        if not ray.is_initialized():
            # address None: a new local cluster, never one that happens to run on this machine.
            ray.init(address=address or "local", num_cpus=num_cpus if address is None else None,
                     num_gpus=num_gpus if address is None else None,
                     runtime_env={"env_vars": {**TRAIN_ENV, **secret_env}},
                     include_dashboard=False, log_to_driver=verbose, configure_logging=False)
            started_ray = True
        signals.install()  # ray.init installed its own SIGTERM handler
        pool_holder: list = []
        try:
            outcome = _tune(sweep, store, ds, judge, address, signals, pool_holder)
        finally:
            pool = pool_holder[0] if pool_holder else None
    except KeyboardInterrupt:
        raise Interrupted(signals.received or signal.SIGINT, unfinished(store, sweep)) from None
    finally:
        if pool is not None:
            try:
                ray.kill(pool)
            except Exception:  # already gone with its cluster
                pass
        if started_ray:
            ray.shutdown()
        lease.release()
        signals.restore()
    n_trials, n_err = outcome
    if signals.received is not None:  # Tune ended its loop early
        raise Interrupted(signals.received, unfinished(store, sweep))
    seconds = time.time() - t0
    root = redact(sweep.results_uri())
    print(f"[pp-farm] sweep {sweep.name!r}: {n_trials} trials ({n_err} errored) in {seconds:.0f} s\n"
          f"[pp-farm] tables: {root}/models  {root}/attacks  {root}/epochs\n"
          f"[pp-farm] read:   import pandas as pd; pd.read_parquet('{root}/attacks')", file=sys.stderr)
    return SweepOutcome(root, n_trials, n_err, seconds)


def _tune(sweep: SweepSpec, store: ResultStore, ds, judge, address: str | None, signals: _Signals,
          pool_holder: list) -> tuple[int, int]:
    """Inside Ray: check the cluster, start the attacker pool, run Tune. Returns (trials, errored)."""
    if not is_shared(sweep.results) and address is not None and _alive_nodes() == 1:
        # An autoscaling cluster may have one node now and ten later.
        print(f"[pp-farm] warning: results go to {redact(sweep.results)!r} on this node only; if the cluster "
              "autoscales, use s3:// or file:// on a shared mount", file=sys.stderr)
    if _alive_nodes() > 1 and not is_shared(sweep.results):
        raise SpecError(
            f"SweepSpec.results: {sweep.results!r} is a local path on a cluster; results would be scattered "
            "over the nodes. Use shared storage: s3://bucket/prefix, or file:///nfs/path for an NFS mount "
            "that every node has at the same path."
        )
    r = sweep.resources
    use_gpu = _cluster_has_gpu() if r.use_gpu is None else r.use_gpu
    concurrency = _check_capacity(sweep, use_gpu, autoscaling=address is not None)
    pool = start_pool(sweep.name, r.pool_size, sweep.results_uri(), r.attacker_cpus,
                      r.attacker_gpus if use_gpu else 0.0)
    pool_holder.append(pool)
    if r.max_concurrent_trials is not None and address is None:
        # A concurrency the user chose may hand every CPU to trials: place the attacker
        # actors first. (The default one leaves them their share; an autoscaling cluster
        # may place them only once nodes join.)
        ray.get(pool.ready.remote())
    data_ref = ray.put(ds)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, sweep=sweep, refs=[data_ref, None if judge is None else ray.put(judge)]),
        trial_resources(r, use_gpu),
    )
    n_trials = len(sweep.grid_points()) if sweep.search == "grid" else sweep.num_samples
    run_config = tune.RunConfig(
        name=sweep.name,
        failure_config=tune.FailureConfig(max_failures=r.max_failures),
        # The reaper frees what Train runs killed with a node leave reserved (train.py).
        callbacks=[Progress(sweep, n_trials, signals), PlacementGroupReaper()],
        verbose=0,
        **storage_args(sweep.storage()),
    )
    tuner = tune.Tuner(trainable, param_space=_param_space(sweep, use_gpu),
                       tune_config=_tune_config(sweep, concurrency), run_config=run_config)
    grid = tuner.fit()
    if sweep.search == "optuna":
        mark_pareto(store, sweep.name)
    return n_trials, sum(1 for res in grid if res.error is not None)


def _has_tune_state(sweep: SweepSpec) -> bool:
    """Whether Tune state of this sweep exists (from a run before manifests); only the
    file's existence is checked, nothing is read."""
    storage = storage_args(sweep.storage())
    path = storage["storage_path"].rstrip("/") + "/" + sweep.name
    fs_kw = {k: v for k, v in storage.items() if k == "storage_filesystem"}
    return tune.Tuner.can_restore(path, **fs_kw)


def _credentials_to_environment(sweep: SweepSpec) -> tuple[SweepSpec, dict[str, str]]:
    """Credentials in a results or storage URI move into this process's environment (which
    pyarrow, a local Ray cluster's workers and the job's runtime environment pass on), so that
    no message, row, manifest or pickled Tune state ever holds them. Returns the sweep and
    those variables (for the runtime environment of a cluster this driver joins)."""
    results, env = strip_credentials(sweep.results)
    storage, env2 = strip_credentials(sweep.storage_path)
    env = {**env2, **env}
    os.environ.update(env)
    return sweep.with_(results=results, storage_path=storage), env


def _check_local_gpus(sweep: SweepSpec, address: str | None, num_gpus: int | None) -> None:
    """On a local cluster this driver will start, a GPU share that no device here can give is
    refused before Ray starts (a running cluster's GPUs are checked by ``_check_capacity``)."""
    r = sweep.resources
    if address is not None or ray.is_initialized() or not r.use_gpu:
        return
    have = num_gpus if num_gpus is not None else torch.cuda.device_count()
    need = r.gpus_per_trial if r.num_workers == 1 else r.num_workers
    if have < need:
        raise SpecError(f"SweepSpec.resources: a model needs {need:g} GPU (--gpus-per-trial / --num-workers) but "
                        f"this machine has {have}; lower --gpus-per-trial, or train on CPUs (--no-gpu)")


def unfinished(store: ResultStore, sweep: SweepSpec) -> list[str]:
    """Grid models whose row or attacks are missing, as ``partition λ seed (what is left)``:
    what a resume will compute. The tables decide, not Tune's bookkeeping."""
    if sweep.search != "grid":
        done = len(store.done_keys("models", sweep.name))
        return [f"{sweep.num_samples - done} of {sweep.num_samples} Optuna trials"] if done < sweep.num_samples else []
    models = store.done_keys("models", sweep.name)
    attacks = store.done_keys("attacks", sweep.name)
    out = []
    for point in sweep.grid_points():
        spec = sweep.model_spec(point["partition"], point["lam"], point["seed"], point.get("suite", 0))
        model_id = spec.model_id(sweep.name)
        ids = [a.attack_id(model_id, p) for p in sweep.attack_partitions(spec) for a in sweep.attack_specs()]
        left = sum(1 for i in ids if i not in attacks)
        where = f"{point['partition'] or 'undefended'} λ={point['lam']:g} seed={point['seed']}"
        if model_id not in models:
            out.append(f"{where}: not trained")
        elif left and _model_row(store, sweep.name, model_id)["status"] == rules.OK:
            out.append(f"{where}: {left} of {len(ids)} attacks left")
    return out


def _param_space(sweep: SweepSpec, use_gpu: bool) -> dict[str, Any]:
    if sweep.search == "grid":
        return {"model": tune.grid_search(sweep.grid_points()), "use_gpu": use_gpu}
    lo, hi = sweep.lam_range
    return {
        "partition": tune.choice(list(sweep.partitions)),
        "lam": tune.loguniform(lo, hi),
        "seed": sweep.seeds[0],
        "use_gpu": use_gpu,
    }


def _check_capacity(sweep: SweepSpec, use_gpu: bool, autoscaling: bool) -> int:
    """Fail fast when a model's training can never be placed beside the attacker pool
    (rather than wait forever), and return how many trials may run at once: as many as can
    train side by side beside the pool, in CPUs and (when used) GPUs. With DDP (whose trials
    hold nothing themselves) one more, so that a model's attacks overlap the next one's
    training; a one-worker trial holds its share through its attacks, and one more would
    take the share the attacker actors need (the sweep would wait forever for its attacks)."""
    r = sweep.resources
    total = ray.cluster_resources()
    need = {"CPU": (r.num_workers * r.cpus_per_worker, r.pool_size * r.attacker_cpus)}
    if use_gpu:
        need["GPU"] = (r.gpus_per_trial if r.num_workers == 1 else float(r.num_workers), r.pool_size * r.attacker_gpus)
    fits = []
    for kind, (per_trial, pool) in need.items():
        free = total.get(kind, 0.0) - pool
        if not autoscaling and free < per_trial - 1e-9:
            raise SpecError(
                f"SweepSpec.resources: a model needs {per_trial:g} {kind} to train but the cluster has "
                f"{total.get(kind, 0.0):g} {kind}, {pool:g} of them held by the attacker pool "
                f"({r.pool_size} actors); lower --pool-size / --attacker-{kind.lower()}s"
                + (", or --gpus-per-trial" if kind == "GPU" else " or Resources.cpus_per_worker")
            )
        if per_trial > 0:
            fits.append(max(1, int((max(free, per_trial) + 1e-9) // per_trial)))
    if r.max_concurrent_trials is not None:
        return r.max_concurrent_trials
    n = min(fits) if fits else 1
    return n if r.num_workers == 1 else n + 1


def _tune_config(sweep: SweepSpec, concurrency: int) -> tune.TuneConfig:
    if sweep.search == "grid":
        return tune.TuneConfig(max_concurrent_trials=concurrency)
    from ray.tune.search.optuna import OptunaSearch

    search = OptunaSearch(metric=["test_acc", "worst_ssim"], mode=["max", "min"], seed=sweep.seeds[0])
    return tune.TuneConfig(search_alg=search, num_samples=sweep.num_samples, max_concurrent_trials=concurrency)


def mark_pareto(store: ResultStore, sweep: str) -> None:
    """Set ``models.pareto`` for every model of the sweep (``rules.pareto_flags``: accuracy
    against the worst-case attacker SSIM at the partition where the model leaks most)."""
    models, attacks = store.read("models", sweep), store.read("attacks", sweep)
    if models.empty:
        return
    for model_id, on in zip(models["model_id"], rules.pareto_flags(models, attacks)):
        store.update_column("models", sweep, model_id, "pareto", bool(on))
