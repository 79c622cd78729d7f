"""The sweep driver: claim the results root, load the data, start Ray, run Ray Tune.

One Tune trial per model of the grid (partition × λ × seed; ``trial.run_trial``) or per
sample of a multi-objective Optuna search; the attacker pool (``pool``) serves every
trial's attacks. Before anything expensive: the spec is validated, the root checked
writable and claimed (``lease``, ``manifest``), the data loaded. Resuming reruns the same
grid over the tables (``trial`` skips what exists); Tune's state is never restored.

The console is the farm's: ``[pp-farm]`` lines, and the errors of trials (Tune logs each
failed trial's traceback). Ray's start-up notices and Tune's console reporter are off
(``TUNE_DRIVER_ENV``, ``_without_token_notice``); Tune's result files and the logger
callbacks a caller passes (``callbacks=``, ``mlflow_callback``) get every epoch's report.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.tune as tune

from pp_cluster import pipeline
from pp_cluster.config import SpecError, SweepSpec
from pp_cluster.farm import manifest
from pp_cluster.farm.capacity import (
    alive_nodes,
    check_capacity,
    check_local_gpus,
    cluster_has_gpu,
    trial_resources,
)
from pp_cluster.farm.lease import Lease
from pp_cluster.farm.pool import start_pool
from pp_cluster.farm.progress import Interrupted, Progress, Signals
from pp_cluster.farm.train import PlacementGroupReaper
from pp_cluster.farm.trial import attack_plan, read_model_row, run_trial
from pp_cluster.plugins import PLUGINS_ENV
from pp_cluster.plugins import runtime_env as plugin_runtime_env
from pp_cluster.results import rules
from pp_cluster.results.fs import is_remote, is_shared, redact, storage_args, strip_credentials
from pp_cluster.results.store import GIT_SHA_ENV, ResultStore, checkout_sha

# Ray Train settings for many short runs: poll the workers often (a run's end is noticed
# in 0.5 s, not 2 s) and give worker start-up time on a busy node before calling it failed.
# Ray Train's Prometheus metrics have no reader without the dashboard: off.
TRAIN_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600",
    "RAY_TRAIN_METRICS_ENABLED": "0",
    # A process that holds no GPU sees none (CUDA_VISIBLE_DEVICES="" for zero-GPU tasks and
    # actors, Ray's pre-2.60 behaviour); capacity.process_device is the rule either way.
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "1",
}

# Read by Tune in the driver while it runs. Its console reporter prints a configuration box
# and a TensorBoard hint even at verbose=0; the legacy one prints nothing at verbose=0 (the
# progress line is the farm's, and Tune still logs every failed trial's traceback). A search's
# metrics are in a trial's last report only, which Tune's strict check would demand of every
# epoch's report too (Optuna learns from the last one: multi-objective, it ignores the rest).
TUNE_DRIVER_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1"}


def train_runtime_env(
    plugins: tuple[str, ...] = (), env_vars: dict[str, str] | None = None
) -> dict[str, Any]:
    """The job runtime environment the farm's Ray sessions want: ``TRAIN_ENV`` and
    ``env_vars``, and what makes every worker import the sweep's ``plugins`` (imported here
    already; ``plugins.runtime_env``: a setup hook, and the plugins' code as ``py_modules``).
    A script or test that calls ``ray.init`` itself passes it as ``runtime_env=``."""
    env = plugin_runtime_env(plugins)
    sha = checkout_sha()  # the rows of workers without a checkout record the driver's commit
    own = {GIT_SHA_ENV: sha} if sha else {}
    return {**env, "env_vars": {**TRAIN_ENV, **own, **(env_vars or {}), **env.get("env_vars", {})}}


# -- the driver --------------------------------------------------------------------------


@dataclass
class SweepOutcome:
    results: str
    n_trials: int
    n_errored: int
    seconds: float


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
    print(
        f"[pp-farm] attribute judge: face detector finds {cal['detection_rate']:.3f} of "
        f"{cal['n_originals']} original test faces ({cal['false_rate']:.3f} of non-faces); gender classifier "
        f"trained on {len(ds.disjoint)} images of other people [{time.time() - t0:.0f} s]",
        file=sys.stderr,
    )
    return judge


def run_sweep(
    sweep: SweepSpec,
    *,
    resume: bool = False,
    address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    verbose: bool = True,
    callbacks: Sequence[tune.Callback] = (),
) -> SweepOutcome:
    """Validate, claim the results root, load the data, start (or join) Ray, run the Tuner,
    mark the Pareto set. ``callbacks``: more Tune callbacks (run in this process), which see
    every trial's per-epoch reports and its last one: ``mlflow_callback(sweep)``, or Tune's
    TensorBoard and Weights & Biases loggers. ``verbose=False``: no output of Ray workers.

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
    check_local_gpus(sweep, address, num_gpus)
    if sweep.plugins and ray.is_initialized():
        _check_job_plugins(sweep.plugins)
    signals = Signals()
    signals.install()
    lease = Lease.acquire(manifest.sweep_dir(sweep.results_uri(), sweep.name), sweep.name)
    started_ray, pool = False, None
    try:
        ds, judge = _prepare(sweep, store, resume)
        if not ray.is_initialized():
            # address None: a new local cluster, never one that happens to run on this machine.
            with _without_token_notice():
                ray.init(
                    address=address or "local",
                    num_cpus=num_cpus if address is None else None,
                    num_gpus=num_gpus if address is None else None,
                    runtime_env=train_runtime_env(sweep.plugins, secret_env),
                    include_dashboard=False,
                    log_to_driver=verbose,
                    configure_logging=False,
                )
            started_ray = True
        signals.install()  # ray.init installed its own SIGTERM handler
        pool_holder: list = []
        try:
            outcome = _tune(sweep, store, ds, judge, address, signals, pool_holder, callbacks)
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
    print(
        f"[pp-farm] sweep {sweep.name!r}: {n_trials} trials ({n_err} errored) in {seconds:.0f} s\n"
        f"[pp-farm] tables: {root}/models  {root}/attacks  {root}/epochs\n"
        f"[pp-farm] read:   import pandas as pd; pd.read_parquet('{root}/attacks')",
        file=sys.stderr,
    )
    return SweepOutcome(root, n_trials, n_err, seconds)


