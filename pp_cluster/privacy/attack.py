"""The input-recovery attack of Section IV-C: train ``f_a: H -> X`` on activations, score it.

The attacker only ever sees precomputed activations ``H = f_local(x)``: the local
partition is run once (:func:`compute_activations`) and every attacker of a zoo trains
on the same tensors, as the remote side of a deployment would.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pp_cluster import precision
from pp_cluster.nets.decoders import clip_to_range
from pp_cluster.privacy.defense import OPTIMIZERS, build_optimizer
from pp_cluster.privacy.metrics import dpd, mse_images, psnr, reprint_accuracy, ssim_images, to_unit


@dataclass(frozen=True)
class AttackConfig:
    """How one attacker is trained (MSE loss in [0, 1] pixel space, V-B)."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0  # L2, as torch's Adam applies it
    optimizer: str = "adam"
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "cpu"
    patience: int | None = None  # stop after this many epochs without a better val MSE
    amp: bool | None = None  # bf16 autocast of the attacker's forward; None = pp_cluster.precision's default
    channels_last: bool | None = None  # None = on where amp is on by default

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"AttackConfig.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"AttackConfig.lr must be > 0, got {self.lr!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"AttackConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"AttackConfig.optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}"
            )
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"AttackConfig.val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if self.patience is not None and not (isinstance(self.patience, int) and self.patience >= 1):
            raise ValueError(f"AttackConfig.patience must be None or an integer >= 1, got {self.patience!r}")
        for name in ("amp", "channels_last"):
            if getattr(self, name) not in (None, True, False):
                raise ValueError(
                    f"AttackConfig.{name} must be True, False or None, got {getattr(self, name)!r}"
                )

    def fast_paths(self) -> tuple[bool, bool]:
        """(bf16 autocast, channels-last) as used (:func:`pp_cluster.precision.resolve`)."""
        return precision.resolve(self.device, self.amp, self.channels_last)


@dataclass
class AttackResult:
    """Metrics of one attack plus the first reconstructions/originals, in [0, 1]."""

    metrics: dict[str, float | int | str | None]
    reconstructions: Tensor
    originals: Tensor


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters(), torch.empty(0)).device


