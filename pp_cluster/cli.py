"""Command line: ``pp-farm sweep|status|report|compact|export|attack|data`` and the shared flags of
``sweeps/*.py``.

Thin on purpose: flags become a ``SweepSpec``, the spec is validated, the farm runs it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, fields, replace
from pathlib import Path
from typing import Any

from pp_cluster.config import Resources, SpecError, SweepSpec
from pp_cluster.results.fs import redact


def _floats(s: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in s.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated numbers, e.g. 0,0.1; got {s!r}") from None


def _ints(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in s.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated integers, e.g. 0,1,2; got {s!r}") from None


def _names(s: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in s.split(",") if v.strip())


def _suites(s: str) -> tuple[tuple[str, ...], ...]:
    return tuple(_names(suite) for suite in s.split(";") if suite.strip())


def _partition_suites(s: str) -> tuple[tuple[str, ...], ...]:
    """'pool1+pool2,pool1+pool3' -> (('pool1', 'pool2'), ('pool1', 'pool3'))."""
    return tuple(tuple(_names(suite.replace("+", ","))) for suite in _names(s))


def add_sweep_args(p: argparse.ArgumentParser) -> None:
    """The flags every sweep driver shares. No ``choices=`` that a registry owns (recipes,
    updates, defenses): naming them would import torch into ``--help``; the spec's validation
    checks them, with the valid names in its message."""
    g = p.add_argument_group("what to run")
    g.add_argument(
        "--profile",
        choices=("paper", "quick", "cpu", "strong", "ranked"),
        default=None,
        help="paper: the paper's data and budget (default); quick: minutes on the embedded data set "
        "(unless --data-root is given); cpu: the real-data job in a 2-core budget (needs --data-root); "
        "strong (lfw_grid): the cpu models at pool3 against the white-box and tuned attackers; "
        "ranked (mnist_table2): the cpu profile's Table II with the suite the paper's rule picks "
        "from our Table I",
    )
    g.add_argument("--quick", action="store_true", help="the same as --profile quick")
    g.add_argument(
        "--recipe",
        help="training recipe: paper (the paper's) or fast (ours: AdamW, one-cycle, label smoothing, "
        "crop+flip; see privacy/recipes.py)",
    )
    g.add_argument("--name", help="sweep name (the `sweep` column and the Tune experiment name)")
    g.add_argument(
        "--data-root",
        help="folder of the real data set in its standard layout "
        "(e.g. ../shared/data/lfw/lfw-deepfunneled); without it --quick uses the embedded data",
    )
    g.add_argument("--partitions", type=_names, help="comma-separated split points, e.g. pool1,pool2,pool3")
    g.add_argument(
        "--partition-suites",
        type=_partition_suites,
        help="partition suites (Sec. IV-F): each one network per λ > 0 and seed, defended at all its "
        "partitions at once and attacked at each, e.g. pool1+pool2,pool1+pool3 ('+' joins a suite's "
        "partitions, in the network's order; ',' separates suites)",
    )
    g.add_argument("--lams", type=_floats, help="comma-separated defender weights λ, e.g. 0,0.1")
    g.add_argument("--seeds", type=_ints, help="comma-separated seeds (the paper averaged 5)")
    g.add_argument("--epochs", type=int, help="training epochs per model")
    g.add_argument("--batch-size", type=int, help="training batch size")
    g.add_argument("--lr", type=float, help="model learning rate (overrides the paper's recipe)")
    g.add_argument(
        "--defenders",
        type=_suites,
        dest="defender_suites",
        help="defender suites to sweep (decoder zoo names): 'deconv', or 'mnist_a1;mnist_d1,mnist_d2' "
        "(';' separates suites, ',' the defenders of one suite)",
    )
    g.add_argument("--attackers", type=_names, help="attacker zoo (decoder names), e.g. deconv,fc,sparse_fc")
    g.add_argument(
        "--attacker-data",
        choices=("train", "disjoint"),
        help="attacker's images: the model's training set (paper) or other people (disjoint)",
    )
    g.add_argument("--attacker-fraction", type=float, help="fraction of the attacker's data set used (0, 1]")
    g.add_argument("--attack-epochs", type=int, help="epochs per attacker")
    g.add_argument(
        "--tune-attackers",
        type=int,
        metavar="N",
        help="per model and attacker an Optuna search of N candidates (lr, epochs, weight decay, width) "
        "on the attacker's own validation split keeps the strongest (default 0: fixed hyperparameters)",
    )
    g.add_argument("--search", choices=("grid", "optuna"), help="grid over partitions × λ × seeds, or Optuna")
    g.add_argument("--lam-range", type=_floats, help="optuna: λ range 'low,high' (searched on a log scale)")
    g.add_argument("--num-samples", type=int, help="optuna: trial budget")
    g.add_argument(
        "--save-reconstructions",
        action="store_true",
        default=None,
        help="also write a few reconstructed images per attack (Figure 4). On by default in the quick "
        "profiles on embedded public data; on real data they are people's faces: opt-in",
    )
    g.add_argument(
        "--no-save-reconstructions",
        dest="save_reconstructions",
        action="store_false",
        help="write no reconstructed images, not even in a quick profile",
    )
    g.add_argument(
        "--plugins",
        type=_names,
        help="comma-separated modules to import first, here and in every Ray worker, e.g. "
        "mypkg.mymodels: where your own networks, decoders, data sets, defenses and distances "
        "register (README, Extending)",
    )
    g = p.add_argument_group("defenses and extra evaluations")
    # No argparse choices: a --plugins module may register more defenses (checked by validation).
    g.add_argument(
        "--defense",
        help="what λ > 0 trains: the paper's defender suites (partition, default), NoPeek's distance "
        "correlation weight (nopeek), Gaussian noise σ on the activation (noise), or one that a "
        "--plugins module registers",
    )
    g.add_argument(
        "--update",
        help="Algorithm 1's order: alternating (the paper's) or simultaneous: one defender "
        "forward + backward per batch, the λ-gradient from the pre-update defender (faster)",
    )
    g.add_argument(
        "--finetune-epochs",
        type=int,
        help="after training, fine-tune the remote partition with the local one locked (Sec. IV-G) "
        "and record the accuracy before and after",
    )
    g.add_argument(
        "--attributes",
        action="store_true",
        help="Table III: count detected faces and correctly classified genders in every attack's "
        "reconstructions (lfw with its gender lists; loads the disjoint people for the classifier)",
    )
    g.add_argument(
        "--dp-epsilons",
        type=_floats,
        help="Appendix D: evaluate each undefended model on ε-DP pixelated test images, e.g. 0.1,1,10,inf",
    )
    g.add_argument("--dp-cell", type=int, help="DP pixelation grid b (default 2)")
    g.add_argument(
        "--dp-m", type=int, dest="dp_neighbourhood", help="DP pixelation neighbourhood m (default 1)"
    )
    g = p.add_argument_group("where and how")
    g.add_argument("--results", help="results root: a local path, NFS path or s3://bucket/prefix")
    g.add_argument("--storage-path", help="Ray Tune/Train storage (default: <results>/_ray)")
    g.add_argument(
        "--resume",
        action="store_true",
        help="start the sweep, or continue it if it was interrupted (finished work is not redone)",
    )
    g.add_argument(
        "--snapshot",
        metavar="OUT",
        help="copy the sweep's finished models (model ok and every planned attack ok), their "
        "attacks and epochs from --results into the results root OUT, compacted, and stop: no Ray, "
        "nothing written to --results; a reference folder for analysis.report, or a root a --resume "
        "on another machine adopts. Weights and reconstructions are not copied",
    )
    g.add_argument(
        "--dry-run",
        action="store_true",
        help="check the spec and the data as a run would, print the spec, the grid and its work "
        "(models, attacks, epochs, images), and stop: no Ray, nothing written to the results root",
    )
    g.add_argument("--address", help="join a running Ray cluster (e.g. auto); default: start a local one")
    g.add_argument("--num-cpus", type=int, help="CPUs of the local Ray cluster (default: all)")
    g.add_argument("--num-workers", type=int, help="Ray Train workers per model (DDP when > 1)")
    g.add_argument("--gpu", dest="use_gpu", action="store_true", default=None, help="train on GPUs")
    g.add_argument("--no-gpu", dest="use_gpu", action="store_false", help="train on CPUs even if GPUs exist")
    g.add_argument(
        "--gpus-per-trial", type=float, help="GPU share per one-worker trial, e.g. 0.25 packs 4 per GPU"
    )
    g.add_argument("--pool-size", type=int, help="attacker actors in the sweep's pool")
    g.add_argument("--attacker-cpus", type=float, help="CPUs per attacker actor")
    g.add_argument("--attacker-gpus", type=float, help="GPU share per attacker actor")
    g.add_argument("--max-concurrent", type=int, help="most trials running at once")
    g.add_argument(
        "--max-failures",
        type=int,
        help="retries of a failed trial, and restarts of the grid after Ray's memory monitor kills one (default 2)",
    )
    g.add_argument(
        "--checkpoint-interval",
        type=float,
        dest="checkpoint_interval_s",
        help="seconds between mid-training checkpoints (default 60; 0 = every epoch)",
    )
    g.add_argument(
        "--callbacks",
        action="append",
        metavar="mlflow[:URI]",
        help="log every trial's per-epoch and final metrics to MLflow (pip install 'pp_cluster[track]') "
        "at a tracking URI (default sqlite:///<results>/_mlflow/mlflow.db); repeatable. TensorBoard "
        "files are in <storage>/<name> when tensorboardX is installed; other Tune callbacks (e.g. "
        "ray.air.integrations.wandb.WandbLoggerCallback) go to run_sweep(callbacks=[...]) from Python",
    )


_SPEC_FLAGS = (
    "name",
    "data_root",
    "partitions",
    "partition_suites",
    "lams",
    "seeds",
    "epochs",
    "batch_size",
    "defender_suites",
    "attackers",
    "attacker_data",
    "attacker_fraction",
    "attack_epochs",
    "tune_attackers",
    "search",
    "num_samples",
    "results",
    "storage_path",
    "defense",
    "finetune_epochs",
    "dp_epsilons",
    "dp_cell",
    "dp_neighbourhood",
    "recipe",
    "plugins",
    "save_reconstructions",
)
_RESOURCE_FLAGS = (
    "num_workers",
    "use_gpu",
    "gpus_per_trial",
    "pool_size",
    "attacker_cpus",
    "attacker_gpus",
    "checkpoint_interval_s",
    "max_failures",
)


def profile_name(args: argparse.Namespace) -> str:
    if args.quick and args.profile not in (None, "quick"):
        raise SpecError(f"--quick and --profile {args.profile} contradict each other; give one")
    return "quick" if args.quick else (args.profile or "paper")


def spec_from_args(args: argparse.Namespace, driver: str) -> SweepSpec:
    """The driver's chosen profile (paper, quick, cpu, strong or ranked), then every flag the user gave on top."""
    from pp_cluster.profiles import NEEDS_DATA_ROOT, PROFILES

    profiles, name = PROFILES[driver], profile_name(args)
    if name not in profiles:
        raise SpecError(f"--profile {name}: {driver} has the profiles {', '.join(profiles)}")
    if (driver, name) in NEEDS_DATA_ROOT and not args.data_root:
        raise SpecError(
            f"--profile {name} trains on real data: pass --data-root (for lfw_grid the "
            "lfw-deepfunneled folder, e.g. ../shared/data/lfw/lfw-deepfunneled; for MNIST the folder "
            "of its idx files, e.g. ../shared/data/mnist; for cifar_vgg ../shared/data/cifar10)"
        )
    paper, quick, spec = profiles["paper"], profiles["quick"], profiles[name]
    if name == "quick" and args.data_root and quick.dataset != paper.dataset:
        # --quick with real data: the quick budget on the paper's data set, whose images stay
        # unsaved as the paper profile's do (real faces: --save-reconstructions opts in).
        spec = replace(
            quick,
            dataset=paper.dataset,
            dataset_options=paper.dataset_options,
            arch_options=quick.arch_options,
            name=quick.name + "_real",
            save_reconstructions=paper.save_reconstructions,
        )
    changes = {k: getattr(args, k) for k in _SPEC_FLAGS if getattr(args, k, None) is not None}
    if args.attributes:
        changes["attributes"] = True
        if spec.dataset == "lfw":  # the gender classifier trains on the people outside the model
            changes["dataset_options"] = {**spec.dataset_options, "disjoint": True}
    if args.lam_range is not None:
        if len(args.lam_range) != 2:
            raise SpecError("--lam-range: give two numbers 'low,high'")
        changes["lam_range"] = tuple(args.lam_range)
    overrides = {k: getattr(args, k) for k in ("lr", "update") if getattr(args, k, None) is not None}
    if overrides:
        changes["train_overrides"] = {**spec.train_overrides, **overrides}
    res = {k: getattr(args, k) for k in _RESOURCE_FLAGS if getattr(args, k, None) is not None}
    if args.max_concurrent is not None:
        res["max_concurrent_trials"] = args.max_concurrent
    if res:
        changes["resources"] = replace(spec.resources, **res)
    return replace(spec, **changes)