def _prepare(sweep: SweepSpec, store: ResultStore, resume: bool):
    """Under the lease, before Ray: check the run against the root's manifest, load the data
    (bad paths fail here; the data set is then shared with every trial through the object
    store, one copy per node) and the attribute judge; then record the sweep, quarantine
    unreadable files of a resumed one, and give its tables their schema files."""
    mode = manifest.check(
        sweep,
        resume=resume,
        has_results=bool(store.done_keys("models", sweep.name)),
        has_tune_state=_has_tune_state(sweep),
    )
    ds = pipeline.load_data(sweep.model_spec(sweep.partitions[0], 0.0, sweep.seeds[0]))
    if sweep.attacker_data == "disjoint" and ds.disjoint is None:
        raise SpecError(
            "SweepSpec.attacker_data: 'disjoint' needs a data set with a disjoint split "
            "(for lfw set dataset option disjoint=True)"
        )
    judge = _attribute_judge(sweep, ds) if sweep.attributes else None
    # Everything is checked: the sweep exists from here on.
    if mode == "widen":
        recorded = manifest.read(sweep.results_uri(), sweep.name)["spec"]
        union = manifest.widened(recorded, sweep)
        manifest.write(sweep.results_uri(), union)
        print(
            f"[pp-farm] sweep {sweep.name!r}: this run's λ {list(sweep.lams)}, seeds {list(sweep.seeds)}; "
            f"the root now records λ {list(union.lams)}, seeds {list(union.seeds)} (nothing else differs)",
            file=sys.stderr,
        )
    elif mode != "resume":
        manifest.write(sweep.results_uri(), sweep)
    if mode != "new":
        for path in store.quarantine(sweep.name):
            print(
                f"[pp-farm] moved unreadable file to {redact(path)}; its rows are computed again",
                file=sys.stderr,
            )
        print(
            f"[pp-farm] resuming sweep {sweep.name!r}: finished rows are kept, unfinished models continue "
            "from their saved state",
            file=sys.stderr,
        )
    store.ensure_tables(
        sweep.name,
        ("models", "attacks", "epochs") + (("reconstructions",) if sweep.save_reconstructions else ()),
    )
    return ds, judge


