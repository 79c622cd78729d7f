"""Trained models as outputs: the network a sweep trained, back from its results root.

The farm keeps each finished model's weights at ``<storage>/train-<model id>/state.pt``
(``storage`` is ``<results>/_ray`` unless the sweep was given ``--storage-path``), and the
model's ``models`` row holds the ``ModelSpec`` that rebuilds its network (``config_json``).
:func:`load_model` puts the two together; ``pp-farm export`` writes the local partition of
one for a user's device. Files are read through ``results.fs`` (local, NFS, ``s3://``) and
the state file as data only. No Ray: an analyst loads a model without a cluster.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass, replace
from typing import Any

import pyarrow.fs as pafs
import torch
from torch import nn

from pp_cluster import pipeline
from pp_cluster.config import ModelSpec
from pp_cluster.data import Dataset
from pp_cluster.nets import NET_REGISTRY, PartitionedNet, split
from pp_cluster.results.fs import read_bytes, redact, write_bytes
from pp_cluster.results.rules import OK
from pp_cluster.results.store import NAME_PATTERN, ResultStore

STATE_FILE = "state.pt"
# What ``pp-farm export`` writes into its folder.
EXPORT_FILES = {"state_dict": "local_state_dict.pt", "torchscript": "local_torchscript.pt"}
EXPORT_META = "export.json"


class ModelLoadError(ValueError):
    """A model that cannot be loaded; the message says why and what to do instead."""


def state_uri(storage: str, model_id: str) -> str:
    """Where a model's training state lives, beside Tune's experiment state."""
    return f"{storage.rstrip('/')}/train-{model_id}/{STATE_FILE}"


def read_state(uri: str) -> dict[str, Any] | None:
    """The saved state, read as data: ``weights_only`` unpickles tensors, containers and numbers
    only, so a file planted under the results root cannot run code (it fails to load instead)."""
    data = read_bytes(uri)
    if data is None:
        return None
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError for foreign objects, or a damaged file
        raise RuntimeError(
            f"training state {uri} is not a pp_cluster state file ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); move it aside to retrain "
            "this model"
        ) from None


@dataclass
class TrainedModel:
    """A trained classifier and its halves at ``partition``, in eval mode on the CPU.

    ``local`` and ``remote`` hold ``net``'s own modules, so ``remote(local(x)) == net(x)``.
    The weights are the model as trained, the ones its attacks judged (a sweep's remote
    fine-tuning only measures accuracies and is not kept). ``final`` is training's final
    record (``status``, ``test_acc``, ``train_acc``, ``final_task_loss``, ``final_distance``,
    ``train_seconds``, the fine-tuning accuracies): the models row's metrics."""

    model_id: str
    sweep: str
    spec: ModelSpec
    partition: str
    net: PartitionedNet
    local: nn.Sequential
    remote: nn.Sequential
    final: dict[str, Any]
    image_shape: tuple[int, int, int]  # C, H, W of the float32 N×C×H×W input
    value_range: tuple[float, float]  # the input's pixel range
    classes: tuple[str, ...]


def load_model(
    results: str,
    model_id: str,
    *,
    partition: str | None = None,
    storage: str | None = None,
    data_root: str | None = None,
    dataset: Dataset | None = None,
) -> TrainedModel:
    """The model ``model_id`` of the results root ``results``, split at ``partition``.

    ``partition`` defaults to the one the model was defended at (a partition suite's first);
    an undefended model (λ = 0, trained whole and attacked at every partition) is split at
    its arch's default one.
    ``storage``: the sweep's ``--storage-path`` if it had one. The model's data set is read
    for its image shape, classes and value range (the embedded ones need no files; real data
    from the spec's ``data_root``, or ``data_root`` where it lives on this machine), unless
    ``dataset`` is that data set, already loaded (a caller loading many models of one sweep).
    Raises :class:`ModelLoadError` naming what is missing before the data set is read.
    """
    store = ResultStore(results)
    sweeps = _sweeps(store)
    if not isinstance(model_id, str) or not NAME_PATTERN.fullmatch(model_id):
        raise ModelLoadError(f"{model_id!r} is not a model id; {_known(store)}")
    row = _models_row(store, sweeps, model_id)
    uri = state_uri(storage or f"{results.rstrip('/')}/_ray", model_id)
    if row is None:
        state = read_state(uri)
        if state is None:
            raise ModelLoadError(f"unknown model id {model_id!r} under {redact(results)}; {_known(store)}")
        if not state.get("done"):
            raise ModelLoadError(
                f"model {model_id} has not finished training: its state file {redact(uri)} holds "
                f"{len(state.get('history') or [])} epochs so far; load it once its models row is written"
            )
        raise ModelLoadError(
            f"model {model_id} finished training but has no models row yet: its trial is writing "
            "it, or died before (a --resume of its sweep writes it)"
        )
    spec = _spec(row)
    if row["status"] != OK:
        raise ModelLoadError(
            f"model {model_id} {row['status']} during training (epoch {row['diverged_epoch']}): "
            "its weights are not a usable network"
        )
    meta = _net_on_meta(spec)
    suite = tuple(getattr(spec, "partition_suite", ()) or ())
    partition = partition or spec.partition or (suite[0] if suite else None) or meta.default_partition
    if partition not in meta.partitions:
        raise ModelLoadError(
            f"unknown partition {partition!r} for {spec.arch}; valid: {', '.join(meta.partitions)}"
        )
    state = read_state(uri)
    if state is None:
        raise ModelLoadError(
            f"model {model_id} has a models row but no state file at {redact(uri)}: its weights "
            "were kept elsewhere (pass the sweep's --storage-path as storage=) or removed"
        )
    if not state.get("done"):
        raise ModelLoadError(f"model {model_id} has not finished training: {redact(uri)} is a checkpoint")

    if data_root is not None:
        spec = replace(spec, data_root=data_root)
    try:
        ds = dataset if dataset is not None else pipeline.load_data(spec)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise ModelLoadError(
            f"{e}; the model's data set gives its image shape and classes: pass data_root= "
            "(pp-farm export --data-root) where it is on this machine"
        ) from None
    with torch.device("meta"):  # the saved weights replace these; nothing is initialised
        net = pipeline.build_classifier(spec, ds.image_shape, ds.num_classes)
    net.load_state_dict(state["net"], assign=True)
    net.eval()
    local, remote = split(net, partition)
    return TrainedModel(
        model_id=model_id,
        sweep=str(row["sweep"]),
        spec=spec,
        partition=partition,
        net=net,
        local=local,
        remote=remote,
        final=dict(state["final"]),
        image_shape=tuple(ds.image_shape),
        value_range=tuple(ds.value_range),
        classes=tuple(ds.classes),
    )


