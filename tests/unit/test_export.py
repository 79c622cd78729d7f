"""Trained models as outputs (issue 17): ``load_model`` rebuilds a trained network from a results
root, and ``pp-farm export`` writes its local partition for a device. The results root here is
built without Ray, the way a finished trial leaves it: the models row (``results.rows``) and
the state file at ``<storage>/train-<model id>/state.pt``."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import pp_cluster
from pp_cluster import models, pipeline
from pp_cluster.cli import main
from pp_cluster.config import ModelSpec, SweepSpec
from pp_cluster.nets import split
from pp_cluster.results import rows
from pp_cluster.results.fs import write_bytes
from pp_cluster.results.store import ResultStore, provenance

REPO = Path(__file__).resolve().parents[2]
SWEEP = "exp"
TINY = dict(
    dataset="lfw-subset",
    arch="face_cnn",
    distance="ssim",
    seed=0,
    epochs=1,
    batch_size=32,
    dataset_options={"size": 16},
    arch_options={"widths": (4, 8, 8, 8), "fc": 16},
)


def _storage(root: Path) -> str:
    """Where the farm keeps a sweep's training state for this results root (no --storage-path)."""
    return SweepSpec(
        name=SWEEP, dataset="lfw-subset", arch="face_cnn", partitions=(), results=str(root)
    ).storage()


def _finish(root: Path, spec: ModelSpec, ds) -> tuple[str, pipeline.Model]:
    """Train ``spec`` and leave what a finished trial leaves: the models row and the state file."""
    model, result = pipeline.train_model(spec, ds)
    model.net.eval()
    model_id = spec.model_id(SWEEP)
    final = {
        "status": result.status,
        "diverged_epoch": result.diverged_epoch,
        "test_acc": result.test_acc,
        "n_test": len(ds.test),
        "train_acc": result.train_acc,
        "final_task_loss": result.final_task_loss,
        "final_distance": result.final_distance,
        "train_seconds": result.seconds,
    }
    base = rows.model_base(
        SWEEP, spec, model_id, trial_id="t0", lr=1e-3, started=rows.utcnow(), prov=provenance()
    )
    ResultStore(str(root)).write("models", SWEEP, model_id, [rows.model_row(base, final)])
    net = {k: v.detach().cpu() for k, v in model.net.state_dict().items()}
    _write_state(
        models.state_uri(_storage(root), model_id),
        {"train_state": None, "history": result.epochs, "done": True, "final": final, "net": net},
    )
    return model_id, model


def _write_state(uri: str, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes(uri, buf.getvalue())


def model_test_acc(root: Path, model_id: str) -> float:
    return float(ResultStore(str(root)).read("models", SWEEP, keys=[model_id])["test_acc"].iloc[0])


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    """A results root with a defended model (pool1, λ = 0.1) and an undefended one."""
    root = tmp_path_factory.mktemp("results")
    torch.manual_seed(0)
    defended = ModelSpec(partition="pool1", lam=0.1, defenders=("deconv",), defense="partition", **TINY)
    plain = ModelSpec(partition=None, lam=0.0, defenders=(), defense="none", **TINY)
    ds = pipeline.load_data(defended)
    trained = {name: _finish(root, spec, ds) for name, spec in (("defended", defended), ("plain", plain))}
    return root, ds, trained


def test_load_model_gives_the_trained_network(farm):
    root, ds, trained = farm
    model_id, model = trained["defended"]
    loaded = pp_cluster.load_model(str(root), model_id)
    x = ds.test.x[:16]
    with torch.no_grad():
        torch.testing.assert_close(loaded.net(x), model.net(x), rtol=0, atol=0)
        torch.testing.assert_close(loaded.remote(loaded.local(x)), model.net(x))
        torch.testing.assert_close(loaded.local(x), model.local(x), rtol=0, atol=0)
    assert loaded.partition == "pool1" and loaded.sweep == SWEEP and not loaded.net.training
    assert loaded.spec.model_id(SWEEP) == model_id  # the spec the row holds is the one trained
    assert loaded.final["status"] == "ok" and loaded.final["n_test"] == len(ds.test)
    assert (loaded.image_shape, loaded.value_range, loaded.classes) == (
        ds.image_shape,
        ds.value_range,
        ds.classes,
    )
    # an undefended model was trained whole: split at the arch's default point unless told
    plain = pp_cluster.load_model(str(root), trained["plain"][0])
    assert plain.spec.partition is None and plain.partition == plain.net.default_partition == "pool2"
    assert pp_cluster.load_model(str(root), trained["plain"][0], partition="pool3").partition == "pool3"


def test_exported_local_partition_gives_the_same_activations(farm, tmp_path, capsys):
    root, ds, trained = farm
    model_id, model = trained["defended"]
    out = tmp_path / "out"
    assert main(["export", str(root), model_id, "--out", str(out)]) == 0
    assert str(out / "local_torchscript.pt") in capsys.readouterr().out
    meta = json.loads((out / "export.json").read_text())
    assert meta["model_id"] == model_id and meta["partition"] == meta["defended_at"] == "pool1"
    assert meta["input_shape"] == ["N", *ds.image_shape] and meta["value_range"] == list(ds.value_range)
    assert meta["torchscript"] == "script" and meta["final"]["test_acc"] == model_test_acc(root, model_id)

    x = ds.test.x[:16]  # real inputs
    with torch.no_grad():
        want = model.local(x)
    assert meta["activation_shape"] == ["N", *want.shape[1:]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        scripted = torch.jit.load(str(out / meta["files"]["torchscript"]))
    # A fresh local partition from the description alone, loaded with the exported state dict.
    spec = ModelSpec.from_dict(meta["spec"])
    fresh, _ = split(
        pipeline.build_classifier(spec, meta["input_shape"][1:], len(meta["classes"])), meta["partition"]
    )
    fresh.eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(x), want)  # untrained: the loaded weights decide
        fresh.load_state_dict(torch.load(out / meta["files"]["state_dict"], weights_only=True))
        torch.testing.assert_close(scripted(x), want)
        torch.testing.assert_close(fresh(x), want)


def test_export_at_another_partition(farm, tmp_path):
    root, ds, trained = farm
    model_id, model = trained["plain"]
    out = tmp_path / "pool3"
    assert main(["export", str(root), model_id, "--out", str(out), "--partition", "pool3"]) == 0
    meta = json.loads((out / "export.json").read_text())
    assert meta["partition"] == "pool3" and meta["defended_at"] is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(out / "local_torchscript.pt"))
    local, _ = split(model.net, "pool3")
    with torch.no_grad():
        torch.testing.assert_close(scripted(ds.test.x[:8]), local(ds.test.x[:8]))