def _tune(
    sweep: SweepSpec,
    store: ResultStore,
    ds,
    judge,
    address: str | None,
    signals: Signals,
    pool_holder: list,
    callbacks: Sequence[tune.Callback],
) -> tuple[int, int]:
    """Inside Ray: check the cluster, start the attacker pool, run Tune. Returns (trials, errored)."""
    if not is_shared(sweep.results) and address is not None and alive_nodes() == 1:
        # An autoscaling cluster may have one node now and ten later.
        print(
            f"[pp-farm] warning: results go to {redact(sweep.results)!r} on this node only; if the cluster "
            "autoscales, use s3:// or file:// on a shared mount",
            file=sys.stderr,
        )
    if alive_nodes() > 1 and not is_shared(sweep.results):
        raise SpecError(
            f"SweepSpec.results: {sweep.results!r} is a local path on a cluster; results would be scattered "
            "over the nodes. Use shared storage: s3://bucket/prefix, or file:///nfs/path for an NFS mount "
            "that every node has at the same path."
        )
    r = sweep.resources
    use_gpu = cluster_has_gpu() if r.use_gpu is None else r.use_gpu
    concurrency = check_capacity(sweep, use_gpu, autoscaling=address is not None)
    pool = start_pool(
        sweep.name, r.pool_size, sweep.results_uri(), r.attacker_cpus, r.attacker_gpus if use_gpu else 0.0
    )
    pool_holder.append(pool)
    if r.max_concurrent_trials is not None and address is None:
        # A concurrency the user chose may hand every CPU to trials: place the attacker
        # actors first. (The default one leaves them their share; an autoscaling cluster
        # may place them only once nodes join.)
        ray.get(pool.ready.remote())
    data_ref = ray.put(ds)
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial, sweep=sweep, refs=[data_ref, None if judge is None else ray.put(judge)]
        ),
        trial_resources(r, use_gpu),
    )
    n_trials = len(sweep.grid_points()) if sweep.search == "grid" else sweep.num_samples
    run_config = tune.RunConfig(
        name=sweep.name,
        failure_config=tune.FailureConfig(max_failures=r.max_failures),
        # The reaper frees what Train runs killed with a node leave reserved (train.py).
        callbacks=[Progress(sweep, n_trials, signals), PlacementGroupReaper(), *callbacks],
        verbose=0,
        **storage_args(sweep.storage()),
    )

    def tuner() -> tune.Tuner:
        return tune.Tuner(
            trainable,
            param_space=_param_space(sweep, use_gpu),
            tune_config=_tune_config(sweep, concurrency),
            run_config=run_config,
        )

    with _environment(TUNE_DRIVER_ENV):
        grid = fit_through_memory_kills(tuner, r.max_failures)
    if sweep.search == "optuna":
        mark_pareto(store, sweep.name)
    return n_trials, sum(1 for res in grid if res.error is not None)


