"""The sweep manifest: what a results root holds a sweep *of*, so that a resume cannot mix specs.

When a sweep starts, ``<results>/_sweeps/<name>/manifest.json`` records its resolved spec (the
fields that decide what is computed: data, grid, recipe, zoo, budgets) and that spec's hash.
A later run of the same sweep name on the same root is then checked against it:

- without ``--resume``: refused whenever the sweep already exists there (a manifest, model
  rows, or Tune state from before manifests); results are written exactly once;
- with ``--resume`` and a different spec: refused, naming every differing field; the same
  spec continues. One difference is allowed: a grid sweep may be resumed with other λ values
  or seeds (``GRID_AXES``) when nothing else differs. Each (λ, seed) is its own models, so
  the rows already there are the same computation whatever the grid around them; the
  manifest then records the union, so a later run of the whole grid is a plain resume.

*How* a sweep runs (``resources``: workers, pool, GPUs) and *where* (``results``,
``storage_path``) may change between runs; they are not part of the hash. The manifest is
JSON, read as data. URIs in it are redacted (``fs.redact``): credentials never reach a file.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict
from typing import Any

import pp_cluster
from pp_cluster.config import SpecError, SweepSpec, content_id
from pp_cluster.results.fs import read_bytes, redact, write_bytes

MANIFEST = "manifest.json"
# Fields that say how or where a sweep runs, not what it computes.
NOT_HASHED = ("resources", "results", "storage_path")
# Grid axes a resume may change (the manifest keeps their union): each value only adds or
# leaves out whole models. Partitions are not among them: an undefended model is attacked at
# every partition, so another partition would change models already finished.
GRID_AXES = ("lams", "seeds")


def sweep_dir(results_uri: str, sweep: str) -> str:
    """The farm's own files for one sweep on a results root (lease, manifest); underscore-
    prefixed, so table readers never see them."""
    return f"{results_uri.rstrip('/')}/_sweeps/{sweep}"


def identity(sweep: SweepSpec) -> dict[str, Any]:
    """The spec fields that decide what a sweep computes, as JSON-ready values."""
    d = json.loads(json.dumps(asdict(sweep), sort_keys=True, default=list))
    for k in NOT_HASHED:
        d.pop(k, None)
    if d["batch_size"] is None:  # the recipe's: recorded as the number it trains at
        try:
            d["batch_size"] = sweep.resolved_batch_size()
        except ValueError:  # no such recipe: validation says so; nothing to resolve
            pass
    return d


def identity_defaults() -> dict[str, Any]:
    """The JSON value of every SweepSpec field's default (fields without one are left out)."""
    import dataclasses

    out = {}
    for f in dataclasses.fields(SweepSpec):
        if f.default is not dataclasses.MISSING:
            out[f.name] = json.loads(json.dumps(f.default, default=list))
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = json.loads(
                json.dumps(
                    f.default_factory(),
                    default=lambda o: dataclasses.asdict(o) if dataclasses.is_dataclass(o) else list(o),
                )
            )
    return out


def spec_hash(sweep: SweepSpec) -> str:
    return content_id("sweep-manifest", identity(sweep))


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``field: old -> new`` for every field that differs. A field the record lacks (added to
    SweepSpec after it was written) counts as its default value."""
    defaults = identity_defaults()
    out = []
    for k in sorted(set(old) | set(new)):
        was, now = old.get(k, defaults.get(k, "<absent>")), new.get(k, "<absent>")
        if was != now:
            out.append(f"{k}: {json.dumps(was)} -> {json.dumps(now)}")
    return out


def read(results_uri: str, sweep: str) -> dict[str, Any] | None:
    raw = read_bytes(f"{sweep_dir(results_uri, sweep)}/{MANIFEST}")
    if raw is None:
        return None
    try:
        m = json.loads(raw)
        if not isinstance(m, dict) or not isinstance(m.get("spec"), dict):
            raise ValueError("not a manifest object")
        return m
    except ValueError as e:
        raise SpecError(
            f"the manifest of sweep {sweep!r} under {redact(results_uri)} is unreadable ({e}); "
            f"move {MANIFEST} aside to adopt the current spec on --resume"
        ) from None


def write(results_uri: str, sweep: SweepSpec) -> None:
    body = {
        "sweep": sweep.name,
        "spec_hash": spec_hash(sweep),
        "spec": identity(sweep),
        "results": redact(sweep.results_uri()),
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "package_version": pp_cluster.__version__,
    }
    write_bytes(f"{sweep_dir(results_uri, sweep.name)}/{MANIFEST}", json.dumps(body, indent=1).encode())


def _only_grid_axes(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether the recorded spec ``old`` and ``new`` (both identities) differ in
    :data:`GRID_AXES` alone, in a grid sweep (an Optuna search reads λ as its range: another
    range is another search; a differing ``search`` field is itself a difference)."""
    if new["search"] != "grid":
        return False

    def rest(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k not in GRID_AXES}

    return not differences(rest(old), rest(new))


def widened(recorded: dict[str, Any], sweep: SweepSpec) -> SweepSpec:
    """``sweep`` with each of :data:`GRID_AXES` the sorted union of its values and the
    record's: what the root holds a sweep of after a resume with other λ values or seeds."""
    union = {k: tuple(sorted({*recorded[k], *getattr(sweep, k)})) for k in GRID_AXES}
    return sweep.with_(**union)


def check(sweep: SweepSpec, *, resume: bool, has_results: bool, has_tune_state: bool) -> str:
    """Check this run against the root's record of the sweep. Returns what the run is:
    ``"new"``, ``"resume"``, ``"widen"`` (a resume with other λ values or seeds, nothing else
    changed) or ``"adopt"`` (a sweep from before manifests, resumed); for "new" and "adopt"
    the caller writes the manifest, for "widen" its union (:func:`widened`), once every input
    is checked. Raises SpecError when the run would mix or repeat results. Call it while
    holding the lease."""
    root = sweep.results_uri()
    old = read(root, sweep.name)
    exists = old is not None or has_results or has_tune_state
    where = redact(root)
    if exists and not resume:
        raise SpecError(
            f"sweep {sweep.name!r} already exists in {where}; pass --resume to continue it, or "
            "--name to start another sweep"
        )
    if old is not None:
        now = identity(sweep)
        diff = differences(old["spec"], now)
        if diff and _only_grid_axes(old["spec"], now):
            return "widen"
        if diff:
            raise SpecError(
                f"--resume of sweep {sweep.name!r} with a different spec (results of two specs would "
                f"mix); differing fields (recorded -> now):\n  "
                + "\n  ".join(diff)
                + "\nrun it with the recorded values, or start another sweep with --name"
            )
        return "resume"
    return "adopt" if exists else "new"
