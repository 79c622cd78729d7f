"""Extension points: one registry per kind of thing a sweep names, and the plugin modules
that add to them.

Networks, decoders (attackers and defenders), data sets, defenses and distances each live
in one :class:`Registry`, filled by ``register_net``, ``register_decoder``,
``register_dataset``, ``register_defense`` and ``register_distance`` (README, "Extending").
Whatever checks a name (``SweepSpec.validate``, ``build_net``, error messages) reads the
registry when it runs, through a live :class:`Names` view, so a name registered after
``import pp_cluster`` counts everywhere.

A sweep lists its plugin modules in ``SweepSpec.plugins`` (``--plugins``). The driver
imports them before validating (:func:`import_plugins`); :func:`runtime_env` is what the
farm adds to the Ray job so that every worker process (trial, Train worker, attacker actor)
imports them before it runs anything. No Ray here: the farm hands that dict to ``ray.init``.
"""

from __future__ import annotations

import importlib
import os
import re
import site
import sys
import sysconfig
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# Names end up in comma lists (CLI), ';'-separated suites and Parquet columns.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# How the driver tells the workers which modules to import (:func:`setup_worker`).
PLUGINS_ENV = "PP_CLUSTER_PLUGINS"


class PluginError(ImportError):
    """A plugin module that cannot be imported; the message names it and why."""


class Names(Sequence[str]):
    """Names read off a registry at every use: a tuple that never goes stale, equal to the
    tuple it is at that moment (``DEFENSES == ("partition", "nopeek", "noise")``)."""

    def __init__(self, compute: Callable[[], Iterable[str]]) -> None:
        self._compute = compute

    def _now(self) -> tuple[str, ...]:
        return tuple(self._compute())

    def __getitem__(self, index):  # type: ignore[override]
        return self._now()[index]

    def __len__(self) -> int:
        return len(self._now())

    def __iter__(self) -> Iterator[str]:
        return iter(self._now())

    def __contains__(self, name: object) -> bool:
        return name in self._now()

    def __eq__(self, other: object) -> bool:
        return self._now() == (other._now() if isinstance(other, Names) else other)

    __hash__ = None  # type: ignore[assignment]  # it changes: never a dict key

    def __repr__(self) -> str:
        return repr(self._now())


class Registry(Mapping[str, T], Generic[T]):
    """``name -> entry`` of one kind, in registration order: the one place such a name is
    defined. A name is registered once; registering it again with another entry is an error
    (a plugin never silently replaces a built-in)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise ValueError(
                f"a {self.kind} name is letters, digits, '.', '_' and '-' "
                f"({NAME_PATTERN.pattern}), got {name!r}"
            )
        if name in self._entries and self._entries[name] != entry:
            raise ValueError(
                f"{self.kind} {name!r} is already registered; choose another name "
                "(or unregister the old one first)"
            )
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a test's or a notebook's clean-up); KeyError if it is not there."""
        del self._entries[name]

    def names(
        self, where: Callable[[T], bool] | None = None, key: Callable[[str], Any] | None = None
    ) -> Names:
        """The live view of the names whose entry passes ``where``, sorted by ``key`` if given."""

        def compute() -> list[str]:
            names = [n for n, e in self._entries.items() if where is None or where(e)]
            return names if key is None else sorted(names, key=key)

        return Names(compute)

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"


# --- plugin modules ---------------------------------------------------------------------


def import_plugins(modules: Iterable[str]) -> list[ModuleType]:
    """Import each module by name (what it registers is then registered); PluginError naming
    the first that fails, with the error it raised."""
    out = []
    for name in modules:
        try:
            out.append(importlib.import_module(name))
        except Exception as err:
            hint = ""
            if isinstance(err, ModuleNotFoundError) and err.name and (name + ".").startswith(err.name + "."):
                hint = (
                    " (not found: put the folder that holds it on PYTHONPATH, e.g. PYTHONPATH=. , "
                    "or pip install it)"
                )
            raise PluginError(
                f"plugin module {name!r} could not be imported: {type(err).__name__}: {err}{hint}"
            ) from err
    return out


def setup_worker() -> None:
    """Ray's ``worker_process_setup_hook``: import the job's plugin modules (``PLUGINS_ENV``)."""
    import_plugins(m for m in os.environ.get(PLUGINS_ENV, "").split(",") if m)


def runtime_env(modules: Sequence[str]) -> dict[str, Any]:
    """What a Ray job's runtime environment needs so that every worker imports ``modules``
    (already imported here): ``worker_process_setup_hook`` runs :func:`setup_worker` in each
    worker process before its first task, ``env_vars`` names the modules, and ``py_modules``
    ships the code of those not installed in this Python (their top-level package, or the
    file of a top-level module) so that every node of a cluster finds it. ``{}`` without
    plugins."""
    if not modules:
        return {}
    ship = sorted({path for m in modules if (path := _source(m)) is not None})
    env: dict[str, Any] = {
        "env_vars": {PLUGINS_ENV: ",".join(modules)},
        "worker_process_setup_hook": f"{__name__}.setup_worker",
    }
    if ship:
        env["py_modules"] = ship
    return env


def _installed_roots() -> list[Path]:
    paths = sysconfig.get_paths()
    roots = [paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths]
    return [Path(p).resolve() for p in (*roots, *site.getsitepackages())]


def _source(name: str) -> str | None:
    """The file or folder to ship for plugin module ``name``: its top-level package's folder
    (or its own file), None when Python finds it among installed packages (the cluster's
    image must have those, as it has pp_cluster)."""
    top = sys.modules[name.partition(".")[0]]
    if top.__name__ == "pp_cluster":
        return None
    locations = list(getattr(top, "__path__", None) or [top.__file__])
    if len(locations) != 1 or locations[0] is None:
        raise PluginError(
            f"plugin module {name!r}: cannot ship package {top.__name__!r} spread over "
            f"{len(locations)} folders; install it on every node instead"
        )
    path = Path(locations[0]).resolve()
    if any(path.is_relative_to(root) for root in _installed_roots()):
        return None
    return str(path)
