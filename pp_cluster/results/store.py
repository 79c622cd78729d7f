"""The Parquet results store: the contract between the farm and the analysts.

One directory per table under a results root (local path, NFS, ``s3://`` or any pyarrow
filesystem URI), hive-partitioned by sweep: ``<root>/<table>/sweep=<name>/<key>.parquet``.
The file name is the row's content id, so writing is idempotent: a retried or resumed
trial replaces its own file and never adds a second row. A local write goes to a
dot-prefixed temp file that is then renamed (atomic on POSIX); an object store gets one
PUT, which is atomic by itself. Readers (this module, ``pd.read_parquet``, pyarrow
datasets) skip dot- and underscore-prefixed files, so a crash mid-write is invisible.

A file that cannot be read (truncated by a full disk, damaged by hand) never takes the rest
down: ``read`` skips it, warns, and lists it in ``ResultStore.unreadable``; ``quarantine``
moves such files to ``<root>/_quarantine/`` (never deletes them) so that a resumed sweep
computes their rows again. Each sweep's table folders start with a zero-row ``empty.parquet``
carrying the schema, so ``pd.read_parquet("<root>/attacks")`` works before (or without) a row.

Pure pyarrow/pandas, no Ray: analysts read results without a cluster.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.metadata
import io
import math
import os
import platform
import re
import socket
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

import pp_cluster
from pp_cluster.config import content_id  # noqa: F401 -- re-exported: ids name the files
from pp_cluster.results.fs import (
    endpoint,
    is_remote,
    redact,
    replace_file,
    resolve,
    single_put,
    with_deadline,
)

UTC_US = pa.timestamp("us", tz="UTC")


def _col(name: str, type_: pa.DataType, doc: str, *, null: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=null, metadata={"doc": doc})


_SWEEP = _col(
    "sweep",
    pa.string(),
    "sweep name; the hive partition directory `sweep=<name>`, not a column inside the files",
    null=False,
)
_MODEL_ID = _col("model_id", pa.string(), "content id of the model's ModelSpec and sweep", null=False)
_ATTACK_ID = _col(
    "attack_id", pa.string(), "content id of (model_id, partition attacked, attack spec)", null=False
)
_ERROR = _col("error", pa.string(), "exception text when status is `failed`, else null")
_TRAIN_SECONDS = _col("train_seconds", pa.float64(), "wall seconds spent training")
_HOST = _col("host", pa.string(), "host name of the machine that wrote the row")
_GPU = _col("gpu", pa.string(), "CUDA device name, null on CPU")
_CPU = _col(
    "cpu",
    pa.string(),
    "CPU model and whether it has bf16 matrix units, which decide a CPU's default precision "
    "(bf16 + channels-last with them, fp32 without: pp_cluster.precision); null in rows from before",
)
_FINISHED_AT = _col("finished_at", UTC_US, "when the row was written", null=False)

SCHEMAS: dict[str, pa.Schema] = {
    "models": pa.schema(
        [
            _SWEEP,
            _MODEL_ID,
            _col("trial_id", pa.string(), "Ray Tune trial id", null=False),
            _col("seed", pa.int64(), "random seed of training and of the attackers", null=False),
            _col(
                "dataset", pa.string(), "data set registry name (`lfw`, `mnist`, `cifar10`, ...)", null=False
            ),
            _col(
                "arch",
                pa.string(),
                "classifier architecture (`mnist_mlp`, `face_cnn`, `vgg19_bn`)",
                null=False,
            ),
            _col(
                "partition",
                pa.string(),
                "split point the model was defended at: the last layer kept local "
                "(`pool1`, `fc1`, ...); null for an undefended model (λ = 0), which does not depend on it and is "
                "attacked at every partition of its grid: `attacks.partition` says where each attack split it",
            ),
            _col(
                "partition_suite",
                pa.string(),
                "a partition suite's split points joined by `+` (`pool1+pool2`): one "
                "network defended at each of them at once (Sec. IV-F; `partition` is then null) and attacked at each; "
                "null for a single-partition or undefended model",
            ),
            _col(
                "recipe",
                pa.string(),
                "training recipe (`paper`: the paper's; `fast`: ours for CPU budgets, privacy/recipes.py)",
            ),
            _col(
                "lam",
                pa.float64(),
                "strength of the defense (0 = undefended): λ, the weight of the defenders' "
                "distance in the loss (`partition`); NoPeek's dCor weight (`nopeek`); the noise σ (`noise`)",
                null=False,
            ),
            _col(
                "defenders",
                pa.string(),
                "comma-joined defender decoder names; empty string = none",
                null=False,
            ),
            _col(
                "distance",
                pa.string(),
                "image distance between inputs and the defenders' reconstructions (`ssim`, `mse`)",
                null=False,
            ),
            _col("defense", pa.string(), "how the model was defended", null=False),
            _col("epochs", pa.int64(), "training epochs asked for", null=False),
            _col("lr", pa.float64(), "learning rate of the classifier", null=False),
            _col("batch_size", pa.int64(), "training batch size", null=False),
            _col("test_acc", pa.float64(), "test accuracy; null if the model diverged or failed"),
            _col("n_test", pa.int64(), "test images behind `test_acc` (for its binomial interval)"),
            _col("train_acc", pa.float64(), "accuracy on the training set in the last epoch"),
            _col("final_task_loss", pa.float64(), "task (cross-entropy) loss of the last epoch"),
            _col(
                "final_distance", pa.float64(), "defender distance of the last epoch (`nopeek`: dCor(x, H))"
            ),
            _col("status", pa.string(), "outcome of training", null=False),
            _col(
                "diverged_epoch", pa.int64(), "epoch at which the loss became non-finite; null if it did not"
            ),
            _ERROR,
            _col(
                "pareto",
                pa.bool_(),
                "on the accuracy / worst-case-SSIM Pareto frontier of its sweep: set when an "
                "Optuna sweep ends; null in grid sweeps (compute it with `analysis.frontier`)",
            ),
            _col(
                "finetune_acc_before",
                pa.float64(),
                "accuracy before fine-tuning the remote part (Sec. 5); null if not fine-tuned",
            ),
            _col(
                "finetune_acc_after",
                pa.float64(),
                "accuracy after fine-tuning the remote part; null if not fine-tuned",
            ),
            _TRAIN_SECONDS,
            _GPU,
            _CPU,
            _col("package_version", pa.string(), "pp_cluster version", null=False),
            _col(
                "git_sha",
                pa.string(),
                "commit of the pp_cluster checkout (on a node without one: the driver's); null when neither",
            ),
            _col("ray_version", pa.string(), "Ray version; null when Ray is not installed"),
            _col("torch_version", pa.string(), "PyTorch version", null=False),
            _HOST,
            _col("started_at", UTC_US, "when training started", null=False),
            _FINISHED_AT,
            _col(
                "config_json", pa.string(), "the full ModelSpec as JSON, for exact reproduction", null=False
            ),
        ]
    ),
    "attacks": pa.schema(
        [
            _SWEEP,
            _MODEL_ID,
            _ATTACK_ID,
            _col("attacker", pa.string(), "attacker zoo name", null=False),
            _col(
                "partition",
                pa.string(),
                "split point at which the attacker saw the model's activations (join an "
                "attack to its partition with this column, not `models.partition`, which is null for undefended "
                "models)",
            ),
            _col("attacker_arch", pa.string(), "the attacker's layers, as text"),
            _col(
                "attacker_data",
                pa.string(),
                "which images the attacker trained on: the model's own training images or disjoint ones",
            ),
            _col(
                "attacker_fraction", pa.float64(), "fraction of the attacker data used to train the attacker"
            ),
            _col("mse", pa.float64(), "mean squared error of reconstructions vs originals, in [0, 1] units"),
            _col("ssim", pa.float64(), "mean SSIM of reconstructions vs originals"),
            _col("psnr", pa.float64(), "mean PSNR (dB)"),
            _col(
                "ssim_images",
                pa.list_(pa.float64()),
                "per-image SSIM of the evaluation images, in evaluation "
                "order (the same images and order for every attack of a sweep): for bootstrap intervals and "
                "paired differences",
            ),
            _col("mse_images", pa.list_(pa.float64()), "per-image MSE, as `ssim_images`"),
            _col("dpd", pa.float64(), "LPIPS perceptual distance (the paper's DPD); null when unavailable"),
            _col("dpd_reason", pa.string(), "why dpd is null (e.g. no offline LPIPS weights)"),
            _col(
                "reprint_acc",
                pa.float64(),
                "classifier accuracy on reconstructions; null when the eval images have no labels",
            ),
            _col(
                "gender_acc",
                pa.float64(),
                "Table III: the gender classifier's accuracy on the ORIGINAL test images (its ceiling); null if not applicable",
            ),
            _col(
                "n_cg",
                pa.int64(),
                "Table III #CG: detected faces in the reconstructions whose gender is classified correctly; null if not counted",
            ),
            _col(
                "n_df",
                pa.int64(),
                "Table III #DF: reconstructions in which the face detector finds a face; null if not counted",
            ),
            _col(
                "n_ti", pa.int64(), "Table III #TI: total reconstructed images examined; null if not counted"
            ),
            _col("n_eval", pa.int64(), "held-out images the attack was scored on; null if it failed"),
            _col("best_epoch", pa.int64(), "attacker epoch with the best validation MSE; null if it failed"),
            _col(
                "best_val_mse",
                pa.float64(),
                "the attacker's MSE on its own validation split (held out of its "
                "training pairs, never the test images) at best_epoch; null for closed-form and white-box attackers",
            ),
            _col(
                "attacker_lr",
                pa.float64(),
                "the attacker's learning rate (tuned: the chosen one); null if it does not train",
            ),
            _col("attacker_epochs", pa.int64(), "epochs the attacker was given (tuned: the chosen number)"),
            _col("attacker_batch_size", pa.int64(), "the attacker's training batch size"),
            _col(
                "attacker_weight_decay",
                pa.float64(),
                "the attacker's L2 weight decay (tuned: the chosen one)",
            ),
            _col(
                "attacker_width",
                pa.int64(),
                "the value of the attacker's width option (`width` channels or "
                "`hidden` units; tuned: the chosen one); null for fixed architectures",
            ),
            _col(
                "tune_trials",
                pa.int64(),
                "candidates an Optuna search tried to pick the attacker's "
                "hyperparameters (on its validation split); 0: the sweep's fixed hyperparameters",
            ),
            _TRAIN_SECONDS,
            _col("status", pa.string(), "outcome of the attack", null=False),
            _ERROR,
            _HOST,
            _GPU,
            _CPU,
            _FINISHED_AT,
        ]
    ),
    "epochs": pa.schema(
        [
            _SWEEP,
            _MODEL_ID,
            _col("epoch", pa.int64(), "epoch number", null=False),
            _col("task_loss", pa.float64(), "mean task loss over the epoch; null if non-finite"),
            _col(
                "distance",
                pa.float64(),
                "mean defender distance over the epoch (`nopeek`: dCor(x, H)); null when not measured",
            ),
            _col("train_acc", pa.float64(), "training accuracy over the epoch"),
            _col("test_acc", pa.float64(), "test accuracy after the epoch; null if not evaluated"),
            _col("lr", pa.float64(), "learning rate during the epoch"),
            _col("seconds", pa.float64(), "wall seconds of the epoch"),
            _col(
                "best_defender_counts",
                pa.list_(pa.int64()),
                "per defender, in the order of the models row's `defenders` (a partition suite: "
                "that list at each partition in turn), the epoch's batches it was the best one "
                "(its partition's best); null without defenders",
            ),
        ]
    ),
    "reconstructions": pa.schema(
        [
            _SWEEP,
            _MODEL_ID,
            _ATTACK_ID,
            _col("index", pa.int64(), "position of the image among the attack's held-out images", null=False),
            _col("original", pa.binary(), "the original image, PNG", null=False),
            _col("reconstruction", pa.binary(), "the attacker's reconstruction, PNG", null=False),
        ]
    ),
}
TABLES: tuple[str, ...] = tuple(SCHEMAS)

# The column a file's key is: one file per model (models, epochs) or per attack.
KEY_COLUMN = {
    "models": "model_id",
    "attacks": "attack_id",
    "epochs": "model_id",
    "reconstructions": "attack_id",
}
ALLOWED = {
    ("models", "status"): {"ok", "diverged", "failed"},
    ("models", "defense"): {"partition", "dp_pixelation", "nopeek", "noise", "none"},
    ("attacks", "status"): {"ok", "failed"},
    ("attacks", "attacker_data"): {"train", "disjoint"},
}


def allowed_values(table: str, column: str) -> set[str]:
    """The values a column takes: ``ALLOWED``, and for ``models.defense`` every defense a
    plugin registered (read from the registry only where it is loaded: the writer's side)."""
    values = set(ALLOWED[table, column])
    steps = sys.modules.get("pp_cluster.privacy.steps")
    if (table, column) == ("models", "defense") and steps is not None:
        values |= set(steps.DEFENSES)
    return values


# The zero-row file that gives an empty table folder its schema: not a key of any row.
EMPTY_KEY = "empty"
# Compacted files (results.compact) hold many keys' rows: ``compact-<id>.parquet``, listed in
# the table folder's ``_compacted.json`` so that a lookup by key needs no listing.
COMPACT_PREFIX = "compact-"
COMPACT_INDEX = "_compacted.json"
# Sweep names and keys become path segments (hive decodes %-escapes, a leading dot hides a file).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def _pandas_dtype(field: pa.Field) -> str:
    """Nullable ints/bools get pandas' nullable dtypes so a null never turns them into float/object."""
    if pa.types.is_integer(field.type):
        return "Int64" if field.nullable else "int64"
    if pa.types.is_boolean(field.type):
        return "boolean" if field.nullable else "bool"
    if pa.types.is_timestamp(field.type):
        return "datetime64[us, UTC]"
    if pa.types.is_string(field.type):
        return "str"
    return "float64" if pa.types.is_floating(field.type) else "object"


def _file_schema(schema: pa.Schema) -> pa.Schema:
    """The schema inside the files: without `sweep` (it is the directory), with pandas metadata
    so that ``pd.read_parquet`` restores the dtypes above."""
    schema = schema.remove(schema.get_field_index("sweep"))
    empty = pd.DataFrame({f.name: pd.Series([], dtype=_pandas_dtype(f)) for f in schema})
    return pa.Table.from_pandas(empty, schema=schema, preserve_index=False).schema


FILE_SCHEMAS = {name: _file_schema(s) for name, s in SCHEMAS.items()}


def empty_frame(table: str) -> pd.DataFrame:
    """What ``ResultStore.read`` returns when there is nothing: the right columns and dtypes."""
    df = FILE_SCHEMAS[_check_table(table)].empty_table().to_pandas()
    df.insert(0, "sweep", pd.Categorical([]))
    return df


def schema_markdown() -> str:
    """The tables as Markdown, generated from the schemas so docs/schema.md cannot drift from them."""
    out = []
    for table, schema in SCHEMAS.items():
        dtypes = empty_frame(table).dtypes
        out += [
            f"### `{table}` (one file per `{KEY_COLUMN[table]}`)",
            "",
            "| column | Arrow type | nullable | pandas dtype | meaning |",
            "|---|---|---|---|---|",
        ]
        out += [
            f"| `{f.name}` | `{f.type}` | {'yes' if f.nullable else 'no'} | `{dtypes[f.name]}` | "
            f"{f.metadata[b'doc'].decode()}{_allowed_doc(table, f.name)} |"
            for f in schema
        ]
        out.append("")
    return "\n".join(out)


def _allowed_doc(table: str, column: str) -> str:
    allowed = ALLOWED.get((table, column))
    return "; one of " + ", ".join(f"`{v}`" for v in sorted(allowed)) if allowed else ""


def provenance() -> dict[str, str | None]:
    """Where a row came from: versions, commit, host and GPU. Ray's version is read from package
    metadata so that analysts need no Ray; cached because it cannot change within a process."""
    return dict(_provenance())


@functools.cache
def _provenance() -> dict[str, str | None]:
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(torch.cuda.current_device())
    except ImportError:
        pass
    return {
        "package_version": pp_cluster.__version__,
        "git_sha": checkout_sha(),
        "ray_version": _dist_version("ray"),
        "torch_version": _dist_version("torch"),
        "host": socket.gethostname(),
        "gpu": gpu,
        "cpu": _cpu(),
    }


def _cpu() -> str | None:
    """'<model name> (bf16 units: yes|no)' from /proc/cpuinfo (Linux) or the platform; None if unknown."""
    name = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    name = name or platform.processor() or None
    try:
        from pp_cluster.precision import cpu_has_bf16_matmul
    except ImportError:  # an analyst without torch
        return name
    return f"{name or 'unknown CPU'} (bf16 units: {'yes' if cpu_has_bf16_matmul() else 'no'})"


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# The driver's commit, handed to a Ray job's workers (farm.sweep.train_runtime_env): a cluster's
# nodes run an installed copy, not a checkout, and would record no commit.
GIT_SHA_ENV = "PP_CLUSTER_GIT_SHA"


def checkout_sha() -> str | None:
    """The commit of the pp_cluster checkout this process runs from; else the one the job's
    driver ran from (:data:`GIT_SHA_ENV`); else None (an installed copy, no driver's commit)."""
    return _git_sha(Path(pp_cluster.__file__).resolve().parents[1]) or os.environ.get(GIT_SHA_ENV) or None


def _git_sha(repo: Path) -> str | None:
    if not (repo / ".git").exists():
        return None  # an installed wheel, not a checkout
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _check_table(table: str) -> str:
    if table not in SCHEMAS:
        raise ValueError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
    return table


def _check_name(what: str, name: Any) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"{what} {name!r} must be 1-200 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


_CHECKS = [
    (pa.types.is_boolean, lambda v: isinstance(v, (bool, np.bool_)), "a bool"),
    (
        pa.types.is_integer,
        lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)),
        "an int",
    ),
    (
        pa.types.is_floating,
        lambda v: (
            isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
        ),
        "a number",
    ),
    (pa.types.is_string, lambda v: isinstance(v, str), "a str"),
    (pa.types.is_binary, lambda v: isinstance(v, bytes), "bytes"),
    (
        pa.types.is_list,
        lambda v: (
            isinstance(v, (list, tuple, np.ndarray))
            and all(
                isinstance(e, (int, float, np.integer, np.floating)) and not isinstance(e, bool) for e in v
            )
        ),
        "a list of numbers",
    ),
    (
        pa.types.is_timestamp,
        lambda v: isinstance(v, dt.datetime) and v.tzinfo is not None,
        "a timezone-aware datetime",
    ),
]