def export_local(model: TrainedModel, out: str) -> dict[str, Any]:
    """Write ``model``'s local partition, what a user's device runs, into the folder ``out``
    (a path or URI): its state dict, its TorchScript and :data:`EXPORT_META` describing both.
    Returns that description.

    TorchScript is scripted, which keeps the partition's code (the noise defense draws fresh
    noise on every call). A network that cannot be scripted (a plugin's) is traced on a batch
    of inputs instead, which records that batch's operations; the description says which.
    torch 2.x deprecates ``torch.jit`` in favour of ``torch.export`` and warns on every call;
    those warnings are silenced here, where TorchScript is what was asked for.
    """
    local = model.local.eval()
    example = torch.empty(2, *model.image_shape).uniform_(*model.value_range)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*torch\.jit\.\w+` is deprecated", FutureWarning)
        try:
            scripted, how = torch.jit.script(local), "script"
        except Exception as err:  # TorchScript's compiler refuses Python it does not support
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            scripted, how = torch.jit.trace(local, example), f"trace (torch.jit.script failed: {reason})"
        buf = io.BytesIO()
        torch.jit.save(scripted, buf)
    with torch.no_grad():
        activation = tuple(local(example).shape[1:])
    meta = {
        "model_id": model.model_id,
        "sweep": model.sweep,
        "partition": model.partition,
        "defended_at": model.spec.partition,
        "input_shape": ["N", *model.image_shape],
        "input_dtype": "float32",
        "value_range": list(model.value_range),
        "activation_shape": ["N", *activation],
        "classes": list(model.classes),
        "torchscript": how,
        "files": EXPORT_FILES,
        "final": model.final,
        "spec": model.spec.to_dict(),
        "torch_version": torch.__version__,
    }
    out = out.rstrip("/")
    state = io.BytesIO()
    torch.save(local.state_dict(), state)
    write_bytes(f"{out}/{EXPORT_FILES['state_dict']}", state.getvalue())
    write_bytes(f"{out}/{EXPORT_FILES['torchscript']}", buf.getvalue())
    write_bytes(f"{out}/{EXPORT_META}", json.dumps(meta, indent=1).encode())
    return meta


def _sweeps(store: ResultStore) -> list[str]:
    """The sweeps with a models table folder under the root (a listing of one level)."""
    where = f"{store.base}/models"
    if store.fs.get_file_info(where).type == pafs.FileType.NotFound:
        raise ModelLoadError(f"{redact(store.root)} is not a results root: it has no models table")
    infos = store.fs.get_file_info(pafs.FileSelector(where))
    names = [i.base_name for i in infos if i.type == pafs.FileType.Directory]
    return sorted(n.removeprefix("sweep=") for n in names if n.startswith("sweep="))


def _models_row(store: ResultStore, sweeps: list[str], model_id: str) -> dict[str, Any] | None:
    """The model's row, looked up by its file in each sweep (no table is read whole)."""
    for sweep in sweeps:
        df = store.read("models", sweep, keys=[model_id])
        if not df.empty:
            return df.astype(object).where(df.notna(), None).to_dict("records")[0]
    return None


def _known(store: ResultStore, n: int = 5) -> str:
    """A few loadable model ids, for an error message."""
    models = store.read("models")
    models = models[(models["status"] == OK) & (models["defense"] != "dp_pixelation")]
    if models.empty:
        return "it holds no trained model"
    ids = sorted(models["model_id"].astype(str))
    more = f" and {len(ids) - n} more" if len(ids) > n else ""
    return f"known: {', '.join(ids[:n])}{more} (pp-farm status lists them)"


def _spec(row: dict[str, Any]) -> ModelSpec:
    config = json.loads(row["config_json"])
    if row["defense"] == "dp_pixelation":
        raise ModelLoadError(
            f"model {row['model_id']} is an ε-DP pixelated release of the test images, not a trained "
            f"network: load the model it evaluates, {config['base_model_id']}"
        )
    return ModelSpec.from_dict(config)


def _net_on_meta(spec: ModelSpec) -> PartitionedNet:
    """The arch's net for its registered stand-in shape, without memory: its split points."""
    with torch.device("meta"):
        return pipeline.build_classifier(spec, NET_REGISTRY[spec.arch].input_shape, 2)
