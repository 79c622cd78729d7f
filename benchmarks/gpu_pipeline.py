"""Ray-free GPU benchmark of the science pipeline (issue 19): one script, at most 8 minutes.

Made for the GPU machine that is sometimes lent for one prepared run (one CUDA card, PyTorch,
NumPy, scikit-image, scikit-learn; no Ray, Optuna, lpips or network). It calls only the science
path -- ``pipeline.train_model`` (Algorithm 1), ``pipeline.build_model`` / ``attack_inputs``,
``privacy.attack.train_attacker``, ``nets.build_decoder``, ``precision`` -- and never imports
Ray, Optuna or lpips. It prints, with the card's name and the PyTorch version:

- train: steady seconds per epoch of the face CNN (App. B ``photo-to-id``), plain (λ = 0) and
  defended (one deconv defender, λ = 0.1, at each ``--partitions``), with bf16 autocast +
  channels-last (AMP+CL) off and on. Epoch 1 is a warm-up and is not counted; every epoch is
  timed between ``torch.cuda.synchronize()`` calls in ``train_model``'s ``on_epoch`` hook, so
  an epoch is what the pipeline runs: the batches plus the test-accuracy pass.
- attack: steady seconds per attacker epoch (deconv, fc, resdec; AMP+CL off/on) after a
  warm-up epoch, on activations of the face CNN's local partition (the strong attacker's data:
  the model's training images, 10 % held out for validation as ``train_attacker`` does).
- concurrency: models per hour with 1/2/4/8 training processes on the one GPU (multiprocessing
  'spawn', no Ray), each training the defended model for the same number of steady epochs
  after a warm-up epoch and a barrier; models/h = aggregate epochs per hour / 250.
- GPU utilisation and memory sampled per device during each steady phase (``nvidia-smi``
  polled in a thread; else pynvml; else 'unavailable').
- projection: the wall time of the paper's full LFW experiment (Sec. V-C: 3 partitions x
  λ {0, 0.1} x 5 runs = 30 models x 250 epochs, 3 attackers each = 90 attackers x 50 epochs)
  from the measured steady numbers, serially and at the best packing.

Data: scikit-image's 200 embedded LFW crops (``lfw-subset``, face / non-face, 25x25 grey) at
the paper's 64x64 and as RGB (grey repeated, the face CNN takes 3 channels), replicated to the
paper's 1,896 training and 474 test images (2,370 faces of the 34 people with >= 30 images,
split 80/20); or real LFW with ``--data-root`` (its own 1,896 / 474). Only the number and
shape of the images matter for timing; the accuracies of the replicated set mean nothing.

``--budget-s`` (default 420) bounds the whole run, start-up included: the number of steady
epochs of every measurement is scaled to the time left (at least 1 each; a measurement is
skipped, and says so in its row, only when the time left cannot hold even that). ``--dry-run`` runs the same code on the CPU
at tiny sizes (32x32, 64 images, 1 steady epoch, 1 and 2 processes) in well under a minute.

    python benchmarks/gpu_pipeline.py --out gpu_pipeline.json      # on the GPU machine
    python benchmarks/gpu_pipeline.py --dry-run                    # anywhere, CPU
"""

from __future__ import annotations

import time

T_START = time.time()  # the budget counts from here: imports and CUDA start-up are part of the run

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing as mp  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import queue as queue_mod  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the GPU machine has the repository copied, not installed
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pp_cluster import precision  # noqa: E402
from pp_cluster.config import ModelSpec  # noqa: E402
from pp_cluster.data import Dataset, load_dataset  # noqa: E402
from pp_cluster.data.base import Split  # noqa: E402
from pp_cluster.data.common import take  # noqa: E402
from pp_cluster.nets import build_decoder  # noqa: E402
from pp_cluster.pipeline import attack_inputs, build_model, train_model  # noqa: E402
from pp_cluster.privacy.attack import AttackConfig, train_attacker  # noqa: E402

T_IMPORTED = time.time()

# The paper's LFW experiment (Section V-C, App. B).
PAPER_TRAIN_IMAGES = round(2370 * 0.8)  # 1,896: 34 people with >= 30 images, 20 % held out
PAPER_TEST_IMAGES = 2370 - PAPER_TRAIN_IMAGES  # 474
PAPER_IMAGE_SIZE = 64
PAPER_LAM = 0.1
PAPER_PARTITIONS = ("pool1", "pool2", "pool3")
PAPER_RUNS = 5  # "we run all of the experiments five times"
PAPER_MODELS = len(PAPER_PARTITIONS) * 2 * PAPER_RUNS  # 30: partitions x λ {0, 0.1} x runs
PAPER_EPOCHS = 250
PAPER_ATTACKERS_PER_MODEL = 3  # deconv, fc, sparse_fc
PAPER_ATTACKERS = PAPER_MODELS * PAPER_ATTACKERS_PER_MODEL  # 90
PAPER_ATTACK_EPOCHS = 50
ATTACKERS = ("deconv", "fc", "resdec")
ATTACK_BATCH, ATTACK_LR = 64, 1e-3  # AttackSpec's defaults, as the sweeps run them
CONCURRENCY = (1, 2, 4, 8)
# Shares of the time left after start-up: in-process training, attackers, concurrency.
SHARES = {"train": 0.30, "attack": 0.22, "concurrency": 0.48}
RESERVE_S = 5.0  # kept back for the table and the JSON at the end
DRY = dict(
    image_size=32, train_images=64, test_images=16, partitions="pool2", concurrency="1,2", max_epochs=1
)
HEADER = (
    "section",
    "measurement",
    "AMP+CL",
    "value",
    "unit",
    "timed",
    "GPU util % mean/max",
    "GPU mem MiB max",
    "note",
)