# A profile's fields as the flags that set them, in the order ``--help`` lists them: these for
# every profile, the _EXTRA ones where a profile differs from SweepSpec's default.
_PROFILE_FLAGS = (
    ("partitions", "--partitions"),
    ("lams", "--lams"),
    ("seeds", "--seeds"),
    ("epochs", "--epochs"),
    ("batch_size", "--batch-size"),
    ("recipe", "--recipe"),
    ("defender_suites", "--defenders"),
    ("attackers", "--attackers"),
    ("attack_epochs", "--attack-epochs"),
)
_PROFILE_EXTRA_FLAGS = (
    ("attacker_data", "--attacker-data"),
    ("attacker_fraction", "--attacker-fraction"),
    ("tune_attackers", "--tune-attackers"),
    ("search", "--search"),
    ("lam_range", "--lam-range"),
    ("num_samples", "--num-samples"),
    ("defense", "--defense"),
    ("finetune_epochs", "--finetune-epochs"),
    ("attributes", "--attributes"),
    ("dp_epsilons", "--dp-epsilons"),
    ("dp_cell", "--dp-cell"),
    ("dp_neighbourhood", "--dp-m"),
    ("save_reconstructions", "--save-reconstructions"),
    ("plugins", "--plugins"),
)
_RESOURCE_FLAG_NAMES = {
    "num_workers": "--num-workers",
    "gpus_per_trial": "--gpus-per-trial",
    "pool_size": "--pool-size",
    "attacker_cpus": "--attacker-cpus",
    "attacker_gpus": "--attacker-gpus",
    "max_concurrent_trials": "--max-concurrent",
    "checkpoint_interval_s": "--checkpoint-interval",
    "max_failures": "--max-failures",
}
# Not in a profile's flags: its head line (sweep name, data set, net) and the user's own paths.
_NOT_PROFILE = (
    "name",
    "dataset",
    "dataset_options",
    "arch",
    "arch_options",
    "data_root",
    "results",
    "storage_path",
)


