"""Frozen, validated specifications: what one model is, and what a whole sweep is.

Validation happens here, in the driver, before Ray starts: a typo in a partition name
or a negative λ must cost a user one second, not a cluster's start-up.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

SEARCH_MODES = ("grid", "optuna")
ATTACKER_DATA = ("train", "disjoint")


class SpecError(ValueError):
    """A sweep specification that cannot run; the message names the bad field."""


def _bad(fieldname: str, msg: str) -> None:
    raise SpecError(f"SweepSpec.{fieldname}: {msg}")


def content_id(*parts: Any) -> str:
    """Short, stable id of JSON-serialisable parts: equal content, equal id, across runs
    and machines. Model and attack ids (and so Parquet file names) derive from it."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def tunable(attacker: str) -> bool:
    """Whether ``attacker`` trains on pairs, so that tuning has hyperparameters to search: not
    a no-information baseline (fitted in closed form) nor a white-box inversion."""
    from pp_cluster.nets import BASELINES, WHITE_BOX

    return attacker not in BASELINES and attacker not in WHITE_BOX


@dataclass(frozen=True)
class ModelSpec:
    """Everything that determines one defended model (and hence its ``model_id``).

    ``partition`` is None for an undefended model (λ = 0): plain training does not depend on
    the split, so one such model per (data, arch, recipe, seed) is attacked at every partition
    of its grid (:meth:`SweepSpec.attack_partitions`).

    ``partition_suite`` (Section IV-F) names the partitions, in the network's order, that one
    network is defended at together, a defender suite at each (``partition`` is then None); it
    is attacked at each of them. Empty for every other model, and then left out of the id."""

    dataset: str
    arch: str
    partition: str | None
    lam: float
    defenders: tuple[str, ...]
    distance: str
    seed: int
    epochs: int
    batch_size: int
    data_root: str | None = None
    defense: str = "partition"  # "none" when lam == 0; see privacy.defense.DEFENSES
    finetune_epochs: int = 0  # remote fine-tuning with the local partition locked (Sec. IV-G)
    recipe: str = "paper"  # privacy.recipes: "paper" or our "fast"
    dataset_options: Mapping[str, Any] = field(default_factory=dict)
    arch_options: Mapping[str, Any] = field(default_factory=dict)
    train_overrides: Mapping[str, Any] = field(default_factory=dict)
    partition_suite: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["defenders"] = list(self.defenders)
        d["partition_suite"] = list(self.partition_suite)
        d["dataset_options"] = dict(self.dataset_options)
        d["arch_options"] = dict(self.arch_options)
        d["train_overrides"] = dict(self.train_overrides)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelSpec:
        kw = dict(d)
        kw["defenders"] = tuple(kw.get("defenders", ()))
        kw["partition_suite"] = tuple(kw.get("partition_suite", ()))
        return cls(**kw)

    def at(self, partition: str) -> ModelSpec:
        """This model seen at ``partition``: where an attacker splits it (the id is unchanged;
        a suite model keeps its suite)."""
        return replace(self, partition=partition)

    def model_id(self, sweep: str) -> str:
        # data_root is where the data lives, not what it is: moving it keeps the id. A field
        # models had no field for before (no partition suite) is left out, so their ids hold.
        d = self.to_dict()
        d.pop("data_root")
        if not d["partition_suite"]:
            del d["partition_suite"]
        return content_id("model", sweep, d)


@dataclass(frozen=True)
class AttackSpec:
    """One attacker against one model: the zoo name and the attacker's knowledge."""

    attacker: str
    attacker_data: str = "train"
    attacker_fraction: float = 1.0
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    # > 0: an Optuna search of this many candidates (privacy.tuning) picks the attacker's
    # lr, epochs, weight decay and width on its own validation split; 0: these as they are.
    tune_trials: int = 0

    def attack_id(self, model_id: str, partition: str) -> str:
        """Id of this attack on ``model_id`` split at ``partition``. A field at its default
        that attacks had no field for before (``tune_trials = 0``) is left out, so the ids of
        attacks written before it was added still match."""
        fields = asdict(self)
        if not fields["tune_trials"]:
            del fields["tune_trials"]
        return content_id("attack", model_id, partition, fields)