class Enough(Exception):
    """Raised from a pipeline hook to end a measurement once it has its steady epochs."""


def log(*parts: Any) -> None:
    print(f"[{time.time() - T_START:6.1f} s]", *parts, flush=True)


# -- the data ---------------------------------------------------------------------------


def fit_count(split: Split, n: int | None) -> Split:
    """``split`` with exactly ``n`` images: the images repeated in order (or the first ``n``)."""
    if n is None or n == len(split):
        return split
    return take(split, np.resize(np.arange(len(split)), n))


def synthetic_faces(size: int, n: int = 200) -> Dataset:
    """Stand-in with lfw-subset's name, shapes and value range, should it not load: only
    the number and shape of the images matter for timing."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((n, 3, size, size), generator=gen) * 2 - 1
    y = torch.arange(n) % 2
    cut = n * 4 // 5
    return Dataset(
        "lfw-subset",
        Split(x[:cut], y[:cut]),
        Split(x[cut:], y[cut:]),
        ("face", "non_face"),
        (3, size, size),
        (-1.0, 1.0),
        {"source": "synthetic"},
    )


def paper_data(
    data_root: str | None, size: int, n_train: int | None, n_test: int | None
) -> tuple[Dataset, str]:
    """The benchmark's data set and a line that says what it is."""
    if data_root is None:
        try:
            ds = load_dataset("lfw-subset", None, size=size, color=True)
            what = (
                f"lfw-subset ({len(ds.train)} train / {len(ds.test)} test embedded crops) at {size}x{size} "
                "RGB, replicated"
            )
        except Exception as err:  # noqa: BLE001 - a one-shot GPU run must not die on the data
            ds = synthetic_faces(size)
            what = (
                f"SYNTHETIC noise images at {size}x{size} RGB (lfw-subset did not load: "
                f"{type(err).__name__}: {err}), replicated"
            )
    else:
        ds = load_dataset("lfw", data_root, min_faces=30, size=size)
        what = f"LFW from {data_root} ({len(ds.classes)} people, {len(ds.train)} train / {len(ds.test)} test)"
    train, test = fit_count(ds.train, n_train), fit_count(ds.test, n_test)
    if (len(train), len(test)) != (len(ds.train), len(ds.test)):
        what += f" to {len(train)} / {len(test)}"
    ds = dataclasses.replace(
        ds, train=train, test=test, meta={**ds.meta, "n_train": len(train), "n_test": len(test)}
    )
    return ds, what + f", {ds.num_classes} classes"


# -- timing helpers ---------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def steady_stop(
    steady: int, cap: int, started: float, last_epoch: float, slice_s: float, deadline: float
) -> bool:
    """Whether to stop after ``steady`` steady epochs (>= 1 always runs): at ``cap``, or when
    one more epoch of ``last_epoch`` seconds would pass the slice or the deadline."""
    if steady < 1:
        return False
    now = time.time()
    return steady >= cap or now - started + last_epoch > slice_s or now + last_epoch > deadline


def concurrency_epochs(slice_s: float, overhead_s: float, procs: int, single_epoch_s: float, cap: int) -> int:
    """Steady epochs per process at one concurrency level: what fits the slice if the ``procs``
    processes shared the GPU with no overlap at all (each epoch ``procs`` x the single one)."""
    room = slice_s - overhead_s
    if single_epoch_s <= 0 or room <= 0:
        return 1
    return max(1, min(cap, math.floor(room / (procs * single_epoch_s))))


