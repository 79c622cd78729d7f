"""Which fast numeric paths a device gets by default: bf16 autocast and channels-last.

CUDA always has them. A CPU has them where it has bf16 matrix instructions (Intel AMX-BF16 or
AVX512-BF16, which oneDNN uses for bf16 convolutions and matmuls): measured on the face CNN
at pool2 (batch 32, 2 threads, 2-core Xeon), a training step is 2.6x faster in bf16 +
channels-last than in fp32 NCHW, a defended step 2.8x (``benchmarks/precision.py``,
2026-12-01; dense modules are the exception, see ``resolve_for``). Without those instructions bf16 is
emulated and slower than fp32, so it stays off. ``PP_CLUSTER_CPU_BF16=0`` turns the CPU default
off (and ``=1`` forces it on); a ``TrainConfig``/``AttackConfig`` with ``amp``/``channels_last``
set explicitly wins over both. Losses, distances and metrics are computed in fp32 either way.
"""

from __future__ import annotations

import functools
import os

import torch

ENV = "PP_CLUSTER_CPU_BF16"


@functools.cache
def cpu_has_bf16_matmul() -> bool:
    """True when this CPU executes bf16 matrix products in hardware (AMX-BF16 or AVX512-BF16)."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch.cpu's own probes
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def fast_by_default(device: str | torch.device) -> bool:
    """Whether bf16 autocast + channels-last are on by default on ``device``."""
    kind = torch.device(device).type
    if kind == "cuda":
        return True
    if kind != "cpu":
        return False
    flag = os.environ.get(ENV, "").strip().lower()
    if flag in ("0", "false", "off", "no"):
        return False
    if flag in ("1", "true", "on", "yes"):
        return True
    return cpu_has_bf16_matmul()


def resolve(device: str | torch.device, amp: bool | None, channels_last: bool | None) -> tuple[bool, bool]:
    """(autocast, channels-last) as used: ``None`` follows :func:`fast_by_default`; autocast is
    bf16 on CUDA and CPU only."""
    default = fast_by_default(device)
    use_amp = default if amp is None else amp
    use_cl = default if channels_last is None else channels_last
    return bool(use_amp and torch.device(device).type in ("cuda", "cpu")), bool(use_cl)


# Above this share of matmul FLOPs a module is weight-bound on a CPU: autocast re-casts every
# weight to bf16 on every step, which for the dense attackers (10⁸ weights, each used by 64
# samples a step) cost more than bf16 saves: the fc attacker's step was 0.82x as fast in bf16
# as in fp32, the deconv attacker's 2.9x faster (benchmarks/precision.py, 2026-12-01).
DENSE_SHARE_LIMIT = 0.5


def resolve_for(
    module: torch.nn.Module,
    input_shape: tuple[int, ...],
    device: str | torch.device,
    amp: bool | None,
    channels_last: bool | None,
) -> tuple[bool, bool]:
    """:func:`resolve` for one module: on a CPU an unset ``amp`` stays off for a module whose
    FLOPs are mostly matrix products (``DENSE_SHARE_LIMIT``); set values are kept."""
    use_amp, use_cl = resolve(device, amp, channels_last)
    if amp is None and use_amp and torch.device(device).type == "cpu":
        from pp_cluster.nets.measure import dense_flop_share

        if dense_flop_share(module, tuple(input_shape)) > DENSE_SHARE_LIMIT:
            use_amp = False
    return use_amp, use_cl
