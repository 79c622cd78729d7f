"""Shape, size and cost of a module, measured without real data or memory.

Everything runs the module on the ``meta`` device through ``torch.func.functional_call``
with meta stand-ins for its parameters and buffers: no arithmetic happens, nothing is
allocated, and the module itself (its device, mode and running statistics) is untouched.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

# Two samples, not one: BatchNorm in training mode refuses a batch of one value per channel.
_PROBE_BATCH = 2


def _meta_forward(module: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    if not input_shape or any(int(d) < 1 for d in input_shape):
        raise ValueError(f"input_shape must be a non-empty tuple of positive ints, got {input_shape!r}")
    state = {
        name: torch.empty_like(t, device="meta")
        for name, t in [*module.named_parameters(), *module.named_buffers()]
    }
    x = torch.empty((_PROBE_BATCH, *input_shape), device="meta")
    return functional_call(module, state, (x,))


def output_shape(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Per-sample output shape of ``module`` for per-sample ``input_shape``."""
    return tuple(_meta_forward(module, input_shape).shape[1:])


def param_count(module: nn.Module) -> int:
    """Number of parameter elements (trainable or not) of ``module``."""
    return sum(p.numel() for p in module.parameters())


def flops_per_sample(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Forward FLOPs for one sample as ``FlopCounterMode`` counts them (2 per multiply-add
    of matmuls and convolutions; element-wise ops such as ReLU and BatchNorm are free)."""
    with FlopCounterMode(display=False) as counter:
        _meta_forward(module, input_shape)
    return counter.get_total_flops() // _PROBE_BATCH


def dense_flop_share(module: nn.Module, input_shape: tuple[int, ...]) -> float:
    """Share of ``module``'s forward FLOPs spent in matrix products (Linear layers) rather than
    convolutions: 1.0 for a fully connected decoder, near 0 for a convolutional one."""
    with FlopCounterMode(display=False) as counter:
        _meta_forward(module, input_shape)
    ops = counter.get_flop_counts().get("Global", {})
    total = sum(ops.values())
    dense = sum(v for op, v in ops.items() if "mm" in str(op))
    return dense / total if total else 0.0
