"""The paper's partitionable classifiers and their split points (Sections V-B/C/D, App. A-C).

A classifier is an ordered list of named *stages*; a partition point is the name of the
stage after which the network is cut into a local part (on the user's device, producing
the activation H) and a remote part. Splitting shares modules, so whatever trains the
whole net trains both halves. Every arch, built in or a plugin's, is registered with
:func:`register_net` in :data:`NET_REGISTRY`.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable, Sequence
from math import prod
from typing import NamedTuple, TypeVar

from torch import Tensor, nn
from torchvision.models.vgg import cfgs as _VGG_CFGS

from pp_cluster.nets.measure import output_shape
from pp_cluster.plugins import Registry

# What an arch builder returns: (stages, partitions, default partition).
_Spec = tuple[list[tuple[str, nn.Module]], tuple[str, ...], str]
_B = TypeVar("_B", bound=Callable[..., _Spec])


class Arch(NamedTuple):
    builder: Callable[..., _Spec]  # (image_shape, num_classes, *, size knobs) -> _Spec
    input_shape: tuple[int, int, int]  # an image shape it accepts: where a sweep's split points are checked


NET_REGISTRY: Registry[Arch] = Registry("network")
ARCHS = NET_REGISTRY.names()  # live: what build_net and SweepSpec.arch accept


def register_net(name: str, *, input_shape: tuple[int, int, int]) -> Callable[[_B], _B]:
    """Decorator registering ``builder(image_shape, num_classes, *, knobs) -> (stages,
    partitions, default_partition)`` as network ``name``.

    ``stages`` is a list of ``(stage name, module)`` run in order; ``partitions`` the inner
    stage names a split may follow; the keyword-only ``knobs`` are the arch's
    ``arch_options``. ``input_shape`` (C, H, W) is an image shape the builder accepts: the
    split points are validated on a net built for it, on the meta device.
    """

    def add(builder: _B) -> _B:
        NET_REGISTRY.register(name, Arch(builder, tuple(int(d) for d in input_shape)))
        return builder

    return add


class PartitionedNet(nn.Module):
    """A classifier as named stages run in order; ``partitions`` are the stage names after
    which a split is allowed; ``default_partition`` is the one the paper deploys or works
    through in its appendix (``fc2`` for MNIST, ``pool2`` for the CNNs)."""

    def __init__(
        self,
        arch: str,
        image_shape: tuple[int, int, int],
        num_classes: int,
        stages: Sequence[tuple[str, nn.Module]],
        partitions: tuple[str, ...],
        default_partition: str,
    ) -> None:
        super().__init__()
        names = [name for name, _ in stages]
        inner = names[:-1]
        if list(partitions) != [n for n in inner if n in partitions]:
            raise ValueError(f"partitions {partitions} must be inner stage names of {names}, in order")
        if default_partition not in partitions:
            raise ValueError(f"default_partition {default_partition!r} is not one of {partitions}")
        self.arch = arch
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.partitions = tuple(partitions)
        self.default_partition = default_partition
        self.stages = nn.ModuleDict(stages)

    def forward(self, x: Tensor) -> Tensor:
        for stage in self.stages.values():
            x = stage(x)
        return x


def _check_partition(net: PartitionedNet, partition: str) -> int:
    if partition not in net.partitions:
        raise ValueError(
            f"unknown partition {partition!r} for {net.arch}; valid: {', '.join(net.partitions)}"
        )
    return list(net.stages).index(partition)


def split(net: PartitionedNet, partition: str) -> tuple[nn.Sequential, nn.Sequential]:
    """(local, remote) halves of ``net`` cut after stage ``partition``.

    Both hold the net's own module objects (no copies), keyed by stage name, so
    ``remote(local(x)) == net(x)`` and training the net trains the halves.
    """
    cut = _check_partition(net, partition) + 1
    stages = list(net.stages.items())
    return nn.Sequential(OrderedDict(stages[:cut])), nn.Sequential(OrderedDict(stages[cut:]))


def activation_shape(net: PartitionedNet, partition: str) -> tuple[int, ...]:
    """Per-sample shape of the activation H at ``partition``, computed on the meta device."""
    local, _ = split(net, partition)
    return output_shape(local, net.image_shape)


def _conv_stage(in_ch: int, out_ch: int, kernels: Sequence[int], bn_first: bool) -> nn.Sequential:
    """Same-padded convolutions then a 2×2 max-pool: one VGG-style block.

    ``bn_first`` picks conv→BN→ReLU (torchvision's ``vgg19_bn``) over conv→ReLU→BN (App. B).
    """
    layers: list[nn.Module] = []
    for k in kernels:
        norm, act = nn.BatchNorm2d(out_ch), nn.ReLU()
        layers += [nn.Conv2d(in_ch, out_ch, k, padding="same"), *((norm, act) if bn_first else (act, norm))]
        in_ch = out_ch
    layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def _require_divisible(arch: str, image_shape: tuple[int, int, int], factor: int) -> None:
    if image_shape[1] % factor or image_shape[2] % factor:
        raise ValueError(f"{arch} needs H and W divisible by {factor}, got image_shape {image_shape}")


@register_net("mnist_mlp", input_shape=(1, 28, 28))
def _mnist_mlp(
    image_shape: tuple[int, int, int], num_classes: int, *, hidden: int = 800, dropout: float = 0.1
) -> _Spec:
    """Sec. V-B: three ReLU layers of ``hidden`` units with dropout, then the classifier.
    The image is flattened inside ``fc1`` so the local part takes N×C×H×W like every arch."""
    layers = []
    in_features = prod(image_shape)
    for name in ("fc1", "fc2", "fc3"):
        block = [nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout)]
        layers.append((name, nn.Sequential(*([nn.Flatten()] if name == "fc1" else []), *block)))
        in_features = hidden
    layers.append(("classifier", nn.Linear(hidden, num_classes)))
    return layers, ("fc1", "fc2", "fc3"), "fc2"


@register_net("face_cnn", input_shape=(3, 64, 64))
def _face_cnn(
    image_shape: tuple[int, int, int],
    num_classes: int,
    *,
    widths: Sequence[int] = (32, 64, 128, 256),
    fc: int = 512,
    dropout: float = 0.5,
) -> _Spec:
    """App. B ``photo-to-id``: two 5×5 convs then three pairs of 3×3 convs, a 2×2 max-pool
    after each pair, then FC-dropout-FC-dropout-classifier (ReLU after each hidden FC).

    The paper gives no channel widths; the default doubles per pool from 32 (the usual VGG
    progression), small enough to train on 2,370 64×64 faces without a GPU.
    """
    _require_divisible("face_cnn", image_shape, 16)
    if len(widths) != 4 or min(widths) < 1:
        raise ValueError(f"face_cnn widths must be 4 positive ints, got {widths!r}")
    layers, in_ch = [], image_shape[0]
    for i, (out_ch, k) in enumerate(zip(widths, (5, 3, 3, 3)), start=1):
        layers.append((f"pool{i}", _conv_stage(in_ch, out_ch, (k, k), bn_first=False)))
        in_ch = out_ch
    flat = widths[-1] * (image_shape[1] // 16) * (image_shape[2] // 16)
    head = nn.Sequential(
        nn.Flatten(),
        nn.Linear(flat, fc),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(fc, fc),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(fc, num_classes),
    )
    layers.append(("classifier", head))
    return layers, ("pool1", "pool2", "pool3", "pool4"), "pool2"


@register_net("vgg19_bn", input_shape=(3, 32, 32))
def _vgg19_bn(image_shape: tuple[int, int, int], num_classes: int, *, width_mult: float = 1.0) -> _Spec:
    """Sec. V-D / App. C: torchvision's VGG-19 configuration ("E") with BatchNorm, one stage
    per pool, and the CIFAR classifier (one Linear from the last pool, 512 → classes at
    32×32). ``width_mult`` scales every width so tests and CPU runs can shrink it."""
    _require_divisible("vgg19_bn", image_shape, 32)
    if width_mult <= 0:
        raise ValueError(f"vgg19_bn width_mult must be > 0, got {width_mult}")
    layers, in_ch, block = [], image_shape[0], []
    for v in _VGG_CFGS["E"]:
        if v != "M":
            block.append(max(1, int(v * width_mult)))
            continue
        layers.append(
            (f"pool{len(layers) + 1}", _conv_stage(in_ch, block[0], (3,) * len(block), bn_first=True))
        )
        in_ch, block = block[0], []
    flat = in_ch * (image_shape[1] // 32) * (image_shape[2] // 32)
    layers.append(("classifier", nn.Sequential(nn.Flatten(), nn.Linear(flat, num_classes))))
    return layers, ("pool1", "pool2", "pool3", "pool4"), "pool2"


def build_net(arch: str, image_shape: tuple[int, int, int], num_classes: int, **options) -> PartitionedNet:
    """A fresh ``arch`` classifier for ``image_shape`` (C, H, W) images and ``num_classes``.

    ``options`` are the arch's size knobs: ``hidden``/``dropout`` (mnist_mlp),
    ``widths``/``fc``/``dropout`` (face_cnn), ``width_mult`` (vgg19_bn); a registered arch's
    are its builder's keyword-only parameters.
    """
    if arch not in NET_REGISTRY:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(ARCHS)}")
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(f"image_shape must be (C, H, W) positive ints, got {image_shape!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    builder = NET_REGISTRY[arch].builder
    params = inspect.signature(builder).parameters.values()
    known = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
    if set(options) - set(known):
        raise ValueError(f"unknown option(s) {sorted(set(options) - set(known))} for {arch}; valid: {known}")
    image_shape = tuple(int(d) for d in image_shape)
    stages, partitions, default = builder(image_shape, num_classes, **options)
    return PartitionedNet(arch, image_shape, num_classes, stages, partitions, default)