def fit_through_memory_kills(make_tuner: Callable[[], tune.Tuner], retries: int) -> tune.ResultGrid:
    """``make_tuner().fit()``, started again (at most ``retries`` times) when Ray's memory monitor
    kills a trial's actor. Tune retries a trial whose actor died (``FailureConfig``), but not
    one its memory monitor killed: Ray raises ``OutOfMemoryError``, which is no
    ``RayActorError``, and Tune's actor manager stops the whole run with "Caught unexpected
    exception" (Ray 2.60, ``air/execution/_internal/actor_manager.py``). A new Tuner over the
    same grid is what ``--resume`` runs: finished models and attacks are kept (the tables say
    what is done), trials continue from their last checkpoint, the attacker pool keeps working."""
    for attempt in range(retries + 1):
        try:
            return make_tuner().fit()
        except RuntimeError as e:
            if not isinstance(e.__cause__, ray.exceptions.OutOfMemoryError) or attempt == retries:
                raise
            print(
                f"[pp-farm] warning: Ray's memory monitor killed a trial ({str(e.__cause__).splitlines()[0]}); "
                f"starting the grid again ({attempt + 1} of {retries}): finished rows are kept and trials "
                "continue from their checkpoints. Run less beside the sweep, or give trials more memory.",
                file=sys.stderr,
            )
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """``env`` in this process's environment for the block, where the caller has not set it."""
    added = {k: v for k, v in env.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


@contextlib.contextmanager
def _without_token_notice() -> Iterator[None]:
    """Ray turns token authentication on for every new local cluster whose ``RAY_AUTH_MODE``
    is unset, and logs a warning saying so each time: that notice is dropped (its warning
    that a cluster runs *without* authentication is kept)."""
    log = logging.getLogger("ray._private.authentication.authentication_token_setup")

    def notice(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled")

    log.addFilter(notice)
    try:
        yield
    finally:
        log.removeFilter(notice)


def mlflow_callback(sweep: SweepSpec, tracking_uri: str | None = None) -> tune.Callback:
    """Tune's ``MLflowLoggerCallback`` for ``sweep`` (the ``track`` extra): an MLflow experiment
    named after the sweep, one run per trial with its grid point as parameters, every epoch's
    report and the last as metrics. It runs in the driver, so the tracking URI is the driver's:
    by default a SQLite file ``<results>/_mlflow/mlflow.db`` (MLflow 3 refuses new file
    stores unless told to), which needs a results root on a path the driver can write."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise SpecError(
            "MLflow tracking needs MLflow: pip install 'pp_cluster[track]' (or mlflow-skinny)"
        ) from None
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    if tracking_uri is None:
        if is_remote(sweep.results):
            raise SpecError(
                f"MLflow tracking: results {redact(sweep.results)!r} are not on this machine; give a "
                "tracking URI, e.g. --callbacks mlflow:http://host:5000 or mlflow:sqlite:////path/mlflow.db"
            )
        folder = Path(sweep.results_uri().removeprefix("file://")) / "_mlflow"
        folder.mkdir(parents=True, exist_ok=True)
        tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    return MLflowLoggerCallback(tracking_uri=tracking_uri, experiment_name=sweep.name)


def _check_job_plugins(plugins: tuple[str, ...]) -> None:
    """A Ray session the caller started must have been given the plugins' runtime env: its
    workers would not know the plugins' names otherwise."""
    job = (ray.get_runtime_context().runtime_env.get("env_vars") or {}).get(PLUGINS_ENV, "")
    missing = [m for m in plugins if m not in job.split(",")]
    if missing:
        raise SpecError(
            f"SweepSpec.plugins: Ray was started without {', '.join(missing)}: start it with "
            "ray.init(runtime_env=pp_cluster.farm.sweep.train_runtime_env(plugins)) or let "
            "run_sweep start it"
        )


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


def _grid_plan(sweep: SweepSpec) -> Iterator[tuple[dict[str, Any], str, list[str]]]:
    """Each grid point, its model id and the ids of the attacks it is planned to get."""
    for point in sweep.grid_points():
        spec = sweep.point_spec(point)
        model_id = spec.model_id(sweep.name)
        yield point, model_id, list(attack_plan(sweep, spec, model_id))


def unfinished(store: ResultStore, sweep: SweepSpec) -> list[str]:
    """Grid models whose row or attacks are missing, as ``partition λ seed (what is left)``:
    what a resume will compute. The tables decide, not Tune's bookkeeping."""
    if sweep.search != "grid":
        done = len(store.done_keys("models", sweep.name))
        return (
            [f"{sweep.num_samples - done} of {sweep.num_samples} Optuna trials"]
            if done < sweep.num_samples
            else []
        )
    models = store.done_keys("models", sweep.name)
    attacks = store.done_keys("attacks", sweep.name)
    out = []
    for point, model_id, ids in _grid_plan(sweep):
        left = sum(1 for i in ids if i not in attacks)
        place = point["partition"] or "+".join(point.get("partition_suite", ())) or "undefended"
        where = f"{place} λ={point['lam']:g} seed={point['seed']}"
        if model_id not in models:
            out.append(f"{where}: not trained")
        elif left and read_model_row(store, sweep.name, model_id)["status"] == rules.OK:
            out.append(f"{where}: {left} of {len(ids)} attacks left")
    return out


def finished_models(store: ResultStore, sweep: SweepSpec) -> list[str]:
    """The grid's models that are done for good: the model ``ok`` and every planned attack ``ok``."""
    return _finished(sweep, store.read("models", sweep.name), store.read("attacks", sweep.name))


def _finished(sweep: SweepSpec, models, attacks) -> list[str]:
    """:func:`finished_models` on tables already read."""
    if sweep.search != "grid":
        raise SpecError("finished models: an Optuna search has no fixed plan to be finished against")
    ok_models = set(models.loc[rules.succeeded(models), "model_id"])
    ok_attacks = set(attacks.loc[rules.succeeded(attacks), "attack_id"])
    return [m for _, m, ids in _grid_plan(sweep) if m in ok_models and set(ids) <= ok_attacks]


def snapshot(store: ResultStore, out: ResultStore, sweep: SweepSpec) -> dict[str, int]:
    """Copy the finished models of ``sweep`` (:func:`finished_models`) with their successful
    attacks and their epochs from ``store`` into ``out``, then compact ``out``: a reference
    folder for ``analysis.report``, or a results root a ``--resume`` elsewhere adopts (it
    computes only the rest). Neither weights nor reconstructions are copied. Rows ``out`` has
    already are kept as they are. Returns the rows copied per table and ``finished``."""
    from pp_cluster.results.compact import compact

    attacks = store.read("attacks", sweep.name)
    done = _finished(sweep, store.read("models", sweep.name), attacks)
    mine = attacks[attacks["model_id"].isin(done) & rules.succeeded(attacks)]
    copied = {
        "models": store.copy_rows("models", sweep.name, done, out),
        "epochs": store.copy_rows("epochs", sweep.name, done, out),
        "attacks": store.copy_rows("attacks", sweep.name, list(mine["attack_id"]), out),
    }
    compact(out, sweep.name)
    return {**copied, "finished": len(done)}


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


def _tune_config(sweep: SweepSpec, concurrency: int) -> tune.TuneConfig:
    if sweep.search == "grid":
        return tune.TuneConfig(max_concurrent_trials=concurrency)
    from ray.tune.search.optuna import OptunaSearch

    search = OptunaSearch(metric=["test_acc", "worst_ssim"], mode=["max", "min"], seed=sweep.seeds[0])
    return tune.TuneConfig(
        search_alg=search, num_samples=sweep.num_samples, max_concurrent_trials=concurrency
    )


def mark_pareto(store: ResultStore, sweep: str) -> None:
    """Set ``models.pareto`` for every model of the sweep (``rules.pareto_flags``: accuracy
    against the worst-case attacker SSIM at the partition where the model leaks most)."""
    models, attacks = store.read("models", sweep), store.read("attacks", sweep)
    if models.empty:
        return
    for model_id, on in zip(models["model_id"], rules.pareto_flags(models, attacks)):
        store.update_column("models", sweep, model_id, "pareto", bool(on))
