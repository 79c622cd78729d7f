"""The attackers and defenders that Appendices B and C list, by name.

``deconv``, ``fc`` and ``sparse_fc`` (``decoders.py``) are rules that build a decoder for any
net and split point. The names here are the appendices' own networks, for the two nets and
image sizes the paper ran them on (the face CNN on 64×64 LFW, VGG-19-BN on 32×32 CIFAR-10)
and its three split points (pool1-pool3, Fig. 5); anything else is a ValueError that says
what is supported. The paper profiles train and attack with them. The appendices write the
deconv decoder out at pool2 only; at pool1 and pool3 it has one block fewer / more of the
same kind (``_paper_deconv``).

- ``paper_deconv``: App. B's / C's DECONV ATTACKER, also their defender.
- ``paper_fc``: FC ATTACKER, ``4096 → Relu → 12288 → Tanh`` (LFW), ``1024 → Relu → 3072`` (CIFAR).
- ``paper_sparse_fc``: SPARSE FC ATTACKER, the same with ``dropout (0.5)`` after the ReLU.

Where the appendices leave a choice open, the choice is written next to the code that makes it.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from pp_cluster.nets.classifiers import PartitionedNet
from pp_cluster.nets.decoders import _dense, register_decoder

# Sec. V-C/D and Fig. 5 partition at the outputs of the first three pools only.
PAPER_PARTITIONS = ("pool1", "pool2", "pool3")


class _Setting(NamedTuple):
    experiment: str
    image_shape: tuple[int, int, int]
    fc_hidden: int  # the FC attackers' hidden width
    # App. C's decoders end in BatchNorm / a Linear layer: no output activation. Its "we will also
    # clip them to match the normalized image pixel range" is the attack pipeline's clip_to_range,
    # applied to every reconstruction before it is scored (privacy/attack.py); training sees the
    # linear output, so no pixel loses its gradient to a clamp.
    linear_output: bool


_SETTINGS = {
    "face_cnn": _Setting("App. B (LFW)", (3, 64, 64), 4096, linear_output=False),
    "vgg19_bn": _Setting("App. C (CIFAR-10)", (3, 32, 32), 1024, linear_output=True),
}


def _setting(net: PartitionedNet, partition: str, out_act: nn.Module) -> _Setting:
    supported = "; ".join(
        f"{arch} on {'×'.join(map(str, t.image_shape))} images ({t.experiment})"
        for arch, t in _SETTINGS.items()
    )
    s = _SETTINGS.get(net.arch)
    if s is None or net.image_shape != s.image_shape:
        raise ValueError(
            f"the appendices' decoders (paper_*) are listed only for {supported}, not {net.arch} on "
            f"{'×'.join(map(str, net.image_shape))} images; deconv, fc and sparse_fc build for any net"
        )
    if partition not in PAPER_PARTITIONS:
        raise ValueError(
            f"the appendices' decoders (paper_*) are for the paper's partitions "
            f"{', '.join(PAPER_PARTITIONS)}, not {partition!r}; deconv, fc and sparse_fc build for any split"
        )
    if not s.linear_output and not isinstance(out_act, nn.Tanh):
        raise ValueError(f"{s.experiment}'s decoders end in tanh: they need images in (-1, 1)")
    return s


def _stages(net: PartitionedNet, partition: str) -> list[tuple[int, int]]:
    """(output channels, conv kernel) of each local stage, pool1 first."""
    out = []
    for name in net.partitions[: net.partitions.index(partition) + 1]:
        conv = [m for m in net.stages[name].modules() if isinstance(m, nn.Conv2d)][-1]
        out.append((conv.out_channels, conv.kernel_size[0]))
    return out


def _up(c_in: int, c_out: int, k: int) -> nn.ConvTranspose2d:
    """``deconv2d k×k (stride 2)``. The appendices give no padding; padding k//2 with
    output_padding 1 is the reading that doubles the side exactly (16 → 32 → 64 for LFW at pool2,
    8 → 16 → 32 for CIFAR), i.e. undoes the 2×2 pool, for the odd kernels (3, 5) they use."""
    return nn.ConvTranspose2d(c_in, c_out, k, stride=2, padding=k // 2, output_padding=1)


def _paper_deconv(
    net: PartitionedNet, partition: str, act_shape: tuple[int, ...], out_act: nn.Module
) -> nn.Sequential:
    """App. B / C's deconv decoder, one block per local stage, the last stage first.

    The appendices list it at pool2 only, as the local layers "reversed"; pool1 and pool3
    take one block fewer / more of the same kind, which is how the paper deploys its
    defenders at every partition ("the design of defender model depends on which layer").

    - App. B (LFW), pool2: ``deconv2d 3×3 (stride 2) → conv2d 3×3 → Relu → deconv2d 5×5
      (stride 2) → deconv2d 5×5 → tanh``. Per stage: a stride-2 deconv with the stage's
      kernel, then a same-size layer with that kernel; ReLU between blocks, tanh at the end.
      The same-size layer is a conv2d except the last, which is a deconv2d, as listed.
    - App. C (CIFAR), pool2: ``deconv2d 3×3 (stride 2) → BatchNorm → Relu → deconv2d 3×3
      (stride 2) → BatchNorm → Relu → deconv2d 3×3 → BatchNorm``. Per stage: a stride-2
      deconv → BatchNorm → ReLU; then a 3×3 deconv to the image channels → BatchNorm, the
      linear output (see ``_Setting.linear_output``).

    Channels (the appendices give none) walk the net's widths back: in App. B the stride-2
    deconv keeps a stage's channels (as its pool did) and the same-size layer returns to the
    stage's input channels; in App. C, with one layer per stage, the stride-2 deconv goes to
    the previous stage's width (pool1's block keeps its own), and the last deconv to the image.
    Same-size layers are padded k//2.
    """
    s = _setting(net, partition, out_act)
    stages, image_c = _stages(net, partition), net.image_shape[0]
    layers: list[nn.Module] = []
    for i in reversed(range(len(stages))):
        c, k = stages[i]
        if s.linear_output:
            prev = stages[i - 1][0] if i else c
            layers += [_up(c, prev, k), nn.BatchNorm2d(prev), nn.ReLU()]
        else:
            prev = stages[i - 1][0] if i else image_c
            same = nn.Conv2d if i else nn.ConvTranspose2d
            layers += [_up(c, c, k), same(c, prev, k, padding=k // 2), nn.ReLU() if i else out_act]
    if s.linear_output:
        layers += [nn.ConvTranspose2d(stages[0][0], image_c, 3, padding=1), nn.BatchNorm2d(image_c)]
    return nn.Sequential(*layers)


def _paper_dense(
    net: PartitionedNet,
    partition: str,
    act_shape: tuple[int, ...],
    out_act: nn.Module,
    *,
    dropout: float = 0.0,
) -> nn.Sequential:
    """App. B / C's (sparse) FC attacker: Flatten → Linear(hidden) → ReLU → [Dropout(0.5)] →
    Linear(image) → tanh (LFW) or nothing (CIFAR, linear) → the image's shape. The input
    width is the flattened activation at the split, the only thing the appendices say
    changes from one partition to another."""
    s = _setting(net, partition, out_act)
    head = nn.Identity() if s.linear_output else out_act
    return _dense(net, partition, act_shape, head, hidden=s.fc_hidden, dropout=dropout)


register_decoder("paper_deconv", _paper_deconv)
register_decoder("paper_fc", _paper_dense)
register_decoder("paper_sparse_fc", _paper_dense, fixed={"dropout": 0.5})
