"""Continuous learning with a locked local partition (Sections IV-G and V-D(2)).

After defended training the local partition is deployed on users' devices and never
changes; the server may keep improving the remote partition on the activations it
receives. Locking means more than freezing the weights: the local partition stays in
eval mode, so its BatchNorm running statistics do not move either, and the activations
(hence the privacy the defense bought) are exactly those of the deployed model.

Fine-tuning *continues* training (V-D(2): "continue fine-tuning the remote layers"): it
runs at the learning rate the training schedule ended with, not at the recipe's initial
one, which would undo an annealed model's last steps, and on the batches training saw
(the recipe's augmentation and label smoothing). Under our fast recipe's one-cycle
schedule that rate is ~lr/2.5e5, so fine-tuning such a model barely moves it: that is what
continuing the schedule means; the paper's step schedules end at lr·γ^k.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pp_cluster.data.base import Split
from pp_cluster.privacy.defense import (
    TrainConfig,
    batches_per_epoch,
    build_optimizer,
    build_schedulers,
    crop_flip,
    evaluate_accuracy,
)


def final_lr(cfg: TrainConfig, n_train: int) -> float:
    """The classifier's learning rate at the last optimiser step of training with ``cfg`` on
    ``n_train`` images: ``cfg``'s schedule (the one :func:`train_defended` builds) replayed on
    a stand-in parameter. Both schedules end where they end whatever the batch count, so a
    model trained on shards gets the same value (one-cycle's last step is its floor)."""
    param = torch.zeros(1, requires_grad=True)  # no gradient: every step leaves it alone
    optimizer = build_optimizer(cfg.optimizer, [param], cfg.lr, cfg.momentum, cfg.weight_decay)
    per_epoch = batches_per_epoch(n_train, cfg.batch_size)
    schedulers, batch_scheduler = build_schedulers(cfg, [optimizer], per_epoch)
    lr = cfg.lr
    for _ in range(cfg.epochs):
        for _ in range(per_epoch if batch_scheduler is not None else 1):
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            if batch_scheduler is not None:
                batch_scheduler.step()
        for sch in schedulers:
            if sch is not batch_scheduler:
                sch.step()
    return lr


def finetune_remote(
    local: nn.Module,
    remote: nn.Module,
    train: Split,
    test: Split,
    cfg: TrainConfig,
    epochs: int,
    value_range: tuple[float, float],
) -> dict[str, Any]:
    """Fine-tune ``remote`` for ``epochs`` on ``train`` with ``local`` locked.

    ``cfg`` is the model's training recipe: its optimiser (fresh, at :func:`final_lr`, held
    constant), momentum, weight decay, label smoothing, augmentation (``crop_flip`` pads with
    ``value_range``'s low end, as training does), batch size, seed and device. Returns
    {finetune_acc_before, finetune_acc_after, finetune_lr, finetune_seconds}; the local
    partition's parameters and buffers are bit-identical afterwards (tested).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"fine-tuning epochs must be an integer >= 1, got {epochs!r}")
    t0 = time.perf_counter()
    device = torch.device(cfg.device)
    local.to(device).eval()
    remote.to(device)
    net = nn.Sequential(local, remote).eval()
    test_on_device = Split(test.x.to(device), test.y.to(device))
    before = evaluate_accuracy(net, test_on_device, device=device)

    for p in local.parameters():
        p.requires_grad_(False)
    lr = final_lr(cfg, len(train))
    optimizer = build_optimizer(cfg.optimizer, remote.parameters(), lr, cfg.momentum, cfg.weight_decay)
    order_gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    x_train, y_train = train.x.to(device), train.y.to(device)
    fill = float(value_range[0])
    try:
        for _ in range(epochs):
            remote.train()
            local.eval()  # every epoch: evaluating the whole net may have switched it back
            order = torch.randperm(len(train), generator=order_gen).to(device)
            for i in range(0, len(order), cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                if len(idx) < 2 < len(order):
                    break  # BatchNorm cannot train on a one-image batch
                x = x_train[idx]
                if cfg.augment == "crop_flip":
                    x = crop_flip(x, fill, torch.contiguous_format)
                with torch.no_grad():
                    h = local(x)
                loss = F.cross_entropy(remote(h), y_train[idx], label_smoothing=cfg.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    finally:
        for p in local.parameters():
            p.requires_grad_(True)
    after = evaluate_accuracy(net, test_on_device, device=device)
    return {
        "finetune_acc_before": before,
        "finetune_acc_after": after,
        "finetune_lr": lr,
        "finetune_seconds": time.perf_counter() - t0,
    }