class _PythonOnly(nn.Module):
    """A stage TorchScript cannot compile (it calls a Python function held as an attribute)."""

    def __init__(self) -> None:
        super().__init__()
        self.fn = lambda x: 2 * x

    def forward(self, x):
        return self.fn(x)


def test_a_network_that_cannot_be_scripted_is_traced_and_says_so(farm, tmp_path):
    root, ds, trained = farm
    loaded = pp_cluster.load_model(str(root), trained["defended"][0])
    odd = dataclasses.replace(loaded, local=nn.Sequential(loaded.local, _PythonOnly()))
    meta = models.export_local(odd, str(tmp_path))
    assert meta["torchscript"].startswith("trace (torch.jit.script failed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.load(str(tmp_path / "local_torchscript.pt"))
    x = ds.test.x[:4]
    with torch.no_grad():
        torch.testing.assert_close(traced(x), 2 * loaded.local(x))


def test_bad_input_fails_with_a_clear_message_before_the_data_is_read(farm, tmp_path, capsys, monkeypatch):
    root, _, trained = farm
    model_id = trained["defended"][0]

    def no_data(spec):
        raise AssertionError("the data set was read for bad input")

    monkeypatch.setattr(pipeline, "load_data", no_data)
    out = tmp_path / "out"

    def fails(*argv: str) -> str:
        assert main(["export", *argv, "--out", str(out)]) == 2
        return capsys.readouterr().err

    err = fails(str(root), "0123456789abcdef")
    assert "unknown model id '0123456789abcdef'" in err and trained["plain"][0] in err
    assert "is not a model id" in fails(str(root), "../etc")
    assert "not a results root" in fails(str(tmp_path / "nowhere"), model_id)
    assert "unknown partition 'fc9' for face_cnn; valid: pool1, pool2, pool3, pool4" in fails(
        str(root), model_id, "--partition", "fc9"
    )
    assert not out.exists()  # nothing written
    out.write_text("")
    assert "is a file, not a folder" in fails(str(root), model_id)


def test_rows_without_weights_and_unfinished_models_are_named(farm, tmp_path):
    root, _, trained = farm
    base = rows.model_base(
        SWEEP,
        ModelSpec(partition="pool2", lam=0.3, defenders=("deconv",), **TINY),
        "f" * 16,
        trial_id="t1",
        lr=1e-3,
        started=rows.utcnow(),
        prov=provenance(),
    )
    store = ResultStore(str(root))
    final = {
        k: None for k in ("diverged_epoch", "test_acc", "train_acc", "final_task_loss", "final_distance")
    }
    store.write(
        "models", SWEEP, "f" * 16, [rows.model_row(base, {**final, "status": "ok", "train_seconds": 1.0})]
    )
    with pytest.raises(
        models.ModelLoadError, match=r"models row but no state file at .*/_ray/train-f{16}/state\.pt"
    ):
        models.load_model(str(root), "f" * 16)
    # storage= is where the weights are looked for (a sweep's --storage-path): none there
    with pytest.raises(models.ModelLoadError, match="models row but no state file"):
        models.load_model(str(root), trained["defended"][0], storage=str(tmp_path / "elsewhere"))

    _write_state(
        models.state_uri(_storage(root), "e" * 16), {"done": False, "history": [{}, {}], "train_state": {}}
    )
    with pytest.raises(models.ModelLoadError, match="has not finished training: .* holds 2 epochs so far"):
        models.load_model(str(root), "e" * 16)

    diverged = {**final, "diverged_epoch": 1, "status": "diverged", "train_seconds": 1.0}
    store.write("models", SWEEP, "c" * 16, [rows.model_row({**base, "model_id": "c" * 16}, diverged)])
    with pytest.raises(
        models.ModelLoadError, match="diverged during training .epoch 1.: its weights are not"
    ):
        models.load_model(str(root), "c" * 16)

    dp = rows.dp_rows(
        {**base, "model_id": "d" * 16},
        {"eps": 1.0, "test_acc": 0.5, "mse": 0.1, "ssim": 0.2, "psnr": 10.0},
        attack_id="a" * 16,
        config={"base_model_id": "f" * 16},
        n_eval=4,
        cell=2,
        neighbourhood=1,
        prov=provenance(),
    )[0]
    store.write("models", SWEEP, "d" * 16, [dp])
    with pytest.raises(
        models.ModelLoadError, match=f"not a trained network: load the model it evaluates, {'f' * 16}"
    ):
        models.load_model(str(root), "d" * 16)


def test_loading_and_the_cli_stay_off_ray_and_import_pp_cluster_stays_light():
    code = (
        "import sys\n"
        "import pp_cluster, pp_cluster.cli\n"
        "light = 'torch' not in sys.modules\n"
        "pp_cluster.load_model\n"
        "print(light, sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True []"
