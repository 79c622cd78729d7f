"""The decoder zoo: networks that map an activation H back to the image (H → x).

Defenders (trained during Algorithm 1) and attackers (trained on frozen activations)
are the same kind of network, so both come from this one registry
(:data:`DECODER_REGISTRY`, extended with :func:`register_decoder`): a name in ``DECODERS``
is what a sweep config says and what the ``attacks`` table records.
Every decoder maps ``B×activation_shape`` to ``B×image_shape`` and ends in the
activation that matches the data's value range (sigmoid for (0, 1), tanh for (-1, 1)).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from math import ceil, log2, prod
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

from pp_cluster.nets.classifiers import PartitionedNet, activation_shape, split
from pp_cluster.nets.inversion import WhiteBoxInversion
from pp_cluster.nets.noise import GaussianNoise
from pp_cluster.plugins import Registry

_OUTPUT_ACTIVATIONS: dict[tuple[float, float], type[nn.Module]] = {
    (0.0, 1.0): nn.Sigmoid,
    (-1.0, 1.0): nn.Tanh,
}


def _output_activation(value_range: tuple[float, float]) -> nn.Module:
    key = tuple(float(v) for v in value_range)
    if key not in _OUTPUT_ACTIVATIONS:
        raise ValueError(f"value_range must be one of {list(_OUTPUT_ACTIVATIONS)}, got {value_range!r}")
    return _OUTPUT_ACTIVATIONS[key]()


def clip_to_range(x: Tensor, value_range: tuple[float, float]) -> Tensor:
    """Clamp a reconstruction into the images' pixel range before scoring it (App. C), so a
    decoder is not rewarded or punished for values no image can take."""
    lo, hi = value_range
    if not lo < hi:
        raise ValueError(f"value_range must be (low, high) with low < high, got {value_range!r}")
    return x.clamp(lo, hi)


def _image_head(in_features: int, image_shape: tuple[int, ...], out_act: nn.Module) -> list[nn.Module]:
    return [nn.Linear(in_features, prod(image_shape)), out_act, nn.Unflatten(1, image_shape)]


# --- deconv: the local partition, reversed (App. B and C) ------------------------------

# Layers that change neither shape nor channel count: nothing to undo.
# Layers the mirrored decoder skips: they keep the shape (activation noise included).
_SHAPE_PRESERVING = (nn.ReLU, nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout, GaussianNoise)


def _reverse(module: nn.Module, channels: int, image_shape: tuple[int, ...], first: bool) -> nn.Module:
    """The layer that undoes ``module``'s change of shape (``channels`` = its output channels)."""
    if isinstance(module, nn.MaxPool2d):
        if module.kernel_size not in (2, (2, 2)) or module.stride not in (2, (2, 2)):
            raise ValueError(f"deconv can only undo 2×2 stride-2 pooling, got {module}")
        return nn.ConvTranspose2d(channels, channels, 3, stride=2, padding=1, output_padding=1)
    if isinstance(module, nn.Conv2d):
        if module.stride != (1, 1) or not all(k % 2 for k in module.kernel_size):
            raise ValueError(f"deconv can only undo stride-1 odd-kernel convolutions, got {module}")
        padding = tuple(k // 2 for k in module.kernel_size)
        return nn.ConvTranspose2d(
            module.out_channels, module.in_channels, module.kernel_size, padding=padding
        )
    if isinstance(module, nn.Linear):
        return nn.Linear(module.out_features, module.in_features)
    if isinstance(module, nn.Flatten) and first:
        return nn.Unflatten(1, image_shape)
    raise ValueError(f"deconv cannot reverse {module} (only conv, 2×2 pool, linear, input flatten)")


def _deconv(
    net: PartitionedNet, partition: str, act_shape: tuple[int, ...], out_act: nn.Module
) -> nn.Sequential:
    """Walk the local layers backwards: a 2×2 pool becomes a 3×3 stride-2 transposed conv
    (×2 upsampling), a k×k conv a k×k transposed conv back to its input channels, a linear
    layer a linear layer back to its input width; BatchNorm → ReLU between them (App. C)."""
    local, _ = split(net, partition)
    leaves = [m for m in local.modules() if not list(m.children())]
    steps, channels = [], act_shape[0]
    for i in reversed(range(len(leaves))):
        if isinstance(leaves[i], _SHAPE_PRESERVING):
            continue
        steps.append(_reverse(leaves[i], channels, net.image_shape, first=i == 0))
        channels = getattr(steps[-1], "out_channels", channels)
    weighted = [s for s in steps if not isinstance(s, nn.Unflatten)]
    layers: list[nn.Module] = []
    for step in steps:
        layers.append(step)
        if step in weighted[:-1]:
            if isinstance(step, nn.Linear):
                layers += [nn.BatchNorm1d(step.out_features), nn.ReLU()]
            else:
                layers += [nn.BatchNorm2d(step.out_channels), nn.ReLU()]
    return nn.Sequential(*layers, out_act)


# --- fully connected decoders (App. A attackers, App. B/C FC and sparse FC) -----------


def _fc_hidden(image_shape: tuple[int, ...]) -> int:
    """One third of the image size, rounded to a multiple of 64: reproduces the paper's
    4096 for 64×64 RGB (App. B, 12288 outputs) and 1024 for CIFAR (App. C, 3072 outputs)."""
    return max(64, 64 * round(prod(image_shape) / 3 / 64))


def _dense(
    net: PartitionedNet,
    partition: str,
    act_shape: tuple[int, ...],
    out_act: nn.Module,
    *,
    hidden: int | None = None,
    hidden_act: type[nn.Module] = nn.ReLU,
    dropout: float = 0.0,
) -> nn.Sequential:
    """Flatten → Linear(hidden) → act → [Dropout] → Linear(image) → output activation.
    ``hidden=None`` sizes the hidden layer by ``_fc_hidden``; ``hidden=0`` drops it."""
    hidden = _fc_hidden(net.image_shape) if hidden is None else hidden
    width, layers = prod(act_shape), [nn.Flatten()]
    if hidden:
        layers += [nn.Linear(width, hidden), hidden_act(), *([nn.Dropout(dropout)] if dropout else [])]
        width = hidden
    return nn.Sequential(*layers, *_image_head(width, net.image_shape, out_act))


# Attacker 7's "1-D conv" is unspecified: 4 filters of width 5, stride 2, slide over the
# activation vector, so the 784-way layer after it sees 4·d/2 = 2d features and has about
# the parameter count of attacker 1's two 800-wide layers.
_CONV1D_CHANNELS, _CONV1D_KERNEL, _CONV1D_STRIDE = 4, 5, 2


def _conv1d(
    net: PartitionedNet, partition: str, act_shape: tuple[int, ...], out_act: nn.Module
) -> nn.Sequential:
    """App. A attacker 7: 1-D conv → ReLU → Linear(image) → output activation."""
    d, pad = prod(act_shape), _CONV1D_KERNEL // 2
    length = (d + 2 * pad - _CONV1D_KERNEL) // _CONV1D_STRIDE + 1
    return nn.Sequential(
        nn.Flatten(),
        nn.Unflatten(1, (1, d)),
        nn.Conv1d(1, _CONV1D_CHANNELS, _CONV1D_KERNEL, stride=_CONV1D_STRIDE, padding=pad),
        nn.ReLU(),
        nn.Flatten(),
        *_image_head(_CONV1D_CHANNELS * length, net.image_shape, out_act),
    )


# --- resdec: an adaptive attacker from outside the defenders' families ----------------

_RESDEC_MIN_WIDTH = 16


def _resdec(
    net: PartitionedNet, partition: str, act_shape: tuple[int, ...], out_act: nn.Module, *, width: int = 64
) -> nn.Sequential:
    """Stem to a ``width``-channel grid, a residual block, then per ×2 step: nearest
    upsample → 3×3 conv (halving channels, at least 16) → residual block; 3×3 conv to the
    image. Neither a reversed encoder nor an MLP, so defenders trained against those
    families do not get to shape what it exploits. A vector activation (``mnist_mlp``) has
    no grid: a linear stem starts one at a quarter of the image side."""
    C, H, W = net.image_shape
    if len(act_shape) == 3:
        h, w = act_shape[1:]
        stem = [nn.Conv2d(act_shape[0], width, 1, bias=False)]
    else:
        h, w = ceil(H / 4), ceil(W / 4)
        stem = [
            nn.Flatten(),
            nn.Linear(prod(act_shape), width * h * w, bias=False),
            nn.Unflatten(1, (width, h, w)),
        ]
    layers = [*stem, nn.BatchNorm2d(width), nn.ReLU(), BasicBlock(width, width)]
    ch = width
    for halvings in reversed(range(ceil(log2(max(H / h, W / w, 1))))):
        out = max(_RESDEC_MIN_WIDTH, ch // 2)
        layers += [
            nn.Upsample(size=(ceil(H / 2**halvings), ceil(W / 2**halvings)), mode="nearest"),
            nn.Conv2d(ch, out, 3, padding=1, bias=False),
            nn.BatchNorm2d(out),
            nn.ReLU(),
            BasicBlock(out, out),
        ]
        ch = out
    return nn.Sequential(*layers, nn.Conv2d(ch, C, 3, padding=1), out_act)


# --- mean_image: the no-information baseline ------------------------------------------


class MeanImage(nn.Module):
    """Ignores H and outputs the mean of the images it was fitted on: what an attacker knows
    without looking at the activations. Every attack table carries it, so a reader sees how
    far above chance each real attacker is (as VFLAIR reports). It is fitted in closed form
    (:meth:`fit_closed_form`), never by gradient steps, and is never "the best attacker"."""

    def __init__(self, image_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(image_shape))

    def fit_closed_form(self, h: Tensor, x: Tensor) -> None:
        self.mean.copy_(x.float().mean(dim=0).to(self.mean.device))

    def forward(self, h: Tensor) -> Tensor:
        return self.mean.unsqueeze(0).expand(h.shape[0], *self.mean.shape)


def _mean_image(
    net: PartitionedNet, partition: str, act_shape: tuple[int, ...], out_act: nn.Module
) -> nn.Module:
    return MeanImage(net.image_shape)


def _rmle(
    net: PartitionedNet, partition: str, act_shape: tuple[int, ...], out_act: nn.Module, **options
) -> nn.Module:
    value_range = next(r for r, act in _OUTPUT_ACTIVATIONS.items() if isinstance(out_act, act))
    return WhiteBoxInversion(split(net, partition)[0], net.image_shape, value_range, **options)


# --- the registry ---------------------------------------------------------------------


class Decoder(NamedTuple):
    builder: Callable[..., nn.Module]  # (net, partition, activation_shape, out_act, **fixed, **options)
    fixed: dict[str, object]
    options: tuple[str, ...] = ()  # keyword options a caller may set
    mnist_only: bool = False
    baseline: bool = False  # a no-information reference: an attacker only, never a defender or "the best"
    white_box: bool = False  # reads the local partition's weights: an attacker only, never a defender


DECODER_REGISTRY: Registry[Decoder] = Registry("decoder")


def register_decoder(
    name: str,
    builder: Callable[..., nn.Module] | None = None,
    *,
    fixed: dict[str, object] | None = None,
    options: tuple[str, ...] = (),
    mnist_only: bool = False,
    baseline: bool = False,
    white_box: bool = False,
):
    """Register decoder ``name``: ``builder(net, partition, act_shape, out_act, **fixed,
    **options) -> nn.Module`` maps ``B×act_shape`` activations to ``B×net.image_shape``
    images and ends in ``out_act`` (the data's value range). ``options`` are the keywords a
    caller may pass to :func:`build_decoder`; ``baseline`` marks an attacker that reads
    nothing from H (never a defender, never the worst case); ``white_box`` one that needs the
    local partition's weights rather than training pairs (never a defender). Without
    ``builder``, a decorator.
    """

    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        entry = Decoder(fn, dict(fixed or {}), tuple(options), mnist_only, baseline, white_box)
        DECODER_REGISTRY.register(name, entry)
        return fn

    return add if builder is None else add(builder)


register_decoder("deconv", _deconv)
register_decoder("fc", _dense, options=("hidden",))
register_decoder("sparse_fc", _dense, fixed={"dropout": 0.5}, options=("hidden",))
register_decoder("resdec", _resdec, options=("width",))
register_decoder("mean_image", _mean_image, baseline=True)
register_decoder("rmle", _rmle, options=("steps", "lr", "tv"), white_box=True)
# App. A writes "800 → Relu → 800 → Sigmoid" for Linear(d, 800) → ReLU → Linear(800, image)
# → Sigmoid; the last number is the 28×28 image size, taken here from the net's image_shape.
_APPENDIX_A = {
    "mnist_a1": {"hidden": 800, "hidden_act": nn.ReLU},
    "mnist_a2": {"hidden": 800, "hidden_act": nn.ReLU, "dropout": 0.1},
    "mnist_a3": {"hidden": 800, "hidden_act": nn.Tanh},
    "mnist_a4": {"hidden": 800, "hidden_act": nn.Sigmoid},
    "mnist_a5": {"hidden": 512, "hidden_act": nn.ReLU},
    "mnist_a6": {"hidden": 1024, "hidden_act": nn.ReLU},
    "mnist_a8": {"hidden": 0},
}
for _name, _fixed in _APPENDIX_A.items():
    register_decoder(_name, _dense, fixed=_fixed, mnist_only=True)
register_decoder("mnist_a7", _conv1d, mnist_only=True)
# The paper's four defenders are its four best attackers of the single-defender runs.
for _i, _name in enumerate(("mnist_a3", "mnist_a4", "mnist_a7", "mnist_a8"), start=1):
    DECODER_REGISTRY.register(f"mnist_d{_i}", DECODER_REGISTRY[_name])


def _zoo_order(name: str) -> tuple[bool, str]:
    return name.startswith("mnist_"), name  # the paper's zoo first, Appendix A's MNIST networks last


# Live views of the registry.
DECODERS = DECODER_REGISTRY.names(key=_zoo_order)
# Attackers that read nothing from H: reported beside the others, excluded from every worst case.
BASELINES = DECODER_REGISTRY.names(where=lambda d: d.baseline, key=_zoo_order)
# Attackers that invert the local partition's weights (no decoder to train): never defenders.
WHITE_BOX = DECODER_REGISTRY.names(where=lambda d: d.white_box, key=_zoo_order)
# Appendix A's MNIST networks: only for ``mnist_mlp``.
MNIST_ONLY = DECODER_REGISTRY.names(where=lambda d: d.mnist_only, key=_zoo_order)


def width_of(name: str, net: PartitionedNet) -> tuple[str, int] | None:
    """(option, default value) of the option that sets decoder ``name``'s width — ``width``
    (channels) or ``hidden`` (a dense layer) — or None for a fixed architecture."""
    entry = DECODER_REGISTRY[name]
    option = next((o for o in ("width", "hidden") if o in entry.options), None)
    if option is None:
        return None
    param = inspect.signature(entry.builder).parameters.get(option)
    default = entry.fixed.get(option, None if param is None else param.default)
    if default is None and option == "hidden":
        default = _fc_hidden(net.image_shape)
    if not isinstance(default, int):
        return None  # a plugin's width without an integer default: not searched
    return option, default


def build_decoder(
    name: str, net: PartitionedNet, partition: str, value_range: tuple[float, float], **options: object
) -> nn.Module:
    """A fresh decoder ``name`` from ``net``'s activation at ``partition`` to its images.

    ``options``: ``hidden`` for ``fc``/``sparse_fc`` (default: ``_fc_hidden``), ``width``
    for ``resdec``; the paper's fixed architectures take none.
    """
    if name not in DECODER_REGISTRY:
        raise ValueError(f"unknown decoder {name!r}; valid: {', '.join(DECODERS)}")
    entry = DECODER_REGISTRY[name]
    if entry.mnist_only and net.arch != "mnist_mlp":
        raise ValueError(
            f"decoder {name!r} is an Appendix A MNIST network, only for mnist_mlp, not {net.arch}"
        )
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for decoder {name!r}; valid: {list(entry.options)}")
    out_act = _output_activation(value_range)
    return entry.builder(net, partition, activation_shape(net, partition), out_act, **entry.fixed, **options)