@dataclasses.dataclass
class Timing:
    epochs: list[float]  # steady epoch seconds
    warmup_s: float  # set-up + the warm-up epoch
    window: tuple[float, float]  # wall clock (time.time) of the steady phase
    peak_mib: float | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.epochs)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def time_training(
    spec: ModelSpec, ds: Dataset, device: torch.device, cap: int, slice_s: float, deadline: float
) -> Timing:
    """``pipeline.train_model`` for up to 1 + ``cap`` epochs; the hook times each epoch and
    ends the run (``Enough``) once the steady epochs fill the slice."""
    marks: list[float] = []
    release(device)
    _peak_reset(device)
    started = time.time()

    def on_epoch(row: dict, state_fn: Any) -> None:
        sync(device)
        marks.append(time.time())
        steady = len(marks) - 1
        if steady >= 1 and steady_stop(steady, cap, started, marks[-1] - marks[-2], slice_s, deadline):
            raise Enough

    try:
        train_model(dataclasses.replace(spec, epochs=cap + 1), ds, device=str(device), on_epoch=on_epoch)
    except Enough:
        pass
    if len(marks) < 2:
        raise RuntimeError(f"training ran {len(marks)} epoch(s), expected a warm-up and >= 1 steady epoch")
    return Timing(list(np.diff(marks)), marks[0] - started, (marks[0], marks[-1]), _peak(device))


def time_attacker(
    name: str,
    net: torch.nn.Module,
    partition: str,
    inputs: Any,
    ds: Dataset,
    device: torch.device,
    amp: bool,
    cap: int,
    slice_s: float,
    deadline: float,
    seed: int = 0,
) -> Timing:
    """``privacy.attack.train_attacker`` for up to 1 + ``cap`` epochs. It calls
    ``attacker.train()`` at the start of every epoch, so a wrapper of that method on this
    attacker instance marks the epochs (after a synchronize) and can end the run; the
    attacker and the training loop are the pipeline's own."""
    release(device)
    torch.manual_seed(seed)
    attacker = build_decoder(name, net, partition, ds.value_range)
    own_train = attacker.train
    marks: list[float] = []
    started = time.time()

    def train_hook(mode: bool = True) -> torch.nn.Module:
        if mode:
            sync(device)
            marks.append(time.time())
            steady = len(marks) - 2  # epochs finished after the warm-up one
            if steady >= 1 and steady_stop(steady, cap, started, marks[-1] - marks[-2], slice_s, deadline):
                raise Enough
        return own_train(mode)

    attacker.train = train_hook  # an instance attribute: only this attacker's top-level calls
    cfg = AttackConfig(
        epochs=cap + 1,
        batch_size=ATTACK_BATCH,
        lr=ATTACK_LR,
        seed=seed,
        device=str(device),
        amp=amp,
        channels_last=amp,
    )
    h_train, x_train = torch.from_numpy(inputs.h_train), torch.from_numpy(inputs.x_train)
    _peak_reset(device)
    try:
        train_attacker(attacker, h_train, x_train, ds.value_range, cfg)
        sync(device)
        marks.append(time.time())  # the end of the last epoch (no next epoch started)
    except Enough:
        pass
    if len(marks) < 3:
        raise RuntimeError(
            f"the attacker's epochs were not marked ({len(marks)} marks); did train_attacker "
            "stop calling attacker.train() per epoch?"
        )
    return Timing(list(np.diff(marks)[1:]), marks[1] - started, (marks[1], marks[-1]), _peak(device))


# -- GPU utilisation --------------------------------------------------------------------

SMI = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]