def _default(cls: type, name: str) -> Any:
    f = next(f for f in fields(cls) if f.name == name)
    return f.default_factory() if f.default is MISSING else f.default


def _text(v: Any) -> str:
    """A value as the command line writes it: 0.1 not 0.10000000000000001, tuples with commas,
    defender suites with ';'."""
    if isinstance(v, float):
        return f"{v:g}" if float(f"{v:g}") == v else repr(v)
    if isinstance(v, tuple) and v and all(isinstance(x, tuple) for x in v):
        return ";".join(",".join(s) for s in v)
    if isinstance(v, tuple):
        return ",".join(_text(x) for x in v)
    if isinstance(v, Mapping):
        return ", ".join(
            f"{k}=({_text(x)})" if isinstance(x, tuple) else f"{k}={_text(x)}" for k, x in v.items()
        )
    return str(v)


def profile_flags(spec: SweepSpec) -> tuple[list[str], list[str]]:
    """(the flags that set ``spec``'s sweep fields, a note for each field that differs from
    SweepSpec's default and has no flag). Given on top of another profile, the flags make its
    fields ``spec``'s (a test checks it)."""
    items, notes = [], []
    extra = [(n, flag) for n, flag in _PROFILE_EXTRA_FLAGS if getattr(spec, n) != _default(SweepSpec, n)]
    for name, flag in (*_PROFILE_FLAGS, *extra):
        v = getattr(spec, name)
        if v is None and name == "batch_size":  # the recipe's (resolving it would import torch)
            notes.append("batch size: the recipe's")
            continue
        items.append(flag if v is True else f"{flag} {shlex.quote(_text(v))}")
    for k, v in spec.train_overrides.items():
        if k in ("lr", "update"):
            items.append(f"--{k} {shlex.quote(_text(v))}")
        else:
            notes.append(f"train_overrides {k}={_text(v)}")
    for f in fields(spec.resources):
        v = getattr(spec.resources, f.name)
        if v == f.default:
            continue
        if f.name == "use_gpu":
            items.append("--gpu" if v else "--no-gpu")
        elif f.name in _RESOURCE_FLAG_NAMES:
            items.append(f"{_RESOURCE_FLAG_NAMES[f.name]} {_text(v)}")
        else:
            notes.append(f"resources.{f.name} {_text(v)}")
    flagged = {n for n, _ in (*_PROFILE_FLAGS, *_PROFILE_EXTRA_FLAGS)}
    flagged |= {"train_overrides", "resources", *_NOT_PROFILE}
    for f in fields(spec):
        if f.name not in flagged and getattr(spec, f.name) != _default(SweepSpec, f.name):
            notes.append(f"{f.name} {_text(getattr(spec, f.name))}")
    return items, notes