def _is_null(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and math.isnan(v))


def _column(table: str, field: pa.Field, values: list[Any]) -> pa.Array:
    """One column, checked strictly: pyarrow alone would truncate 1.5 to 1 in an int column or
    read True as 1.0."""
    check, kind = next((c, k) for is_type, c, k in _CHECKS if is_type(field.type))
    for v in values:
        if _is_null(v):
            if not field.nullable:
                raise ValueError(f"{table}.{field.name} is required (not nullable) but a row has {v!r}")
        elif not check(v):
            raise ValueError(
                f"{table}.{field.name} must be {kind} ({field.type}), got {type(v).__name__} {v!r}"
            )
        elif (table, field.name) in ALLOWED and v not in allowed_values(table, field.name):
            allowed = ", ".join(sorted(allowed_values(table, field.name)))
            raise ValueError(f"{table}.{field.name} must be one of {allowed}, got {v!r}")
    return pa.array([None if _is_null(v) else v for v in values], type=field.type)


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _to_uint8(images: Any, what: str) -> np.ndarray:
    """(N, C, H, W) or (N, H, W) in [0, 1] (torch or NumPy) -> (N, H, W[, C]) uint8 for PIL."""
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    a = np.asarray(images, dtype=np.float64)
    if a.ndim == 4 and a.shape[1] in (1, 3):
        a = a[:, 0] if a.shape[1] == 1 else a.transpose(0, 2, 3, 1)
    elif a.ndim != 3:
        raise ValueError(f"{what} must be (N, C, H, W) with C in (1, 3) or (N, H, W), got shape {a.shape}")
    if not np.isfinite(a).all() or a.min(initial=0) < 0 or a.max(initial=0) > 1:
        raise ValueError(f"{what} must be finite and in [0, 1]")
    return np.round(a * 255).astype(np.uint8)