class GpuSampler:
    """Utilisation (%) and memory used (MiB) of every device, sampled in a thread all run long;
    :meth:`window` summarises the samples of one steady phase."""

    def __init__(self, enabled: bool, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.samples: list[tuple[float, int, float, float]] = []  # (time, device, util %, MiB)
        self.source = "unavailable"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: Any = None
        if not enabled:
            return
        if shutil.which("nvidia-smi") and self._read_smi() is not None:
            self.source = "nvidia-smi"
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            self.source = "pynvml"
        except Exception:  # noqa: BLE001 - not importable or no driver: unavailable
            self._nvml = None

    def _read_smi(self) -> list[tuple[float, float]] | None:
        try:
            out = subprocess.run(SMI, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return None
        if out.returncode != 0:
            return None
        rows = []
        for line in out.stdout.strip().splitlines():
            try:
                util, mem = (float(v) for v in line.split(","))
            except ValueError:  # "[N/A]" and the like
                return None
            rows.append((util, mem))
        return rows or None

    def _read(self) -> list[tuple[float, float]] | None:
        if self.source == "nvidia-smi":
            return self._read_smi()
        rows = []
        for h in self._handles:
            rows.append(
                (
                    float(self._nvml.nvmlDeviceGetUtilizationRates(h).gpu),
                    self._nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20,
                )
            )
        return rows

    def _loop(self) -> None:
        while not self._stop.is_set():
            t = time.time()
            try:
                rows = self._read()
            except Exception:  # noqa: BLE001 - a failed poll is a missing sample
                rows = None
            for i, (util, mem) in enumerate(rows or ()):
                self.samples.append((t, i, util, mem))
            self._stop.wait(max(0.0, self.interval_s - (time.time() - t)))

    def start(self) -> None:
        if self.source != "unavailable":
            self._thread = threading.Thread(target=self._loop, name="gpu-sampler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def window(self, t0: float, t1: float) -> tuple[str, str, dict[str, Any]]:
        """(util cell, memory cell, raw) for the samples taken between t0 and t1."""
        if self.source == "unavailable":
            return "unavailable", "unavailable", {}
        picked = [s for s in list(self.samples) if t0 <= s[0] <= t1]
        if not picked:
            return "no sample", "no sample", {}
        raw, utils, mems = {}, [], []
        for dev in sorted({s[1] for s in picked}):
            u = [s[2] for s in picked if s[1] == dev]
            m = [s[3] for s in picked if s[1] == dev]
            raw[str(dev)] = {
                "util_mean": statistics.fmean(u),
                "util_max": max(u),
                "mem_max_mib": max(m),
                "n": len(u),
            }
            prefix = f"gpu{dev}: " if len({s[1] for s in picked}) > 1 else ""
            utils.append(f"{prefix}{statistics.fmean(u):.0f}/{max(u):.0f}")
            mems.append(f"{prefix}{max(m):.0f}")
        return "; ".join(utils), "; ".join(mems), raw


# -- the concurrency test ---------------------------------------------------------------


def _worker(rank: int, barriers: dict[int, Any], commands: Any, results: Any) -> None:
    """A spawned training process, started once for every level (imports, data and CUDA are
    paid once). Per command: the defended model, a warm-up epoch, the level's barrier (all its
    processes start their steady epochs together), then ``job['epochs']`` steady epochs, each
    ended by a synchronize; its epoch marks (time.time) go to ``results``. ``None`` ends it."""
    data: dict[tuple, Dataset] = {}
    while True:
        job = commands.get()
        if job is None:
            return
        barrier = barriers[job["procs"]]
        try:
            torch.set_num_threads(job["threads"])
            device = torch.device(job["device"])
            key = (job["data_root"], job["size"], job["n_train"], job["n_test"])
            if key not in data:
                data[key] = paper_data(*key)[0]
            marks: list[float] = []

            def on_epoch(row: dict, state_fn: Any) -> None:
                sync(device)
                if not marks:  # the warm-up epoch is over: wait for the others
                    barrier.wait(timeout=job["barrier_timeout"])
                marks.append(time.time())
                if len(marks) - 1 >= 1 and time.time() > job["deadline"]:
                    raise Enough

            spec = dataclasses.replace(job["spec"], epochs=1 + job["epochs"])
            try:
                train_model(spec, data[key], device=str(device), on_epoch=on_epoch)
            except Enough:
                pass
            release(device)
            results.put({"rank": rank, "procs": job["procs"], "marks": marks, "error": None})
        except BaseException as err:  # noqa: BLE001 - reported to the parent, which decides
            try:
                barrier.abort()
            finally:
                results.put(
                    {
                        "rank": rank,
                        "procs": job["procs"],
                        "marks": [],
                        "error": f"{type(err).__name__}: {err}",
                    }
                )


class Workers:
    """``n`` spawned processes (multiprocessing 'spawn', no Ray) that train on the one device;
    :meth:`run_level` has ``k`` of them train at once."""

    def __init__(self, n: int, levels: Sequence[int]) -> None:
        ctx = mp.get_context("spawn")
        self.barriers = {k: ctx.Barrier(k) for k in levels}
        self.results = ctx.Queue()
        self.commands = [ctx.Queue() for _ in range(n)]
        self.procs = [
            ctx.Process(
                target=_worker,
                args=(r, self.barriers, self.commands[r], self.results),
                name=f"gpu-pipeline-{r}",
                daemon=True,
            )
            for r in range(n)
        ]
        self.broken = ""
        for p in self.procs:
            p.start()

    def run_level(self, k: int, job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Workers 0..k-1 train ``job`` at once; their aggregate steady throughput."""
        if self.broken:
            return {"error": f"workers stopped earlier ({self.broken})"}
        sent = time.time()
        for r in range(k):
            self.commands[r].put({**job, "procs": k})
        got: list[dict[str, Any]] = []
        while len(got) < k:
            try:
                got.append(self.results.get(timeout=max(1.0, sent + timeout_s - time.time())))
            except queue_mod.Empty:
                self.broken = f"level {k} timed out after {timeout_s:.0f} s"
                self.barriers[k].abort()
                self.close(force=True)
                break
        errors = [r["error"] for r in got if r["error"]] + ["a process did not report"] * (k - len(got))
        ok = [r for r in got if not r["error"] and len(r["marks"]) >= 2]
        if errors or len(ok) < k:
            return {"error": "; ".join(errors) or "no steady epoch"}
        starts, ends = [r["marks"][0] for r in ok], [r["marks"][-1] for r in ok]
        epochs = [float(e) for r in ok for e in np.diff(r["marks"])]
        window = max(ends) - min(starts)
        return {
            "epochs_per_s": len(epochs) / window,
            "window": (min(starts), max(ends)),
            "epoch_s": epochs,
            "steady_per_proc": [len(r["marks"]) - 1 for r in ok],
            "to_barrier_s": min(starts) - sent,
        }

    def close(self, force: bool = False) -> None:
        """End the workers: ask, then (ours, by handle) terminate the ones still running."""
        if not force:
            for q in self.commands:
                q.put(None)
        for p in self.procs:
            p.join(timeout=0.5 if force else 15)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)


# -- the projection ---------------------------------------------------------------------


def project(
    plain_s: float,
    defended_s: dict[str, float],
    attack_s: dict[tuple[str, str], float],
    speedup: float,
    scale: float = 1.0,
) -> dict[str, Any]:
    """Seconds of the paper's full LFW experiment from steady epoch seconds.

    ``defended_s`` maps a partition to its defended epoch, ``attack_s`` (attacker, partition)
    to an attacker epoch (``fc``'s time stands for ``sparse_fc``: the same layers plus a
    dropout). The 30 models are 15 plain and 5 defended per partition; every model is attacked
    at its partition by deconv, fc and sparse_fc. A partition not measured takes the mean of
    those that were. ``scale`` multiplies every epoch (paper images / benchmark images);
    ``speedup`` is the best packing's throughput over one process's, applied to all the work.
    """
    parts = PAPER_PARTITIONS
    mean_def = statistics.fmean(defended_s.values())
    per_part_def = {p: defended_s.get(p, mean_def) for p in parts}

    def attack_epoch(attacker: str, p: str) -> float:
        known = [v for (a, q), v in attack_s.items() if a == attacker]
        return attack_s.get((attacker, p), statistics.fmean(known))

    runs = PAPER_RUNS
    train = PAPER_EPOCHS * scale * (len(parts) * runs * plain_s + runs * sum(per_part_def.values()))
    models_per_part = PAPER_MODELS // len(parts)  # 10: 5 plain + 5 defended
    attack = (
        PAPER_ATTACK_EPOCHS
        * scale
        * models_per_part
        * sum(attack_epoch("deconv", p) + 2 * attack_epoch("fc", p) for p in parts)
    )
    serial = train + attack
    return {
        "train_s": train,
        "attack_s": attack,
        "serial_s": serial,
        "speedup": speedup,
        "packed_s": serial / speedup if speedup > 0 else math.inf,
    }


# -- the run ----------------------------------------------------------------------------


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="the same code on the CPU at tiny sizes (32x32, 64 images, 1 steady epoch, 1-2 processes)",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=420.0,
        help="wall-clock budget of the whole run in seconds, start-up included (default 420)",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="also write the table (and the raw timings) as JSON here"
    )
    p.add_argument(
        "--data-root",
        default=None,
        help="real LFW folder (its own 1,896 / 474 images); "
        "default: the embedded lfw-subset replicated to that size",
    )
    p.add_argument("--device", default=None, help="default: cuda (cpu with --dry-run)")
    p.add_argument(
        "--partitions", default=None, help="defended / attacked partitions (default pool1,pool2,pool3)"
    )
    p.add_argument("--concurrency", default=None, help="training processes per level (default 1,2,4,8)")
    p.add_argument("--image-size", type=int, default=None, help=f"default {PAPER_IMAGE_SIZE} (the paper's)")
    p.add_argument(
        "--train-images", type=int, default=None, help=f"default {PAPER_TRAIN_IMAGES} (the paper's)"
    )
    p.add_argument("--test-images", type=int, default=None, help=f"default {PAPER_TEST_IMAGES} (the paper's)")
    p.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="most steady epochs per measurement (default 20; the budget usually decides)",
    )
    p.add_argument(
        "--recipe", default="paper", choices=("paper", "fast"), help="training recipe (default paper)"
    )
    p.add_argument(
        "--batch-size", type=int, default=32, help="training batch (the paper recipe's, default 32)"
    )
    return p


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults: the paper's sizes, or the dry run's tiny ones."""
    dry = DRY if args.dry_run else {}
    full = dict(
        image_size=PAPER_IMAGE_SIZE,
        partitions=",".join(PAPER_PARTITIONS),
        concurrency=",".join(map(str, CONCURRENCY)),
        max_epochs=20,
        train_images=None if args.data_root else PAPER_TRAIN_IMAGES,
        test_images=None if args.data_root else PAPER_TEST_IMAGES,
    )
    for key, value in full.items():
        if getattr(args, key) is None:
            setattr(args, key, dry.get(key, value))
    if args.device is None:
        args.device = "cpu" if args.dry_run else "cuda"
    args.partitions = tuple(p.strip() for p in args.partitions.split(",") if p.strip())
    args.concurrency = tuple(int(k) for k in args.concurrency.split(","))
    bad = [p for p in args.partitions if p not in ("pool1", "pool2", "pool3", "pool4")]
    if bad or not args.partitions:
        raise SystemExit(f"--partitions: face_cnn has pool1..pool4, got {bad or 'none'}")
    if min(args.concurrency) < 1 or args.max_epochs < 1:
        raise SystemExit("--concurrency levels and --max-epochs must be >= 1")
    return args


def device_line(device: torch.device) -> tuple[str, str]:
    """(card name, details) of the device measured."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        props = torch.cuda.get_device_properties(device)
        return name, (
            f"{props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs, CUDA "
            f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, cudnn.benchmark "
            f"{torch.backends.cudnn.benchmark}, matmul TF32 "
            f"{getattr(torch.backends.cuda.matmul, 'allow_tf32', '?')} "
            "(torch defaults: the pipeline sets none)"
        )
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu ({cpu})", (
        f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
        f"bf16 matrix units {precision.cpu_has_bf16_matmul()}"
    )


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return "—" if not math.isfinite(v) else f"{v:.4g}"
    return "—" if v is None else str(v)


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for r in rows:
        print("| " + " | ".join(fmt(r.get(h)) for h in HEADER) + " |")


def main(argv: Sequence[str] | None = None) -> int:
    args = resolve_args(get_args_parser().parse_args(argv))
    deadline = T_START + args.budget_s
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "no CUDA device here (torch.cuda.is_available() is False): run with --dry-run, or --device cpu",
            file=sys.stderr,
        )
        return 2
    if args.dry_run or device.type == "cpu":
        torch.set_num_threads(1)  # the CPU run is a check of the code, and the cores are shared
    else:
        torch.cuda.init()
        torch.zeros(1, device=device)  # the CUDA context, before any timing
    card, details = device_line(device)
    ds, data_what = paper_data(args.data_root, args.image_size, args.train_images, args.test_images)
    scale = PAPER_TRAIN_IMAGES / len(ds.train)
    sampler = GpuSampler(enabled=device.type == "cuda")
    sampler.start()
    print(f"device: {card}  ({details})")
    print(f"torch: {torch.__version__}  python {platform.python_version()}  numpy {np.__version__}")
    print(
        f"data: {data_what}; image {tuple(ds.image_shape)}, batch {args.batch_size}, recipe {args.recipe!r}"
    )
    print(
        f"GPU utilisation: {sampler.source}"
        + (
            ""
            if sampler.source != "unavailable"
            else " (no CUDA device measured)"
            if device.type != "cuda"
            else " (no nvidia-smi, no pynvml)"
        )
    )
    print(
        f"budget: {args.budget_s:.0f} s from start-up; start-up took {time.time() - T_START:.1f} s"
        + ("; DRY RUN: CPU, tiny sizes, values check the code only" if args.dry_run else ""),
        flush=True,
    )

    rows: list[dict[str, Any]] = []
    raw: dict[str, Any] = {"train": {}, "attack": {}, "concurrency": {}}
    failures = 0
    left = deadline - time.time() - RESERVE_S
    phase_end = {}
    t = time.time()
    for phase in ("train", "attack", "concurrency"):
        t += SHARES[phase] * max(left, 0.0)
        phase_end[phase] = t

    def row(
        section: str,
        what: str,
        amp: str,
        value: Any,
        unit: str,
        timed: str,
        window: tuple | None = None,
        note: str = "",
    ) -> dict[str, Any]:
        util, mem, samples = (
            sampler.window(*window)
            if window
            else (("unavailable", "unavailable", {}) if sampler.source == "unavailable" else ("—", "—", {}))
        )
        r = {
            "section": section,
            "measurement": what,
            "AMP+CL": amp,
            "value": value,
            "unit": unit,
            "timed": timed,
            "GPU util % mean/max": util,
            "GPU mem MiB max": mem,
            "note": note,
            "gpu_samples": samples,
        }
        rows.append(r)
        log(" | ".join(fmt(r[h]) for h in HEADER))
        return r

    def slice_for(phase: str, items_left: int) -> float:
        return max(0.0, (phase_end[phase] - time.time()) / max(1, items_left))

    # 1. training, in this process --------------------------------------------------------
    base = dict(
        dataset=ds.name,
        arch="face_cnn",
        distance="ssim",
        seed=0,
        epochs=1,
        batch_size=args.batch_size,
        recipe=args.recipe,
    )
    configs = [("plain λ=0", None, ModelSpec(partition=None, lam=0.0, defenders=(), defense="none", **base))]
    configs += [
        (
            f"defended λ={PAPER_LAM} deconv @{p}",
            p,
            ModelSpec(partition=p, lam=PAPER_LAM, defenders=("deconv",), **base),
        )
        for p in args.partitions
    ]
    train_times: dict[tuple[str | None, bool], float] = {}
    jobs = [(label, part, spec, amp) for label, part, spec in configs for amp in (False, True)]
    for i, (label, part, spec, amp) in enumerate(jobs):
        amp_s = "on" if amp else "off"
        spec = dataclasses.replace(spec, train_overrides={"amp": amp, "channels_last": amp})
        if time.time() > deadline - RESERVE_S:
            row("train", f"face_cnn {label}", amp_s, None, "s/epoch", "0", note="skipped: budget spent")
            continue
        try:
            tm = time_training(
                spec, ds, device, args.max_epochs, slice_for("train", len(jobs) - i), deadline - RESERVE_S
            )
        except Exception as err:  # noqa: BLE001 - one failed measurement must not lose the others
            failures += 1
            row(
                "train",
                f"face_cnn {label}",
                amp_s,
                None,
                "s/epoch",
                "0",
                note=f"error: {type(err).__name__}: {err}",
            )
            continue
        train_times[(part, amp)] = tm.median
        raw["train"][f"{label} amp={amp_s}"] = dataclasses.asdict(tm)
        note = f"median; min {min(tm.epochs):.4g}, max {max(tm.epochs):.4g}; set-up + warm-up {tm.warmup_s:.3g} s"
        if tm.peak_mib is not None:
            note += f"; torch peak {tm.peak_mib:.0f} MiB"
        row(
            "train", f"face_cnn {label}", amp_s, tm.median, "s/epoch", f"{len(tm.epochs)} ep", tm.window, note
        )

    # 2. attackers, in this process -------------------------------------------------------
    attack_times: dict[tuple[str, str, bool], float] = {}
    ajobs = [(p, a, amp) for p in args.partitions for a in ATTACKERS for amp in (False, True)]
    inputs_at: dict[str, Any] = {}
    for i, (p, a, amp) in enumerate(ajobs):
        amp_s = "on" if amp else "off"
        what = f"{a} @{p}"
        if time.time() > deadline - RESERVE_S:
            row("attack", what, amp_s, None, "s/epoch", "0", note="skipped: budget spent")
            continue
        try:
            if p not in inputs_at:  # H of the (untrained) local partition: the pipeline's attack_inputs
                inputs_at.clear()
                release(device)
                model = build_model(configs[0][2].at(p), ds)
                inputs_at[p] = (model, attack_inputs(model.local, ds, "train", 1.0, 0, device=str(device)))
            model, inputs = inputs_at[p]
            tm = time_attacker(
                a,
                model.net,
                p,
                inputs,
                ds,
                device,
                amp,
                args.max_epochs,
                slice_for("attack", len(ajobs) - i),
                deadline - RESERVE_S,
            )
        except Exception as err:  # noqa: BLE001
            failures += 1
            row("attack", what, amp_s, None, "s/epoch", "0", note=f"error: {type(err).__name__}: {err}")
            continue
        attack_times[(a, p, amp)] = tm.median
        raw["attack"][f"{what} amp={amp_s}"] = dataclasses.asdict(tm)
        n_att = len(inputs.x_train) - max(1, round(len(inputs.x_train) * 0.1))
        note = f"median; {n_att} images a epoch, batch {ATTACK_BATCH}; set-up + warm-up {tm.warmup_s:.3g} s"
        if tm.peak_mib is not None:
            note += f"; torch peak {tm.peak_mib:.0f} MiB"
        if tm.note:
            note += f"; {tm.note}"
        row("attack", what, amp_s, tm.median, "s/epoch", f"{len(tm.epochs)} ep", tm.window, note)
    inputs_at.clear()
    release(device)

    # 3. concurrency: spawned training processes on the one device -------------------------
    conc_part = "pool2" if "pool2" in args.partitions else args.partitions[0]
    conc_label, _, conc_spec = next(c for c in configs if c[1] == conc_part)
    measured = {
        amp: train_times[(conc_part, amp)] for amp in (False, True) if (conc_part, amp) in train_times
    }
    conc_amp = min(measured, key=measured.get) if measured else device.type == "cuda"
    conc_spec = dataclasses.replace(conc_spec, train_overrides={"amp": conc_amp, "channels_last": conc_amp})
    single = measured.get(conc_amp, 1.0)
    # Until the first level says: several processes importing torch at once, CUDA, data, warm-up.
    startup = 2.0 * (T_IMPORTED - T_START) + 2.0
    throughput: dict[int, float] = {}
    cores = os.cpu_count() or 1
    levels = args.concurrency
    amp_s = "on" if conc_amp else "off"
    workers: Workers | None = None
    for i, k in enumerate(levels):
        what = f"{k} process{'es' if k > 1 else ''}: face_cnn {conc_label}"
        slice_s = slice_for("concurrency", len(levels) - i)
        overhead = (startup if workers is None else 0.0) + 1.5 * k * single + 1.0  # + the warm-up epoch
        if time.time() + overhead > deadline - RESERVE_S:
            row("concurrency", what, amp_s, None, "models/h", "0", note="skipped: budget spent")
            continue
        if workers is None:
            workers = Workers(max(levels), levels)
        epochs = concurrency_epochs(slice_s, overhead, k, single, args.max_epochs)
        job = {
            "spec": conc_spec,
            "device": str(device),
            "data_root": args.data_root,
            "size": args.image_size,
            "n_train": args.train_images,
            "n_test": args.test_images,
            "epochs": epochs,
            "threads": 1 if device.type == "cpu" else max(1, cores // k),
            "deadline": min(deadline - RESERVE_S, time.time() + slice_s),
            "barrier_timeout": max(60.0, 3 * overhead),
        }
        res = workers.run_level(k, job, timeout_s=max(90.0, deadline + 30 - time.time()))
        if "error" in res:
            failures += 1
            row("concurrency", what, amp_s, None, "models/h", "0", note=f"error: {res['error']}")
            continue
        throughput[k] = res["epochs_per_s"]
        models_h = 3600 * res["epochs_per_s"] / (PAPER_EPOCHS * scale)
        raw["concurrency"][str(k)] = res
        first = min(throughput)
        note = (
            f"{res['epochs_per_s'] / scale:.3g} paper-size epochs/s in all; per process median "
            f"{statistics.median(res['epoch_s']):.4g} s/epoch; x{res['epochs_per_s'] / throughput[first]:.2f} "
            f"the {first}-process throughput; command to barrier {res['to_barrier_s']:.3g} s"
            + (" (incl. process start-up)" if len(throughput) == 1 else "")
        )
        row(
            "concurrency",
            what,
            amp_s,
            models_h,
            f"models/h ({PAPER_EPOCHS} ep)",
            f"{k}x{min(res['steady_per_proc'])} ep",
            res["window"],
            note,
        )
    if workers is not None:
        workers.close()

    # 4. the projection ---------------------------------------------------------------------
    def best(times: dict, key_fn) -> dict:
        out: dict = {}
        for key, v in times.items():
            k2 = key_fn(key)
            out[k2] = min(v, out.get(k2, math.inf))
        return out

    plain = best({k: v for k, v in train_times.items() if k[0] is None}, lambda k: "plain").get("plain")
    defended = best({k: v for k, v in train_times.items() if k[0] is not None}, lambda k: k[0])
    attacks = best(attack_times, lambda k: (k[0], k[1]))
    have_attacks = any(a == "deconv" for a, _ in attacks) and any(a == "fc" for a, _ in attacks)
    base_k = 1 if 1 in throughput else (min(throughput) if throughput else None)
    best_k = max(throughput, key=throughput.get) if throughput else None
    what = (
        f"paper LFW: {PAPER_MODELS} models x {PAPER_EPOCHS} ep + {PAPER_ATTACKERS} attackers x "
        f"{PAPER_ATTACK_EPOCHS} ep"
    )
    scaled = f"; epochs scaled x{scale:.3g} to {PAPER_TRAIN_IMAGES} images" if abs(scale - 1) > 1e-9 else ""
    if plain is not None and defended and have_attacks:
        serial = project(plain, defended, attacks, 1.0, scale)
        raw["projection"] = {"serial": serial}
        row(
            "projection",
            what + ", 1 process",
            "best",
            serial["serial_s"] / 3600,
            "h",
            "",
            note=(
                f"train {serial['train_s'] / 3600:.3g} h + attack {serial['attack_s'] / 3600:.3g} h; "
                f"sparse_fc timed as fc; unmeasured partitions take the measured mean{scaled}"
            ),
        )
        if best_k is not None and base_k is not None:
            speedup = throughput[best_k] / throughput[base_k]
            packed = project(plain, defended, attacks, speedup, scale)
            raw["projection"]["packed"] = packed
            row(
                "projection",
                what + f", best packing: {best_k} process{'es' if best_k > 1 else ''}",
                "best",
                packed["packed_s"] / 3600,
                "h",
                "",
                note=(
                    f"serial / x{speedup:.2f} (the {best_k}-process over the {base_k}-process training "
                    f"throughput), applied to training and attacks alike{scaled}"
                ),
            )
        else:
            row(
                "projection",
                what + ", best packing",
                "best",
                None,
                "h",
                "",
                note="no concurrency level measured",
            )
    else:
        row("projection", what, "best", None, "h", "", note="missing plain, defended, deconv or fc timings")

    sampler.stop()
    wall = time.time() - T_START
    print()
    print(
        f"## gpu_pipeline.py — {card}, torch {torch.__version__}"
        + (" (DRY RUN on CPU)" if args.dry_run else "")
    )
    print()
    print(
        f"{data_what}. Steady = after one warm-up epoch; value = median over the timed epochs. "
        f"GPU utilisation from {sampler.source}. Wall {wall:.0f} s of a {args.budget_s:.0f} s budget."
    )
    print()
    print_table(rows)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "device": card,
            "device_details": details,
            "torch": torch.__version__,
            "dry_run": args.dry_run,
            "data": data_what,
            "image_shape": list(ds.image_shape),
            "n_train": len(ds.train),
            "n_test": len(ds.test),
            "budget_s": args.budget_s,
            "wall_s": wall,
            "utilisation_source": sampler.source,
            "columns": list(HEADER),
            "rows": rows,
            "raw": raw,
        }
        args.out.write_text(
            json.dumps(doc, indent=1, default=lambda o: list(o) if isinstance(o, tuple) else str(o))
        )
        print(f"\nJSON: {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