@dataclass(frozen=True)
class Resources:
    """How a sweep uses the cluster. ``use_gpu=None`` follows the cluster's GPUs."""

    num_workers: int = 1
    use_gpu: bool | None = None
    gpus_per_trial: float = 1.0
    cpus_per_worker: float = 1.0
    pool_size: int = 2
    attacker_cpus: float = 0.5
    attacker_gpus: float = 0.0
    max_concurrent_trials: int | None = None
    max_failures: int = 2
    # At most one mid-training checkpoint per this many seconds (0: every epoch). A retried
    # trial redoes at most this much training; the finished model is always checkpointed.
    checkpoint_interval_s: float = 60.0


@dataclass(frozen=True)
class SweepSpec:
    """A whole sweep: the grid (or search space), the zoo, resources and where results go."""

    name: str
    dataset: str
    arch: str
    partitions: tuple[str, ...]
    lams: tuple[float, ...] = (0.0,)
    # Section IV-F: each suite is one network per λ > 0, defender suite and seed, defended at
    # all its partitions at once (listed in the network's order), besides the single-partition grid.
    partition_suites: tuple[tuple[str, ...], ...] = ()
    defender_suites: tuple[tuple[str, ...], ...] = (("deconv",),)
    attackers: tuple[str, ...] = ("deconv", "fc", "sparse_fc")
    seeds: tuple[int, ...] = (0,)
    recipe: str = "paper"  # privacy.recipes: the paper's recipe or our "fast" one (CPU budgets)
    epochs: int = 250
    batch_size: int | None = None  # None: the recipe's (privacy.recipes); a number overrides it
    distance: str = "ssim"
    data_root: str | None = None
    dataset_options: Mapping[str, Any] = field(default_factory=dict)
    arch_options: Mapping[str, Any] = field(default_factory=dict)
    train_overrides: Mapping[str, Any] = field(default_factory=dict)
    attacker_data: str = "train"
    attacker_fraction: float = 1.0
    attack_epochs: int = 20
    attack_batch_size: int = 64
    attack_lr: float = 1e-3
    tune_attackers: int = 0  # per (model, attacker) an Optuna budget of this many candidates; 0: fixed
    results: str = "results"
    storage_path: str | None = None
    search: str = "grid"
    lam_range: tuple[float, float] | None = None
    num_samples: int = 8
    save_reconstructions: bool = False
    # What λ > 0 means (privacy.defense.DEFENSES): the paper's privacy partitioning (λ weighs
    # the defenders' distance), NoPeek (λ weighs dCor(x, H)) or Gaussian noise on H (λ = σ).
    defense: str = "partition"
    finetune_epochs: int = 0
    attributes: bool = False  # Table III: #DF/#CG on every attack's reconstructions (lfw only)
    dp_epsilons: tuple[float, ...] = ()  # Appendix D: DP pixelation of each undefended model's test set
    dp_cell: int = 2  # pixelation grid b
    dp_neighbourhood: int = 1  # DP neighbourhood m
    # Modules imported before validation, in the driver and in every Ray worker: where a
    # user's own networks, decoders, data sets, defenses and distances register (plugins.py).
    plugins: tuple[str, ...] = ()
    resources: Resources = field(default_factory=Resources)

    # -- derived -------------------------------------------------------------
    def storage(self) -> str:
        """Where Ray Tune and Ray Train keep experiment state and checkpoints."""
        if self.storage_path:
            if "://" in self.storage_path:
                return self.storage_path
            return str(Path(self.storage_path).expanduser().resolve())
        if "://" in self.results:
            return self.results.rstrip("/") + "/_ray"
        return str(Path(self.results).expanduser().resolve() / "_ray")

    def results_uri(self) -> str:
        if "://" in self.results:
            return self.results
        return str(Path(self.results).expanduser().resolve())

    def resolved_batch_size(self) -> int:
        """The training batch size: the sweep's own, else its recipe's for its data set."""
        if self.batch_size is not None:
            return self.batch_size
        from pp_cluster.privacy.recipes import recipe

        return recipe(self.dataset, self.recipe).batch_size

    def model_spec(
        self,
        partition: str | None,
        lam: float,
        seed: int,
        suite: int = 0,
        partition_suite: tuple[str, ...] = (),
    ) -> ModelSpec:
        # λ = 0 is plain training: no defender is trained (Algorithm 1 with λ = 0 only
        # spends compute on defenders whose feedback is multiplied by zero), and the model does
        # not depend on the partition: its identity has none (attacked at every partition).
        # A partition suite's model (λ > 0 only) is defended at each of its partitions.
        from pp_cluster.privacy.steps import trains_defenders

        defense = self.defense if lam > 0 else "none"
        if lam > 0 and partition is None and not partition_suite:
            raise SpecError("a defended model (λ > 0) needs the partition it is defended at")
        if partition is not None and partition_suite:
            raise SpecError("a model is defended at one partition or at a partition suite, not both")
        partition = partition if lam > 0 else None
        partition_suite = tuple(partition_suite) if lam > 0 else ()
        defenders = self.defender_suites[suite] if trains_defenders(defense) else ()
        return ModelSpec(
            dataset=self.dataset,
            arch=self.arch,
            partition=partition,
            lam=float(lam),
            defenders=tuple(defenders),
            distance=self.distance,
            seed=int(seed),
            epochs=self.epochs,
            batch_size=self.resolved_batch_size(),
            data_root=self.data_root,
            dataset_options=dict(self.dataset_options),
            arch_options=dict(self.arch_options),
            train_overrides=dict(self.train_overrides),
            defense=defense,
            finetune_epochs=self.finetune_epochs,
            recipe=self.recipe,
            partition_suite=partition_suite,
        )

    def point_spec(self, point: Mapping[str, Any]) -> ModelSpec:
        """The model of a grid point (:meth:`grid_points`) or of an Optuna trial's config."""
        return self.model_spec(
            point["partition"],
            point["lam"],
            point.get("seed", self.seeds[0]),
            point.get("suite", 0),
            tuple(point.get("partition_suite", ())),
        )

    def grid_partitions(self) -> tuple[str, ...]:
        """Every partition of the grid: the swept ones, then those only a partition suite has."""
        return tuple(dict.fromkeys([*self.partitions, *(p for s in self.partition_suites for p in s)]))

    def attack_partitions(self, model: ModelSpec) -> tuple[str, ...]:
        """Where ``model``'s attackers split it: its own partition, each partition of its
        suite, or (undefended) every partition of the grid."""
        if model.partition_suite:
            return tuple(model.partition_suite)
        return (model.partition,) if model.partition is not None else self.grid_partitions()

    def attack_specs(self) -> tuple[AttackSpec, ...]:
        """Every attack of a model at one partition: each attacker with the sweep's fixed
        hyperparameters and, with ``tune_attackers``, a tuned twin of each attacker that trains
        (so the report shows how much tuning adds, on the same model)."""
        fixed = [
            AttackSpec(
                attacker=a,
                attacker_data=self.attacker_data,
                attacker_fraction=self.attacker_fraction,
                epochs=self.attack_epochs,
                batch_size=self.attack_batch_size,
                lr=self.attack_lr,
            )
            for a in self.attackers
        ]
        tuned = [replace(a, tune_trials=self.tune_attackers) for a in fixed if tunable(a.attacker)]
        return tuple(fixed + (tuned if self.tune_attackers else []))

    def grid_points(self) -> list[dict[str, Any]]:
        """The distinct models of a grid sweep as Tune configs, in a stable order. λ = 0 has no
        defender and no partition, so it appears once per seed however many partitions and
        defender suites are swept (``partition`` None; it is attacked at every partition).

        Seed-major: every model of the first seed comes before any of the second, so a sweep
        stopped part way (a session's end, a lost node) holds complete seeds, each defended
        model with its undefended twin, which the paired tables need; a defended-first order
        left an interrupted sweep with defended models and no twin to compare them with.
        Within a seed, models with more defenders come first (each defender about doubles a
        step's cost): longest first, so the last trials to start are the short ones and a
        sweep does not end with one long model training alone while the other cores idle.

        A partition suite adds, per λ > 0, defender suite and seed, one model defended at all
        its partitions (``partition`` None, ``partition_suite`` its partitions)."""
        points, seen, defenders = [], set(), []
        wheres = [(p, ()) for p in self.partitions] + [(None, tuple(s)) for s in self.partition_suites]
        for p, partition_suite in wheres:
            for lam in self.lams:
                if partition_suite and lam == 0:
                    continue  # an undefended model has no suite: it is the λ = 0 point above
                for k in range(len(self.defender_suites) if lam > 0 else 1):
                    for seed in self.seeds:
                        point = {
                            "partition": p if lam > 0 else None,
                            "lam": float(lam),
                            "seed": int(seed),
                            "suite": k,
                        }
                        if partition_suite:
                            point["partition_suite"] = list(partition_suite)
                        model = self.point_spec(point)
                        key = model.model_id(self.name)
                        if key not in seen:
                            seen.add(key)
                            points.append(point)
                            # (a suite trains its defender suite at each of its partitions)
                            defenders.append(len(model.defenders) * max(1, len(model.partition_suite)))
        seed_rank = {int(s): r for r, s in enumerate(self.seeds)}
        order = sorted(range(len(points)), key=lambda i: (seed_rank[points[i]["seed"]], -defenders[i]))
        return [points[i] for i in order]

    def with_(self, **changes: Any) -> SweepSpec:
        return replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=list)

    # -- validation ----------------------------------------------------------
    def validate(self) -> SweepSpec:
        """Check every field that can be checked without data; raise SpecError naming it.
        The plugin modules are imported first: what they register is then valid."""
        self._check_plugins()
        self._check_data_and_recipe()
        self._check_grid()
        self._check_defense_and_evaluations()
        self._check_zoo()
        self._check_resources()
        self._validate_partitions()
        self._check_results_writable()
        return self

    def _check_plugins(self) -> None:
        from pp_cluster.plugins import PluginError, import_plugins

        if isinstance(self.plugins, str) or not all(isinstance(m, str) and m for m in self.plugins):
            _bad("plugins", f"a tuple of module names, got {self.plugins!r}")
        try:
            import_plugins(self.plugins)
        except PluginError as err:
            _bad("plugins", str(err))

    def _check_data_and_recipe(self) -> None:
        from pp_cluster.data import DATASETS
        from pp_cluster.pipeline import SPEC_OWNED
        from pp_cluster.privacy.recipes import RECIPES, recipe
        from pp_cluster.results.store import NAME_PATTERN

        if not NAME_PATTERN.fullmatch(self.name or ""):
            _bad(
                "name",
                f"{self.name!r}: a sweep name is letters, digits, '.', '_' and '-' ({NAME_PATTERN.pattern})",
            )
        if self.dataset not in DATASETS:
            _bad("dataset", f"unknown data set {self.dataset!r}; choose from {', '.join(DATASETS)}")
        if self.recipe not in RECIPES.get(self.dataset, {}):
            _bad(
                "recipe",
                f"{self.recipe!r}: data set {self.dataset!r} has the recipe(s) "
                f"{', '.join(RECIPES.get(self.dataset, {})) or 'none (add them to privacy.recipes.RECIPES)'}",
            )
        owned = sorted(set(self.train_overrides) & set(SPEC_OWNED))
        if owned:
            _bad(
                "train_overrides",
                f"{', '.join(owned)} belong to the sweep itself (set them as sweep fields or "
                "flags: --epochs, --lams, --seeds, --batch-size, ...), not as training overrides",
            )
        try:  # a misspelt or out-of-range override must fail here, not inside every trial
            recipe(self.dataset, self.recipe, **dict(self.train_overrides))
        except (ValueError, TypeError) as err:
            _bad("train_overrides", str(err))

    def _check_grid(self) -> None:
        from pp_cluster.nets import ARCHS

        if self.arch not in ARCHS:
            _bad("arch", f"unknown architecture {self.arch!r}; choose from {', '.join(ARCHS)}")
        if not self.partitions:
            _bad("partitions", "at least one partition point is needed")
        if self.search not in SEARCH_MODES:
            _bad("search", f"{self.search!r}; choose from {', '.join(SEARCH_MODES)}")
        if self.search == "grid" and not self.lams:
            _bad("lams", "at least one λ is needed for a grid sweep")
        for lam in self.lams:
            if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0):
                _bad("lams", f"λ must be a finite number >= 0, got {lam!r}")
        if self.search == "optuna":
            if self.lam_range is None:
                _bad("lam_range", "optuna search needs a λ range (low, high)")
            lo, hi = self.lam_range
            if not (0 < lo < hi and math.isfinite(hi)):
                _bad("lam_range", f"need 0 < low < high (searched on a log scale), got {self.lam_range}")
            if self.num_samples < 1:
                _bad("num_samples", f"the trial budget must be >= 1, got {self.num_samples}")
        if not self.seeds:
            _bad("seeds", "at least one seed is needed")
        if len(set(self.seeds)) != len(self.seeds):
            _bad("seeds", f"seeds repeat: {self.seeds}")
        for seed in self.seeds:
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                _bad(
                    "seeds",
                    f"a seed is an integer >= 0 (torch's generators refuse negative ones), got {seed!r}",
                )
        for name, value in (
            ("epochs", self.epochs),
            ("batch_size", 1 if self.batch_size is None else self.batch_size),  # None: the recipe's
            ("attack_epochs", self.attack_epochs),
            ("attack_batch_size", self.attack_batch_size),
        ):
            if not isinstance(value, int) or value < 1:
                _bad(name, f"must be an integer >= 1, got {value!r}")
        if (
            isinstance(self.tune_attackers, bool)
            or not isinstance(self.tune_attackers, int)
            or self.tune_attackers < 0
        ):
            _bad("tune_attackers", f"must be an integer >= 0 (0: no tuning), got {self.tune_attackers!r}")
        self._check_partition_suites()

    def _check_partition_suites(self) -> None:
        """The suites' shape; that their partitions are the arch's, in its order, is checked
        with the other split points (:meth:`_validate_partitions`)."""
        suites = self.partition_suites
        if isinstance(suites, str) or not all(
            isinstance(s, (tuple, list)) and all(isinstance(p, str) for p in s) for s in suites
        ):
            _bad("partition_suites", f"a tuple of suites, each a tuple of partition names, got {suites!r}")
        if not suites:
            return
        for s in suites:
            if len(s) < 2:
                _bad(
                    "partition_suites",
                    f"{'+'.join(s) or 'an empty suite'}: a suite defends two or more partitions at once "
                    "(a single partition belongs in partitions)",
                )
            if len(set(s)) != len(s):
                _bad("partition_suites", f"{'+'.join(s)}: a partition repeats within the suite")
        if len({tuple(s) for s in suites}) != len(suites):
            _bad("partition_suites", f"suites repeat: {', '.join('+'.join(s) for s in suites)}")
        if self.search != "grid":
            _bad(
                "partition_suites",
                f"partition suites are swept on a grid (search 'grid'), not {self.search!r}",
            )
        if not any(lam > 0 for lam in self.lams):
            _bad(
                "partition_suites",
                "a suite is defended (λ > 0) and lams has no λ > 0: a λ = 0 model is undefended and "
                "has no suite",
            )
        if self.defense != "partition":
            _bad(
                "partition_suites",
                f"a suite is Algorithm 1 at each of its partitions: defense 'partition', not {self.defense!r}",
            )

    def _check_defense_and_evaluations(self) -> None:
        from pp_cluster.privacy.defense import DEFENSES
        from pp_cluster.privacy.metrics import DISTANCES

        if self.defense not in DEFENSES:
            _bad("defense", f"unknown defense {self.defense!r}; choose from {', '.join(DEFENSES)}")
        if (
            isinstance(self.finetune_epochs, bool)
            or not isinstance(self.finetune_epochs, int)
            or self.finetune_epochs < 0
        ):
            _bad(
                "finetune_epochs",
                f"must be an integer >= 0 (0 = no fine-tuning), got {self.finetune_epochs!r}",
            )
        if self.attributes and not (self.dataset == "lfw" and self.dataset_options.get("disjoint")):
            _bad(
                "attributes",
                "gender inference (Table III) needs dataset 'lfw' with dataset option disjoint=True "
                "(the gender classifier trains on people outside the model's identities)",
            )
        for eps in self.dp_epsilons:
            if not (isinstance(eps, (int, float)) and not isinstance(eps, bool) and eps > 0):
                _bad("dp_epsilons", f"ε must be a number > 0 (inf: pixelation without noise), got {eps!r}")
        if self.dp_epsilons and (self.search != "grid" or 0.0 not in self.lams):
            _bad(
                "dp_epsilons",
                "DP pixelation is evaluated on the undefended model: a grid sweep with λ = 0 in lams",
            )
        for name in ("dp_cell", "dp_neighbourhood"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                _bad(name, f"must be an integer >= 1, got {value!r}")
        if self.distance not in DISTANCES:
            _bad("distance", f"unknown distance {self.distance!r}; choose from {', '.join(DISTANCES)}")

    def _check_zoo(self) -> None:
        from pp_cluster.nets import BASELINES, DECODERS, MNIST_ONLY, WHITE_BOX

        if not self.defender_suites or not all(self.defender_suites):
            _bad("defender_suites", "every defender suite needs at least one defender (Algorithm 1)")
        suite_names = tuple(n for suite in self.defender_suites for n in suite)
        for role, names in (("defender_suites", suite_names), ("attackers", self.attackers)):
            for n in names:
                if n not in DECODERS:
                    _bad(role, f"unknown decoder {n!r}; the zoo has {', '.join(DECODERS)}")
                if role == "defender_suites" and n in BASELINES:
                    _bad(
                        role,
                        f"{n!r} is a no-information baseline (it ignores H): an attacker only, "
                        "nothing a defender could learn from",
                    )
                if role == "defender_suites" and n in WHITE_BOX:
                    _bad(
                        role,
                        f"{n!r} is a white-box inversion (it optimises images through the local "
                        "partition, no decoder is trained): an attacker only",
                    )
                if n in MNIST_ONLY and self.arch != "mnist_mlp":
                    _bad(role, f"{n!r} is an Appendix A MNIST network, for mnist_mlp only, not {self.arch}")
        if not self.attackers:
            _bad("attackers", "at least one attacker is needed")
        if len(set(self.attackers)) != len(self.attackers):
            _bad("attackers", f"attackers repeat: {self.attackers}")
        if self.attacker_data not in ATTACKER_DATA:
            _bad("attacker_data", f"{self.attacker_data!r}; choose from {', '.join(ATTACKER_DATA)}")
        if not 0 < self.attacker_fraction <= 1:
            _bad("attacker_fraction", f"must be in (0, 1], got {self.attacker_fraction}")

    def _check_resources(self) -> None:
        r = self.resources
        if r.num_workers < 1:
            _bad("resources.num_workers", f"must be >= 1, got {r.num_workers}")
        if not 0 < r.gpus_per_trial:
            _bad("resources.gpus_per_trial", f"must be > 0, got {r.gpus_per_trial}")
        if r.gpus_per_trial > 1 and not float(r.gpus_per_trial).is_integer():
            _bad(
                "resources.gpus_per_trial",
                f"Ray gives a fraction of one GPU or whole GPUs, not {r.gpus_per_trial}",
            )
        if r.num_workers > 1 and r.gpus_per_trial < 1 and r.use_gpu:
            _bad(
                "resources.gpus_per_trial", "fractional GPUs are for one-worker trials; DDP needs whole GPUs"
            )
        if not (isinstance(r.checkpoint_interval_s, (int, float)) and r.checkpoint_interval_s >= 0):
            _bad(
                "resources.checkpoint_interval_s",
                f"must be seconds >= 0 (0 = every epoch), got {r.checkpoint_interval_s!r}",
            )
        if r.pool_size < 1:
            _bad("resources.pool_size", f"the attacker pool needs >= 1 actor, got {r.pool_size}")
        if not (isinstance(r.max_failures, int) and r.max_failures >= 0):
            _bad("resources.max_failures", f"must be a whole number of retries >= 0, got {r.max_failures!r}")
        if r.attacker_cpus <= 0 and r.attacker_gpus <= 0:
            _bad("resources.attacker_cpus", "an attacker actor needs some CPU or GPU")

    def _validate_partitions(self) -> None:
        import torch

        from pp_cluster.nets import NET_REGISTRY, build_net

        # Split points are a property of the architecture: the stand-in input shape it was
        # registered with and weights on the meta device (no memory) suffice.
        with torch.device("meta"):
            net = build_net(
                self.arch, NET_REGISTRY[self.arch].input_shape, num_classes=2, **dict(self.arch_options)
            )
        valid = net.partitions
        for p in self.partitions:
            if p not in valid:
                raise SpecError(
                    f"SweepSpec.partitions: {p!r} is not a split point of {self.arch}; valid: {', '.join(valid)}"
                )
        for s in self.partition_suites:
            unknown = [p for p in s if p not in valid]
            if unknown:
                _bad(
                    "partition_suites",
                    f"{'+'.join(s)}: {', '.join(map(repr, unknown))} not a split point of {self.arch}; "
                    f"valid: {', '.join(valid)}",
                )
            if list(s) != sorted(s, key=valid.index):
                _bad(
                    "partition_suites",
                    f"{'+'.join(s)}: list a suite's partitions in the network's order "
                    f"({'+'.join(sorted(s, key=valid.index))})",
                )

    def _check_results_writable(self) -> None:
        if "://" in self.results:
            return  # remote stores are checked by the store when it opens them
        root = Path(self.results).expanduser()
        probe_dir = root
        while not probe_dir.exists():
            probe_dir = probe_dir.parent
        if not probe_dir.is_dir() or not os.access(probe_dir, os.W_OK | os.X_OK):
            raise SpecError(f"SweepSpec.results: {root} is not writable (checked {probe_dir})")