def profiles_help(drivers: Sequence[str]) -> str:
    """``--help``'s epilog: each profile of ``drivers`` as its data set, net and flags."""
    from pp_cluster.profiles import PROFILES

    lines = ["profiles (--profile NAME; --quick = --profile quick; a flag you give replaces its value):"]
    pad = "  " if len(drivers) > 1 else ""  # pp-farm sweep --help: the profiles under each driver
    for driver in drivers:
        if pad:
            lines.append(f"  {driver}")
        for name, spec in PROFILES[driver].items():
            head = f"{name}{' (the default)' if name == 'paper' else ''}: sweep {spec.name}, {spec.dataset}"
            head += f" ({_text(spec.dataset_options)})" if spec.dataset_options else ""
            head += f", {spec.arch}" + (f" ({_text(spec.arch_options)})" if spec.arch_options else "")
            lines += textwrap.wrap(head, 100, initial_indent=pad + "  ", subsequent_indent=pad + "      ")
            row = pad + "     "
            flags, notes = profile_flags(spec)
            for item in flags + [f"({note})" for note in notes]:
                if len(row) + len(item) > 100 and row.strip():
                    lines.append(row)
                    row = pad + "     "
                row += " " + item
            lines.append(row)
    return "\n".join(lines)


def _add_version(p: argparse.ArgumentParser) -> None:
    from pp_cluster import __version__

    p.add_argument("--version", action="version", version=f"pp_cluster {__version__}")