def compute_activations(
    local: nn.Module, x: Tensor, batch_size: int = 512, device: str | torch.device = "cpu"
) -> Tensor:
    """``H = f_local(x)`` in eval mode without gradients, returned on the CPU.

    ``local`` is moved to ``device``; its train/eval mode is restored afterwards.
    """
    local.to(device)
    was_training = local.training
    local.eval()
    with torch.no_grad():
        out = [local(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
    local.train(was_training)
    return torch.cat(out)


def _reconstruct(
    attacker: nn.Module, h: Tensor, value_range: tuple[float, float], batch_size: int, amp: bool = False
) -> Tensor:
    """Attacker outputs clipped to the value range (App. C), eval mode, on h's device, in fp32
    (the forward under bf16 autocast when ``amp``; the metrics always see fp32 images)."""
    device = _device_of(attacker)
    attacker.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        recs = [
            clip_to_range(attacker(h[i : i + batch_size].to(device)).float(), value_range).to(h.device)
            for i in range(0, len(h), batch_size)
        ]
    return torch.cat(recs)


def attacker_optimizer(cfg: AttackConfig, params) -> torch.optim.Optimizer:
    """The attacker's optimizer: ``cfg.optimizer`` at ``cfg.lr``, built by
    :func:`~pp_cluster.privacy.defense.build_optimizer` (Adam fused on CPU/CUDA: the dense
    attackers, ``fc`` and ``sparse_fc``, carry 10⁸ weights at the face CNN's pool1-pool3, and the
    unfused update was about half of their step on a CPU, 0.8 s of ~2 s per batch at pool3;
    fused 0.16 s). ``params`` are on the attacker's device already."""
    return build_optimizer(cfg.optimizer, params, cfg.lr, weight_decay=cfg.weight_decay)


def train_attacker(
    attacker: nn.Module, h_train: Tensor, x_train: Tensor, value_range: tuple[float, float], cfg: AttackConfig
) -> tuple[nn.Module, dict[str, float | int]]:
    """Fit ``attacker`` on (activation, image) pairs and keep its lowest-validation-MSE
    weights (the paper saves each attacker "when the MSE loss achieves its minimum").

    A seeded ``val_fraction`` of the pairs is held out. Returns the attacker (eval mode,
    best weights loaded) and {best_val_mse, best_epoch, epochs_run, val_mse (per epoch),
    seconds}. The best epoch's weights are copied only once a later epoch is about to
    change them, so a run whose last epoch is its best copies nothing.
    """
    if len(h_train) != len(x_train):
        raise ValueError(f"{len(h_train)} activations but {len(x_train)} images")
    if hasattr(attacker, "fit_closed_form"):  # a baseline (nets.decoders.MeanImage): no training
        t0 = time.perf_counter()
        attacker.to(cfg.device).fit_closed_form(h_train, x_train)
        return attacker.eval(), {
            "best_val_mse": None,
            "best_epoch": 0,
            "epochs_run": 0,
            "val_mse": [],
            "seconds": time.perf_counter() - t0,
            "amp": False,
        }
    n_val = max(1, round(len(x_train) * cfg.val_fraction))
    if len(x_train) - n_val < 1:
        raise ValueError(f"{len(x_train)} pairs leave nothing to train on after holding out {n_val}")
    t0 = time.perf_counter()
    device = torch.device(cfg.device)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # dropout inside the attacker
    perm = torch.randperm(len(x_train), generator=gen).to(device)
    use_amp, channels_last = precision.resolve_for(
        attacker, tuple(h_train.shape[1:]), device, cfg.amp, cfg.channels_last
    )
    fmt = torch.channels_last if channels_last and h_train.ndim == 4 else torch.contiguous_format
    h_all = h_train.to(device, torch.float32).contiguous(memory_format=fmt)
    x_all = x_train.to(device, torch.float32)
    h_val, x_val = h_all[perm[:n_val]], x_all[perm[:n_val]]
    train_idx = perm[n_val:]
    attacker.to(device, memory_format=fmt if channels_last else torch.contiguous_format)
    optimizer = attacker_optimizer(cfg, attacker.parameters())

    def snapshot() -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in attacker.state_dict().items()}

    # best_state None with best_epoch > 0: the best weights are the attacker's current ones.
    best_mse, best_epoch, best_state, curve = math.inf, 0, None, []
    for epoch in range(1, cfg.epochs + 1):
        if best_epoch == epoch - 1 and best_epoch > 0:
            best_state = snapshot()  # this epoch is about to move the best weights
        attacker.train()
        order = train_idx[torch.randperm(len(train_idx), generator=gen).to(device)]
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                rec = attacker(h_all[idx])
            loss = F.mse_loss(to_unit(rec.float(), value_range), to_unit(x_all[idx], value_range))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        rec_val = _reconstruct(attacker, h_val, value_range, 4 * cfg.batch_size, use_amp)
        val = float(F.mse_loss(to_unit(rec_val, value_range), to_unit(x_val, value_range)))
        curve.append(val)
        if val < best_mse:
            best_mse, best_epoch, best_state = val, epoch, None
        elif cfg.patience is not None and epoch - best_epoch >= cfg.patience:
            break
    if best_epoch == 0:
        raise FloatingPointError("the attacker's validation MSE was never finite; lower AttackConfig.lr")
    if best_state is not None:
        attacker.load_state_dict(best_state)
    attacker.eval()
    return attacker, {
        "best_val_mse": best_mse,
        "best_epoch": best_epoch,
        "epochs_run": len(curve),
        "val_mse": curve,
        "seconds": time.perf_counter() - t0,
        "amp": use_amp,
    }


def evaluate_attack(
    attacker: nn.Module,
    h_eval: Tensor,
    x_eval: Tensor,
    value_range: tuple[float, float],
    *,
    classifier: nn.Module | None = None,
    y_eval: Tensor | None = None,
    n_keep: int = 8,
    batch_size: int = 256,
    with_dpd: bool = True,
    amp: bool = False,
) -> AttackResult:
    """Score an attacker on held-out pairs: MSE, SSIM, PSNR, DPD and reprint accuracy, plus
    per-image SSIM and MSE (``ssim_images``, ``mse_images``).

    Reconstructions are clipped to ``value_range`` first. Reprint accuracy needs the
    classifier and labels and counts only images with a class (``y >= 0``; the
    disjoint attacker data has none), else it is None.
    """
    if len(h_eval) != len(x_eval) or len(x_eval) == 0:
        raise ValueError(f"need as many activations as images (>0), got {len(h_eval)} and {len(x_eval)}")
    recs = _reconstruct(attacker, h_eval.float(), value_range, batch_size, amp).cpu()
    x = x_eval.float().cpu()
    dpd_value, dpd_reason = dpd(x, recs, value_range, batch_size) if with_dpd else (None, "not requested")
    reprint = None
    if classifier is not None and y_eval is not None:
        labelled = y_eval.cpu() >= 0
        if bool(labelled.any()):
            reprint = reprint_accuracy(classifier, recs[labelled], y_eval.cpu()[labelled], batch_size)
    ssims, mses = ssim_images(x, recs, value_range), mse_images(x, recs, value_range)
    metrics = {
        "mse": float(mses.mean()),
        "ssim": float(ssims.mean()),
        # Per image, in evaluation order: a bootstrap over test images and paired
        # defended-vs-undefended differences resample these (same images, same order).
        "ssim_images": ssims.tolist(),
        "mse_images": mses.tolist(),
        "psnr": psnr(x, recs, value_range),
        "dpd": dpd_value,
        "dpd_reason": dpd_reason,
        "reprint_acc": reprint,
        "n_eval": len(x),
    }
    return AttackResult(
        metrics, to_unit(recs[:n_keep], value_range), to_unit(x[:n_keep], value_range).clamp(0, 1)
    )
