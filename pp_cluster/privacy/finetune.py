"""Continuous learning with a locked local partition (Sections IV-G and V-D(2)).

After defended training the local partition is deployed on users' devices and never
changes; the server may keep improving the remote partition on the activations it
receives. Locking means more than freezing the weights: the local partition stays in
eval mode, so its BatchNorm running statistics do not move either, and the activations
(hence the privacy the defense bought) are exactly those of the deployed model.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pp_cluster.data.base import Split
from pp_cluster.privacy.defense import TrainConfig, build_optimizer, evaluate_accuracy


def finetune_remote(
    local: nn.Module,
    remote: nn.Module,
    train: Split,
    test: Split,
    cfg: TrainConfig,
    epochs: int,
) -> dict[str, Any]:
    """Fine-tune ``remote`` for ``epochs`` on ``train`` with ``local`` locked.

    Uses the model's optimiser settings from ``cfg`` (optimizer, lr, momentum, weight decay,
    batch size, seed, device). Returns {finetune_acc_before, finetune_acc_after,
    finetune_seconds}; the local partition's parameters and buffers are bit-identical
    afterwards (tested).
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
    optimizer = build_optimizer(cfg.optimizer, remote.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
    order_gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    x_train, y_train = train.x.to(device), train.y.to(device)
    try:
        for _ in range(epochs):
            remote.train()
            local.eval()  # every epoch: evaluating the whole net may have switched it back
            order = torch.randperm(len(train), generator=order_gen).to(device)
            for i in range(0, len(order), cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                if len(idx) < 2 < len(order):
                    break  # BatchNorm cannot train on a one-image batch
                with torch.no_grad():
                    h = local(x_train[idx])
                loss = F.cross_entropy(remote(h), y_train[idx])
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
        "finetune_seconds": time.perf_counter() - t0,
    }