def sweep_main(driver: str, doc: str | None, argv: Sequence[str] | None = None) -> int:
    """Entry point of every ``sweeps/*.py`` driver: ``driver`` names its profiles in ``PROFILES``."""
    p = argparse.ArgumentParser(
        description=doc, epilog=profiles_help([driver]), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _add_version(p)
    add_sweep_args(p)
    args = p.parse_args(argv)
    return _run(args, driver)


def resume_command(argv: Sequence[str] | None = None) -> str:
    """The command line that continues this sweep: the one that ran, with ``--resume``."""
    argv = list(sys.argv if argv is None else argv)
    head = ["pp-farm"] if Path(argv[0]).name == "pp-farm" else ["python", argv[0]]
    rest = argv[1:] + ([] if "--resume" in argv else ["--resume"])
    return redact(shlex.join(head + rest))


def _callback_uris(values: Sequence[str]) -> list[str | None]:
    """``--callbacks`` values checked: the tracking URI of each (None: the default one)."""
    out = []
    for value in values:
        name, _, uri = value.partition(":")
        if name != "mlflow":
            raise SpecError(
                f"--callbacks {value}: the command line knows mlflow[:<tracking uri>]; pass other Tune "
                "callbacks (TensorBoard, wandb, ...) to pp_cluster.farm.sweep.run_sweep(callbacks=[...])"
            )
        out.append(uri or None)
    return out


def tune_callbacks(values: Sequence[str], spec: SweepSpec) -> list:
    """``--callbacks`` as Tune callbacks, built before Ray starts (a missing package is a usage
    error). The command line knows ``mlflow[:<tracking uri>]``."""
    uris = _callback_uris(values)
    from pp_cluster.farm.sweep import mlflow_callback

    return [mlflow_callback(spec, uri) for uri in uris]


def dry_run(spec: SweepSpec) -> str:
    """What a run of the validated ``spec`` would do, for ``--dry-run``: the data set is loaded
    as a run loads it (a bad root fails with the same message), then the resolved spec, the
    grid and its work as counts. No Ray, nothing written to the results root. The counts are
    not turned into a time: seconds per image depend on the network, the split, the defenders
    and the machine (measured ones are in benchmarks/README.md)."""
    from pp_cluster.config import tunable
    from pp_cluster.data.attacker import attacker_data
    from pp_cluster.nets import BASELINES, WHITE_BOX
    from pp_cluster.pipeline import load_data

    ds = load_data(spec.model_spec(spec.partitions[0], 0.0, spec.seeds[0]))
    try:  # the attacker's images, as pipeline.attack_inputs takes them
        attacker_train, _ = attacker_data(ds, spec.attacker_data, spec.attacker_fraction, spec.seeds[0])
    except ValueError as e:
        raise SpecError(f"SweepSpec.attacker_data: {e}") from None
    n_train, n_test, n_att = len(ds.train), len(ds.test), len(attacker_train)

    values = {f.name: getattr(spec, f.name) for f in fields(spec) if f.name != "resources"}
    values["results"] = spec.results_uri()  # where a run puts them (it pins relative paths)
    values["storage_path"] = spec.storage() + ("" if spec.storage_path else " (the default)")
    values.update({f"resources.{r.name}": getattr(spec.resources, r.name) for r in fields(Resources)})
    width = max(map(len, values)) + 2
    out = [
        f"dry run of sweep {spec.name!r}: nothing started, nothing written to the results root",
        "",
        "spec",
    ]
    out += [f"  {k:<{width}}{redact(_text(v)) or '-'}" for k, v in values.items()]
    shape = "×".join(map(str, ds.image_shape))
    out += [
        "",
        f"data: {ds.name}, {n_train} training and {n_test} test images ({shape}, {ds.num_classes} classes); "
        f"the attackers train on {n_att} ({spec.attacker_data}, fraction {_text(spec.attacker_fraction)})",
    ]

    attacks = spec.attack_specs()
    if spec.search == "grid":
        models = [spec.model_spec(**point) for point in spec.grid_points()]
        pairs = sum(len(spec.attack_partitions(m)) for m in models)
        n_def = sum(m.lam > 0 for m in models)
        out += [
            "",
            f"grid: {len(models)} models ({n_def} defended, {len(models) - n_def} undefended), attacked at "
            f"{pairs} (model, partition) pairs by {len(attacks)} attacks each: {pairs * len(attacks)} attacks",
        ]
        rows = [("partition", "λ", "seed", "defense", "defenders", "attacked at", "attacks")]
        for m in models:
            at = spec.attack_partitions(m)
            cells = (m.partition or "-", _text(m.lam), str(m.seed), m.defense, ",".join(m.defenders) or "-")
            rows.append((*cells, ",".join(at), str(len(at) * len(attacks))))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        out += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    else:  # each trial: one model, defended at the λ and partition Optuna draws
        models = [spec.model_spec(spec.partitions[0], spec.lam_range[1], spec.seeds[0])] * spec.num_samples
        pairs = len(models)
        lo, hi = spec.lam_range
        out += [
            "",
            f"optuna search: {len(models)} trials, each a model defended ({spec.defense}) at a λ drawn "
            f"log-uniformly from [{_text(lo)}, {_text(hi)}] and a partition from {_text(spec.partitions)}, "
            f"seed {spec.seeds[0]}, attacked there by {len(attacks)} attacks: {pairs * len(attacks)} attacks",
        ]

    model_epochs = sum(m.epochs for m in models)
    defender_epochs = sum(m.epochs * len(m.defenders) for m in models)
    trained = [a for a in attacks if tunable(a.attacker) and not a.tune_trials]
    tuned = [a for a in attacks if a.tune_trials]
    baselines = [a.attacker for a in attacks if a.attacker in BASELINES]
    white_box = [a.attacker for a in attacks if a.attacker in WHITE_BOX]
    work = [
        f"training     {len(models)} models: {model_epochs:,} model-epochs = {model_epochs * n_train:,} "
        "training images through the network"
        + (f", and {defender_epochs:,} defender-epochs beside them" if defender_epochs else "")
    ]
    if spec.finetune_epochs:
        fe = len(models) * spec.finetune_epochs
        work.append(f"fine-tuning  {fe:,} epochs of the remote partition = {fe * n_train:,} images")
    work.append(
        f"activations  {pairs} (model, partition) pairs: {pairs * (n_att + n_test):,} images through a "
        "local partition (once per pair, whatever the attackers)"
    )
    if trained:
        att_epochs = pairs * sum(a.epochs for a in trained)
        work.append(
            f"attackers    {pairs * len(trained)} decoders: {att_epochs:,} attacker-epochs = "
            f"{att_epochs * n_att:,} images"
        )
    if tuned:
        e = tuned[0].epochs
        work.append(
            f"tuning       {pairs * len(tuned)} tuned twins: each up to {spec.tune_attackers} candidates of "
            f"{-(-e // 2)}-{2 * e} epochs on the attacker's images"
        )
    if white_box:
        work.append(
            f"white-box    {pairs * len(white_box)} inversions ({', '.join(white_box)}): each optimises the "
            f"{n_test} test images through the local partition"
        )
    if baselines:
        work.append(f"baselines    {pairs * len(baselines)} ({', '.join(baselines)}): closed form")
    if spec.dp_epsilons:
        n_plain = sum(m.lam == 0 for m in models)
        work.append(
            f"DP           {n_plain} undefended models × {len(spec.dp_epsilons)} ε: "
            f"{n_plain * len(spec.dp_epsilons) * n_test:,} pixelated test images evaluated"
        )
    if spec.attributes:
        work.append(
            "Table III    a face detector and a gender classifier fitted once; every attack's "
            "reconstructions of the test images judged"
        )
    out += [
        "",
        "work (counts; no time estimate: it depends on the net, the split, the defenders and the machine)",
    ]
    for w in work:
        out += textwrap.wrap(w, 100, initial_indent="  ", subsequent_indent=" " * 15)
    out.append("")
    out += textwrap.wrap(
        "a real run also checks, before Ray starts: the results root's manifest and lease (a rerun needs "
        "--resume), the GPUs asked for, --callbacks' packages, and (--attributes) the gender lists",
        100,
    )
    return "\n".join(out)


def _bad_input(e: Exception) -> int:
    print(f"pp-farm: error: {redact(str(e))}", file=sys.stderr)
    return 2


def _run(args: argparse.Namespace, driver: str) -> int:
    """Validate (exit 2 on bad input, before Ray is imported); print the plan (``--dry-run``)
    or run the sweep: 0, 1 when a trial failed, 130/143 when interrupted."""
    if args.gpus_per_trial is not None and not args.use_gpu:
        print("pp-farm: error: --gpus-per-trial applies to GPU training only: add --gpu", file=sys.stderr)
        return 2
    try:
        spec = spec_from_args(args, driver).validate()
        _callback_uris(args.callbacks or ())
        if args.dry_run:
            print(dry_run(spec))
            return 0
        if args.snapshot:
            return _snapshot(spec, args.snapshot)
    except KeyboardInterrupt:
        print("[pp-farm] interrupted before the sweep started", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # SpecError is a ValueError
        return _bad_input(e)
    return _sweep(args, spec)


def _snapshot(spec: SweepSpec, out: str) -> int:
    """``--snapshot OUT``: the finished models of ``spec``'s results root copied into ``out``."""
    from pp_cluster.farm.sweep import snapshot
    from pp_cluster.results.store import ResultStore

    if redact(out).rstrip("/") == redact(spec.results).rstrip("/"):
        raise SpecError("--snapshot: OUT must be another results root than --results")
    store = ResultStore(spec.results)
    if store.read("models", spec.name).empty:
        raise SpecError(f"--snapshot: sweep {spec.name!r} has no models under {redact(spec.results)}")
    n = snapshot(store, ResultStore(out), spec)
    print(
        f"[pp-farm] snapshot of {spec.name!r}: {n['finished']} finished models; copied {n['models']} models, "
        f"{n['attacks']} attacks and the epochs of {n['epochs']} models into {redact(out)} (rows it had are kept)"
    )
    return 0


def _sweep(args: argparse.Namespace, spec: SweepSpec) -> int:
    from pp_cluster.farm.sweep import Interrupted, run_sweep

    try:
        callbacks = tune_callbacks(args.callbacks or (), spec)
        outcome = run_sweep(
            spec, resume=args.resume, address=args.address, num_cpus=args.num_cpus, callbacks=callbacks
        )
    except Interrupted as e:
        print(
            f"[pp-farm] {e}"
            + "".join(f"\n  {u}" for u in e.unfinished)
            + f"\n[pp-farm] finished rows are kept; continue with:\n  {resume_command()}",
            file=sys.stderr,
        )
        return e.exit_code
    except KeyboardInterrupt:  # before the sweep began: nothing was written
        print("[pp-farm] interrupted before the sweep started", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # SpecError is a ValueError
        return _bad_input(e)
    return 0 if outcome.n_errored == 0 else 1


def _status(args: argparse.Namespace) -> int:
    import warnings

    from analysis.tables import load
    from pp_cluster.results.rules import succeeded, worst_values  # the one strongest-attacker rule
    from pp_cluster.results.store import UnreadableFile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnreadableFile)  # listed below, once
            res = load(args.results)  # a mistyped root is an error, not "no models"
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"pp-farm: error: {redact(str(e))}", file=sys.stderr)
        return 2
    for path, why in res.unreadable.items():
        print(
            f"pp-farm: warning: left out unreadable file {redact(path)} ({why}); "
            "a --resume of its sweep moves it to _quarantine/ and computes its rows again",
            file=sys.stderr,
        )
    models, attacks = res.models, res.attacks
    if models.empty:
        print(f"no models under {args.results}")
        return 0
    for sweep, m in models.groupby("sweep", observed=True):
        a = attacks[attacks["sweep"] == sweep]
        ok = a[succeeded(a)]
        print(
            f"sweep {sweep}: {len(m)} models ({succeeded(m).sum()} ok, "
            f"{(m['status'] == 'diverged').sum()} diverged), {len(a)} attacks ({len(ok)} ok)"
        )
        if not ok.empty:
            # One line per (model, partition attacked): an undefended model shows at every partition.
            worst = worst_values(ok)[["model_id", "partition", "ssim", "ssim_attacker"]]
            table = m[["model_id", "lam", "seed", "test_acc"]].merge(worst, on="model_id")
            table = table.rename(columns={"ssim": "worst_ssim", "ssim_attacker": "by"})
            print(
                table.drop(columns="model_id")
                .sort_values(["partition", "lam", "seed"])
                .to_string(index=False)
            )
    return 0


def add_report_args(p: argparse.ArgumentParser) -> None:
    """The flags of ``pp-farm report`` and ``python -m analysis.report`` (one definition; here,
    so that ``pp-farm --help`` imports no analysis code)."""
    from pp_cluster.profiles import PUBLIC_DATASETS

    p.add_argument("root", help="results root (local path or s3://bucket/prefix)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory for report.md, report.html (self-contained), PNGs, CSVs and per_image.parquet",
    )
    p.add_argument("--sweep", default=None, help="only this sweep (default: every sweep under the root)")
    p.add_argument(
        "--markdown",
        type=Path,
        default=None,
        metavar="PAGE",
        help="also (or only) write the reproducible results page, tables beside the paper's, to PAGE "
        "(e.g. docs/results_lfw.md)",
    )
    p.add_argument(
        "--activation-maps",
        action="store_true",
        help="draw Figures 6/8/9 (hidden activation maps) for data sets other than the embedded public "
        f"ones ({', '.join(PUBLIC_DATASETS)}): maps of a face are images of that person; needs the "
        "models' state files under the root",
    )


def _report(args: argparse.Namespace) -> int:
    """``python -m analysis.report``; without --out or --markdown it writes into ./report."""
    from analysis.report import run

    if args.out is None and args.markdown is None:
        args.out = Path("report")
    return run(args, prog="pp-farm")


def _compact(args: argparse.Namespace) -> int:
    """Pack each sweep's one-row files into a few large ones (results.compact), holding the
    sweep's lease so that no driver writes meanwhile."""
    from pp_cluster.farm import manifest
    from pp_cluster.farm.lease import Lease
    from pp_cluster.results.compact import compact
    from pp_cluster.results.store import ResultStore

    try:
        store = ResultStore(args.results)
        sweeps = [args.sweep] if args.sweep else sorted(store.read("models")["sweep"].astype(str).unique())
        if not sweeps:
            raise FileNotFoundError(f"no sweeps under {redact(args.results)}")
        for sweep in sweeps:
            with Lease.acquire(manifest.sweep_dir(store.root, sweep), sweep):
                merged = compact(store, sweep)
            print(f"sweep {sweep}: " + ", ".join(f"{t} {n} files merged" for t, n in merged.items()))
    except (SpecError, FileNotFoundError, ValueError, OSError) as e:
        print(f"pp-farm: error: {redact(str(e))}", file=sys.stderr)
        return 2
    return 0


def _export(args: argparse.Namespace) -> int:
    """Write one trained model's local partition (``models.export_local``); bad input fails
    before the data set is read or anything is written."""
    from pp_cluster.results.fs import is_remote

    if not is_remote(args.out) and Path(args.out).exists() and not Path(args.out).is_dir():
        print(f"pp-farm: error: --out {args.out} is a file, not a folder", file=sys.stderr)
        return 2
    from pp_cluster.models import EXPORT_META, export_local, load_model

    try:
        model = load_model(
            args.results,
            args.model_id,
            partition=args.partition,
            storage=args.storage,
            data_root=args.data_root,
        )
        meta = export_local(model, args.out)
    except (ValueError, OSError, RuntimeError) as e:  # models.ModelLoadError is a ValueError
        print(f"pp-farm: error: {redact(str(e))}", file=sys.stderr)
        return 2
    print(
        f"model {meta['model_id']} ({model.spec.arch}, λ = {model.spec.lam:g}, test acc "
        f"{meta['final']['test_acc']}): local partition up to {meta['partition']}, input "
        f"{meta['input_shape']} in {meta['value_range']}, activation {meta['activation_shape']}, "
        f"TorchScript by {meta['torchscript']}"
    )
    for name in (*meta["files"].values(), EXPORT_META):
        print(f"  {redact(args.out.rstrip('/'))}/{name}")
    return 0


def _shard(text: str) -> tuple[int, int]:
    i, sep, n = text.partition("/")
    try:
        if sep and 0 <= int(i) < int(n):
            return int(i), int(n)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N, e.g. 0/2; got {text!r}")


def _attack(args: argparse.Namespace) -> int:
    """Attack a finished sweep's models with more attackers (``reattack``); the plan is checked
    (and printed with --dry-run) before any model is loaded."""
    from pp_cluster.reattack import plan, reattack
    from pp_cluster.results.store import ResultStore

    try:
        jobs = plan(
            ResultStore(args.results),
            args.sweep,
            args.attackers,
            tune_trials=args.tune_attackers,
            epochs=args.attack_epochs,
            batch_size=args.attack_batch_size,
            lr=args.attack_lr,
            models=args.models,
            partitions=args.partitions,
            shard=args.shard,
        )
    except (ValueError, OSError) as e:  # SpecError is a ValueError
        print(f"pp-farm: error: {redact(str(e))}", file=sys.stderr)
        return 2
    pairs = len({(j.model_id, j.partition) for j in jobs})
    print(f"[pp-farm] {len(jobs)} attacks to run on {pairs} (model, partition) pairs of sweep {args.sweep!r}")
    if args.dry_run or not jobs:
        return 0
    try:
        reattack(args.results, args.sweep, jobs, storage=args.storage, data_root=args.data_root)
    except (ValueError, OSError) as e:  # a model that cannot be loaded
        print(f"pp-farm: error: {redact(str(e))}", file=sys.stderr)
        return 2
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from pp_cluster.data.fetch import fetch_dataset

    try:
        path = fetch_dataset(args.dataset, Path(args.root))
    except (OSError, RuntimeError, ValueError) as e:
        print(f"pp-farm: error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from pp_cluster.profiles import PROFILES

    p = argparse.ArgumentParser(prog="pp-farm", description="privacy-partitioning sweep and attack farm")
    _add_version(p)
    sub = p.add_subparsers(dest="command", required=True)
    sp = sub.add_parser(
        "sweep",
        help="run a sweep profile (the same as python sweeps/<profile>.py)",
        epilog=profiles_help(sorted(PROFILES)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sp.add_argument("driver", choices=sorted(PROFILES), help="which sweep (sweeps/<driver>.py)")
    add_sweep_args(sp)
    st = sub.add_parser("status", help="summarise the models and attacks under a results root")
    st.add_argument("results", help="results root (local path or s3://...)")
    rp = sub.add_parser(
        "report",
        help="write the report of a results root: report.md, a self-contained report.html, figures, "
        "CSVs and per_image.parquet (the same as python -m analysis.report; default --out report)",
    )
    add_report_args(rp)
    co = sub.add_parser(
        "compact",
        help="merge a results root's one-row files into a few large ones "
        "(same rows for every reader; run while no sweep is running there)",
    )
    co.add_argument("results", help="results root (local path or s3://...)")
    co.add_argument("--sweep", help="only this sweep (default: every sweep)")
    ex = sub.add_parser(
        "export",
        help="write a trained model's local partition (state dict, TorchScript, export.json) for a device",
    )
    ex.add_argument("results", help="results root (local path or s3://...)")
    ex.add_argument("model_id", help="the model's id (the models table's model_id; pp-farm status)")
    ex.add_argument("--out", required=True, help="folder to write into (local path or s3://...)")
    ex.add_argument(
        "--partition",
        help="where to cut the local partition (default: where the model was defended; an undefended "
        "model: its arch's default split point)",
    )
    ex.add_argument("--storage", help="the sweep's --storage-path, if it had one (default: <results>/_ray)")
    ex.add_argument(
        "--data-root",
        help="the model's data set on this machine, if not where it was trained (real data only)",
    )
    at = sub.add_parser(
        "attack",
        help="attack a finished sweep's models with more attackers (e.g. rmle, tuned ones), without "
        "training them again; attacks whose rows exist are skipped",
    )
    at.add_argument("results", help="results root (local path or s3://...)")
    at.add_argument("sweep", help="the sweep whose models to attack")
    at.add_argument(
        "--attackers", type=_names, required=True, help="comma-separated zoo names, e.g. rmle,resdec"
    )
    at.add_argument(
        "--tune-attackers",
        type=int,
        default=0,
        metavar="N",
        help="also a tuned twin of each attacker that trains: an Optuna search of N candidates",
    )
    at.add_argument("--attack-epochs", type=int, default=20, help="epochs per attacker (use the sweep's)")
    at.add_argument("--attack-batch-size", type=int, default=64, help="attacker batch size (use the sweep's)")
    at.add_argument("--attack-lr", type=float, default=1e-3, help="attacker learning rate (use the sweep's)")
    at.add_argument("--models", type=_names, help="only these model ids (default: every finished model)")
    at.add_argument(
        "--partitions", type=_names, help="only at these partitions (default: every one attacked)"
    )
    at.add_argument(
        "--shard",
        type=_shard,
        default=(0, 1),
        metavar="I/N",
        help="run the I-th of N disjoint shares of the (model, partition) pairs (N processes, no races)",
    )
    at.add_argument("--storage", help="the sweep's --storage-path, if it had one (default: <results>/_ray)")
    at.add_argument(
        "--data-root", help="the models' data set on this machine, if not where they were trained"
    )
    at.add_argument("--dry-run", action="store_true", help="print how many attacks would run, run none")
    da = sub.add_parser("data", help="data sets")
    da_sub = da.add_subparsers(dest="data_command", required=True)
    fe = da_sub.add_parser("fetch", help="download a public data set into its standard layout")
    fe.add_argument("dataset", choices=("lfw", "mnist", "cifar10"))
    fe.add_argument("--root", required=True, help="folder to download into")
    args = p.parse_args(argv)
    if args.command == "sweep":
        return _run(args, args.driver)
    if args.command == "status":
        return _status(args)
    if args.command == "report":
        return _report(args)
    if args.command == "compact":
        return _compact(args)
    if args.command == "export":
        return _export(args)
    if args.command == "attack":
        return _attack(args)
    return _fetch(args)


if __name__ == "__main__":
    sys.exit(main())