class UnreadableFile(UserWarning):
    """A results file that could not be read and was skipped."""


class ResultStore:
    """Reads and writes the results tables under one root.

    ``root`` is a local path or a filesystem URI (``s3://bucket/prefix``; S3 honours
    ``AWS_ENDPOINT_URL``); with an explicit pyarrow ``filesystem`` it is a path inside it.
    Opening does not write (analysts read read-only results); call ``check_writable`` first
    when about to write.
    """

    def __init__(self, root: str, filesystem: pafs.FileSystem | None = None) -> None:
        if not isinstance(root, str) or not root.strip():
            raise ValueError(f"results root must be a non-empty path or URI, got {root!r}")
        self.root = root
        if filesystem is not None:
            self.fs, path = filesystem, root.split("://", 1)[-1]
        else:
            try:
                self.fs, path = resolve(root)
            except (pa.ArrowInvalid, ValueError, OSError) as e:
                raise ValueError(f"results root {root!r} is not a usable path or URI: {e}") from e
            if isinstance(self.fs, pafs.LocalFileSystem):
                path = os.path.abspath(os.path.expanduser(path))
        self.base = path.rstrip("/")
        # Files read() had to skip, path -> reason (reported by pp-farm status and the report).
        self.unreadable: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"ResultStore({redact(self.root)!r})"

    def check_writable(self) -> None:
        """Fail before any work if results could not be written: create and remove a probe file
        (within ``fs.TIMEOUT_S`` on a remote store, naming its endpoint)."""
        probe = f"{self.base}/.probe-{uuid.uuid4().hex}"

        def probe_once() -> None:
            if not single_put(self.fs):  # (no directory markers on object stores)
                self.fs.create_dir(self.base, recursive=True)
            with self.fs.open_output_stream(probe) as f:
                f.write(b"probe")
            self.fs.delete_file(probe)

        try:
            if is_remote(self.root):
                with_deadline(probe_once, f"{endpoint(self.root)} ({redact(self.root)})")
            else:
                probe_once()
        except (OSError, pa.ArrowException) as e:
            where = f" ({endpoint(self.root)})" if is_remote(self.root) else ""
            raise ValueError(
                f"results root {redact(self.root)!r}{where} is not writable: {redact(str(e))}"
            ) from e

    def ensure_tables(self, sweep: str, tables: tuple[str, ...] = ("models", "attacks", "epochs")) -> None:
        """Give each table folder of ``sweep`` its zero-row schema file (once), so that the
        documented reads work while no row exists."""
        for table in tables:
            path = self._path(table, sweep, EMPTY_KEY)
            if self.fs.get_file_info(path).type != pafs.FileType.File:
                self._put(path, FILE_SCHEMAS[table].empty_table())

    def _dir(self, table: str, sweep: str) -> str:
        return f"{self.base}/{_check_table(table)}/sweep={_check_name('sweep', sweep)}"

    def _path(self, table: str, sweep: str, key: str) -> str:
        return f"{self._dir(table, sweep)}/{_check_name('key', key)}.parquet"

    def write(self, table: str, sweep: str, key: str, rows: list[dict[str, Any]]) -> None:
        """Write ``rows`` as the file of ``key`` (replacing it if it exists). Missing nullable
        columns become null; unknown columns, wrong types and missing required ones raise."""
        path = self._path(table, sweep, key)
        if not rows or not all(isinstance(r, dict) for r in rows):
            raise ValueError(f"{table}: rows must be a non-empty list of dicts")
        schema = SCHEMAS[table]
        unknown = sorted(set().union(*rows) - set(schema.names))
        if unknown:
            raise ValueError(f"{table}: unknown columns {', '.join(unknown)}")
        key_col = KEY_COLUMN[table]
        for col, want in (("sweep", sweep), (key_col, key)):
            bad = {r[col] for r in rows if col in r and r[col] != want}
            if bad:
                raise ValueError(
                    f"{table}.{col} must be {want!r} (the file's {col}), rows have {sorted(bad)}"
                )
        file_schema = FILE_SCHEMAS[table]
        arrays = [
            _column(table, f, [key if f.name == key_col else r.get(f.name) for r in rows])
            for f in file_schema
        ]
        self._put(path, pa.Table.from_arrays(arrays, schema=file_schema))

    def write_reconstructions(
        self, sweep: str, model_id: str, attack_id: str, originals: Any, reconstructions: Any
    ) -> None:
        """Keep an attack's first reconstructions beside their originals, as PNGs in [0, 255]."""
        orig, rec = _to_uint8(originals, "originals"), _to_uint8(reconstructions, "reconstructions")
        if orig.shape != rec.shape:
            raise ValueError(f"originals {orig.shape} and reconstructions {rec.shape} differ in shape")
        rows = [
            {"model_id": model_id, "index": i, "original": _png(o), "reconstruction": _png(r)}
            for i, (o, r) in enumerate(zip(orig, rec))
        ]
        if rows:
            self.write("reconstructions", sweep, attack_id, rows)

    def _put(self, path: str, data: pa.Table) -> None:
        replace_file(self.fs, path, lambda p: pq.write_table(data, p, filesystem=self.fs))

    def exists(self, table: str, sweep: str, key: str) -> bool:
        if self.fs.get_file_info(self._path(table, sweep, key)).type == pafs.FileType.File:
            return True
        return bool(self.compacted(table, sweep)) and not self.read(table, sweep, keys=[key]).empty

    def compacted_index(self, table: str, sweep: str) -> list[dict[str, str]]:
        """The sweep's compacted files of ``table``: ``{"name", "min", "max"}`` (their key
        range; keys are sorted within a file), from the index, without a listing."""
        import json

        index = f"{self._dir(table, sweep)}/{COMPACT_INDEX}"
        if self.fs.get_file_info(index).type != pafs.FileType.File:
            return []
        with self.fs.open_input_stream(index) as f:
            return json.loads(f.read())

    def compacted(self, table: str, sweep: str, keys: list[str] | None = None) -> list[str]:
        """Paths of the compacted files of ``table`` (only those whose key range holds one of
        ``keys``, when given: a lookup opens the files its keys can be in, not all)."""
        entries = self.compacted_index(table, sweep)
        if keys is not None:
            entries = [e for e in entries if any(e["min"] <= k <= e["max"] for k in keys)]
        return [f"{self._dir(table, sweep)}/{e['name']}" for e in entries]

    def _files(self, table: str, sweep: str | None) -> list[str]:
        """Data files, skipping dot/underscore names as pyarrow datasets do (temp files, probes)."""
        where = self._dir(table, sweep) if sweep is not None else f"{self.base}/{_check_table(table)}"
        infos = self.fs.get_file_info(pafs.FileSelector(where, recursive=True, allow_not_found=True))
        return sorted(
            i.path
            for i in infos
            if i.type == pafs.FileType.File
            and i.path.endswith(".parquet")
            and not any(part[:1] in "._" for part in i.path[len(where) :].split("/") if part)
        )

    def done_keys(self, table: str, sweep: str) -> set[str]:
        """Keys (model or attack ids) that have rows: what a resumed sweep can skip."""
        files = self._files(table, sweep)
        small = {p.rsplit("/", 1)[1].removesuffix(".parquet") for p in files}
        packed = [p for p in files if p.rsplit("/", 1)[1].startswith(COMPACT_PREFIX)]
        keys = self.keys_in(table, packed)
        return (small | keys) - {EMPTY_KEY} - {p.rsplit("/", 1)[1].removesuffix(".parquet") for p in packed}

    def keys_in(self, table: str, files: list[str]) -> set[str]:
        """The keys whose rows ``files`` hold (their key column only)."""
        if not files:
            return set()
        col = KEY_COLUMN[table]
        return set(self._dataset(table, files).to_table(columns=[col]).column(col).to_pylist())

    def read(self, table: str, sweep: str | None = None, keys: list[str] | None = None) -> pd.DataFrame:
        """One sweep's rows, or every sweep's, as a DataFrame with the documented dtypes and
        `sweep` as a categorical column first. ``keys``: only the files of these keys (those
        that exist), e.g. the attacks one trial needs. Unreadable files are skipped with an
        ``UnreadableFile`` warning and listed in ``self.unreadable``."""
        rows = self._rows(table, sweep, keys)
        if rows is None:
            return empty_frame(table)
        df = rows.to_pandas()
        df["sweep"] = df["sweep"].astype("category")
        return df

    def _rows(self, table: str, sweep: str | None, keys: list[str] | None) -> pa.Table | None:
        """:meth:`read`'s rows as Arrow, one copy per key; None without any."""
        if keys is not None:
            files, packed = self._key_files(table, sweep, keys), self.compacted(table, sweep, keys)
        else:
            files = self._files(table, sweep)
            packed = [f for f in files if f.rsplit("/", 1)[1].startswith(COMPACT_PREFIX)]
            packed_set = set(packed)
            files = [f for f in files if f not in packed_set]
        small, packed_rows = self._table(table, files), self._table(table, packed, keys)
        if small is not None and packed_rows is not None:
            # A key both in a small file and a compacted one (a compaction cut short before it
            # deleted the small files, or a row rewritten since): the small file's copy.
            key = KEY_COLUMN[table]
            seen = pc.unique(small.column(key))
            packed_rows = packed_rows.filter(pc.invert(pc.is_in(packed_rows.column(key), value_set=seen)))
        parts = [t for t in (small, packed_rows) if t is not None]
        return pa.concat_tables(parts) if parts else None

    def copy_rows(self, table: str, sweep: str, keys: list[str], into: ResultStore) -> int:
        """Copy the rows of ``keys`` (those that exist) into the store ``into``, one file per key
        as the farm writes them. A key ``into`` has already is left as it is: a copy, like a
        result, is written once. Returns how many keys were copied."""
        want = sorted(set(keys) - into.done_keys(table, sweep))
        rows = self._rows(table, sweep, want) if want else None
        if rows is None:
            return 0
        key = KEY_COLUMN[table]
        rows = rows.drop_columns(["sweep"]).select(FILE_SCHEMAS[table].names).cast(FILE_SCHEMAS[table])
        into.ensure_tables(sweep, (table,))
        copied = sorted(set(rows.column(key).to_pylist()))
        for k in copied:
            into._put(into._path(table, sweep, k), rows.filter(pc.equal(rows.column(key), k)))
        return len(copied)

    def _table(self, table: str, files: list[str], keys: list[str] | None = None) -> pa.Table | None:
        """The rows of ``files`` (only those of ``keys`` if given), skipping unreadable files."""
        if not files:
            return None
        flt = ds.field(KEY_COLUMN[table]).isin(list(keys)) if keys is not None else None
        try:
            return self._dataset(table, files).to_table(filter=flt)
        except (OSError, pa.ArrowException):
            good = [f for f in files if self._readable(table, f)]
            return self._dataset(table, good).to_table(filter=flt) if good else None

    def _key_files(self, table: str, sweep: str | None, keys: list[str]) -> list[str]:
        """The files of ``keys`` that exist, looked up by path (one metadata request per key,
        never a listing): what one trial reads does not grow with its sweep."""
        if sweep is None:
            raise ValueError("read(keys=...) needs the sweep")
        paths = sorted({self._path(table, sweep, k) for k in keys})
        return [i.path for i in self.fs.get_file_info(paths) if i.type == pafs.FileType.File] if paths else []

    def _dataset(self, table: str, files: list[str]) -> ds.Dataset:
        sweep_field = pa.field("sweep", pa.string())
        return ds.dataset(
            files,
            schema=FILE_SCHEMAS[table].insert(0, sweep_field),
            format="parquet",
            filesystem=self.fs,
            partitioning=ds.partitioning(pa.schema([sweep_field]), flavor="hive"),
            partition_base_dir=f"{self.base}/{table}",
        )

    def _readable(self, table: str, path: str, warn: bool = True) -> bool:
        """Read the whole file (a truncated or damaged one fails here); note (and warn) if not."""
        try:
            pq.read_table(path, filesystem=self.fs, schema=FILE_SCHEMAS[table])
            return True
        except (OSError, pa.ArrowException) as e:
            self.unreadable[path] = redact(str(e)).splitlines()[0][:300]
            if warn:
                warnings.warn(
                    f"skipped unreadable results file {redact(path)}: {self.unreadable[path]}",
                    UnreadableFile,
                    stacklevel=3,
                )
            return False

    def quarantine(self, sweep: str, tables: tuple[str, ...] = TABLES) -> list[str]:
        """Move every unreadable file of ``sweep`` to ``<root>/_quarantine/<table>/sweep=<name>/``
        (with the time it was moved), so that its rows count as missing and are computed again.
        Returns the quarantined paths; nothing is deleted."""
        moved = []
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        for table in tables:
            files = self._files(table, sweep)
            if not files:
                continue
            try:  # one read of the whole table; file by file only when something fails
                self._dataset(table, files).to_table()
                continue
            except (OSError, pa.ArrowException):
                pass
            for path in files:
                if self._readable(table, path, warn=False):
                    continue
                dest = f"{self.base}/_quarantine/{table}/sweep={sweep}/{path.rsplit('/', 1)[1]}.{stamp}"
                if not single_put(self.fs):
                    self.fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
                self.fs.move(path, dest)  # (a copy and a delete on object stores)
                moved.append(dest)
        return moved

    def update_column(self, table: str, sweep: str, key: str, column: str, value: Any) -> None:
        """Set ``column`` to ``value`` in every row of ``key``'s file, rewritten atomically
        (how the analysis marks Pareto-optimal models)."""
        path = self._path(table, sweep, key)
        schema = FILE_SCHEMAS[table]
        if column not in schema.names or column == KEY_COLUMN[table]:
            raise ValueError(f"{table}: cannot update column {column!r}")
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            path = next(
                (
                    p
                    for p in self.compacted(table, sweep)
                    if key
                    in pq.read_table(p, filesystem=self.fs, columns=[KEY_COLUMN[table]]).column(0).to_pylist()
                ),
                None,
            )
            if path is None:
                raise FileNotFoundError(
                    f"no {table} rows for key {key!r} in sweep {sweep!r} under {redact(self.root)}"
                )
        data = pq.read_table(path, filesystem=self.fs, schema=schema)
        i = schema.get_field_index(column)
        mine = pa.array([k == key for k in data.column(KEY_COLUMN[table]).to_pylist()])
        new = _column(table, schema.field(i), [value] * len(data))
        self._put(path, data.set_column(i, schema.field(i), pc.if_else(mine, new, data.column(i))))
