"""The appendices' decoders by name (pp_cluster.nets.paper_decoders): each built network is
compared with Appendix B's / C's listing, written out here, and run on the nets' real
activations; the combinations the appendices do not cover are refused."""

from __future__ import annotations

import re
from math import prod

import pytest
import torch
from torch import nn

from pp_cluster.nets import (
    BASELINES,
    DECODERS,
    activation_shape,
    build_decoder,
    build_net,
    output_shape,
    split,
)
from pp_cluster.profiles import PROFILES

NAMES = ("paper_deconv", "paper_fc", "paper_sparse_fc")
PARTITIONS = ("pool1", "pool2", "pool3")
NETS = {  # arch: (image shape, classes) of the paper's experiment
    "face_cnn": ((3, 64, 64), 34),
    "vgg19_bn": ((3, 32, 32), 10),
}

# The appendices in their own notation. pool2 is quoted verbatim (App. B and C give the
# decoders at pool2 only); pool1 and pool3 are the same blocks one stage fewer / more.
APPENDIX = {
    ("face_cnn", "paper_deconv", "pool1"): "deconv2d 5×5 (stride 2) → deconv2d 5×5 → tanh",
    ("face_cnn", "paper_deconv", "pool2"): (
        "deconv2d 3×3 (stride 2) → conv2d 3×3 → Relu → deconv2d 5×5 (stride 2) → deconv2d 5×5 → tanh"
    ),
    ("face_cnn", "paper_deconv", "pool3"): (
        "deconv2d 3×3 (stride 2) → conv2d 3×3 → Relu → deconv2d 3×3 (stride 2) → conv2d 3×3 → Relu"
        " → deconv2d 5×5 (stride 2) → deconv2d 5×5 → tanh"
    ),
    ("face_cnn", "paper_fc", None): "4096 → Relu → 12288 → Tanh",
    ("face_cnn", "paper_sparse_fc", None): "4096 → Relu → dropout (0.5) → 12288 → Tanh",
    ("vgg19_bn", "paper_deconv", "pool1"): (
        "deconv2d 3×3 (stride 2) → BatchNorm → Relu → deconv2d 3×3 → BatchNorm"
    ),
    ("vgg19_bn", "paper_deconv", "pool2"): (
        "deconv2d 3×3 (stride 2) → BatchNorm → Relu → deconv2d 3×3 (stride 2) → BatchNorm → Relu"
        " → deconv2d 3×3 → BatchNorm"
    ),
    ("vgg19_bn", "paper_deconv", "pool3"): (
        "deconv2d 3×3 (stride 2) → BatchNorm → Relu → deconv2d 3×3 (stride 2) → BatchNorm → Relu"
        " → deconv2d 3×3 (stride 2) → BatchNorm → Relu → deconv2d 3×3 → BatchNorm"
    ),
    ("vgg19_bn", "paper_fc", None): "1024 → Relu → 3072",
    ("vgg19_bn", "paper_sparse_fc", None): "1024 → Relu → dropout (0.5) → 3072",
}

# Channels of each conv (in, out) and BatchNorm (features), in order, at the nets' default
# widths (face_cnn 32/64/128, vgg19_bn 64/128/256 at pool1-pool3): the appendices give none;
# the decoder walks the widths back (paper_decoders._paper_deconv).
CHANNELS = {
    ("face_cnn", "pool1"): [(32, 32), (32, 3)],
    ("face_cnn", "pool2"): [(64, 64), (64, 32), (32, 32), (32, 3)],
    ("face_cnn", "pool3"): [(128, 128), (128, 64), (64, 64), (64, 32), (32, 32), (32, 3)],
    ("vgg19_bn", "pool1"): [(64, 64), 64, (64, 3), 3],
    ("vgg19_bn", "pool2"): [(128, 64), 64, (64, 64), 64, (64, 3), 3],
    ("vgg19_bn", "pool3"): [(256, 128), 128, (128, 64), 64, (64, 64), 64, (64, 3), 3],
}


def parse(listing: str) -> list[tuple]:
    """The appendix notation as (layer, kernel/width/p, stride) tuples."""
    out = []
    for token in listing.split(" → "):
        if m := re.fullmatch(r"(de)?conv2d (\d)×\2(?: \(stride (\d)\))?", token):
            out.append(("ConvTranspose2d" if m[1] else "Conv2d", int(m[2]), int(m[3] or 1)))
        elif m := re.fullmatch(r"dropout \(([\d.]+)\)", token):
            out.append(("Dropout", float(m[1])))
        elif token.isdigit():
            out.append(("Linear", int(token)))
        else:
            out.append(({"Relu": "ReLU", "tanh": "Tanh", "Tanh": "Tanh", "BatchNorm": "BatchNorm2d"}[token],))
    return out


def layers(decoder: nn.Module) -> list[tuple]:
    """The built decoder in the same terms; Flatten/Unflatten (shape only) and Identity (the
    linear output) are not layers the appendices write."""
    out = []
    for m in decoder:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            out.append((type(m).__name__, m.kernel_size[0], m.stride[0]))
            assert m.kernel_size[0] == m.kernel_size[1] and m.stride[0] == m.stride[1]
        elif isinstance(m, nn.Linear):
            out.append(("Linear", m.out_features))
        elif isinstance(m, nn.Dropout):
            out.append(("Dropout", m.p))
        elif not isinstance(m, (nn.Flatten, nn.Unflatten, nn.Identity)):
            out.append((type(m).__name__,))
    return out


def channels(decoder: nn.Module) -> list:
    out = []
    for m in decoder:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            out.append((m.in_channels, m.out_channels))
        elif isinstance(m, nn.BatchNorm2d):
            out.append(m.num_features)
    return out


def paper_net(arch: str, **options):
    torch.manual_seed(0)
    image_shape, classes = NETS[arch]
    return build_net(arch, image_shape, classes, **options)


CASES = [(arch, name, p) for arch in NETS for name in NAMES for p in PARTITIONS]


@pytest.mark.parametrize(("arch", "name", "partition"), CASES)
def test_each_decoder_is_the_appendix_listing(arch, name, partition):
    with torch.device("meta"):  # structure only: the FC attackers hold up to 1.3·10^8 weights
        net = paper_net(arch)
        decoder = build_decoder(name, net, partition, (-1.0, 1.0))
    listing = APPENDIX[(arch, name, partition if name == "paper_deconv" else None)]
    assert layers(decoder) == parse(listing)
    if name == "paper_deconv":
        assert channels(decoder) == CHANNELS[(arch, partition)]
    else:
        first = next(m for m in decoder if isinstance(m, nn.Linear))
        assert first.in_features == prod(activation_shape(net, partition))
    assert output_shape(decoder, activation_shape(net, partition)) == net.image_shape


def test_the_parser_reads_the_notation():
    """So that a wrong reading of the appendix cannot make both sides agree by accident."""
    assert parse("deconv2d 3×3 (stride 2) → conv2d 5×5 → BatchNorm → Relu → tanh") == [
        ("ConvTranspose2d", 3, 2),
        ("Conv2d", 5, 1),
        ("BatchNorm2d",),
        ("ReLU",),
        ("Tanh",),
    ]
    assert parse("4096 → Relu → dropout (0.5) → 12288 → Tanh") == [
        ("Linear", 4096),
        ("ReLU",),
        ("Dropout", 0.5),
        ("Linear", 12288),
        ("Tanh",),
    ]


# Narrow widths keep the FC attackers small; the image shapes (what the paper fixes) stay.
NARROW = {"face_cnn": {"widths": (4, 8, 16, 32), "fc": 16}, "vgg19_bn": {"width_mult": 1 / 16}}


@pytest.mark.parametrize(("arch", "name", "partition"), CASES)
def test_decoders_map_real_activations_to_images(arch, name, partition):
    net = paper_net(arch, **NARROW[arch])
    local, _ = split(net, partition)
    x = torch.rand(3, *net.image_shape) * 2 - 1
    with torch.no_grad():
        for _ in range(2):  # move the BatchNorm running statistics off the identity
            net(x)
        h = local.eval()(x)
    decoder = build_decoder(name, net, partition, (-1.0, 1.0))
    out = decoder(h)
    assert out.shape == x.shape
    out.square().mean().backward()
    assert all(p.grad is not None for p in decoder.parameters())
    if arch == "face_cnn":  # App. B: tanh, the images' range
        assert isinstance(decoder[-1 if name == "paper_deconv" else -2], nn.Tanh)
        assert out.abs().max() <= 1
    else:  # App. C: a linear output, clipped when scored (privacy/attack.py)
        last = decoder[-1] if name == "paper_deconv" else decoder[-3]
        assert isinstance(last, nn.BatchNorm2d if name == "paper_deconv" else nn.Linear)
        assert not any(isinstance(m, (nn.Tanh, nn.Sigmoid)) for m in decoder)


def test_unsupported_nets_images_and_partitions_are_refused():
    face, cifar = paper_net("face_cnn", **NARROW["face_cnn"]), paper_net("vgg19_bn", **NARROW["vgg19_bn"])
    small_face = build_net("face_cnn", (3, 32, 32), 2, widths=(4, 8, 8, 8), fc=16)
    big_cifar = build_net("vgg19_bn", (3, 64, 64), 10, width_mult=1 / 16)
    mnist = build_net("mnist_mlp", (1, 28, 28), 10, hidden=16)
    supported = r"face_cnn on 3×64×64 images \(App\. B \(LFW\)\); vgg19_bn on 3×32×32 images \(App\. C"
    for name in NAMES:
        for net, partition in ((small_face, "pool2"), (big_cifar, "pool2"), (mnist, "fc2")):
            with pytest.raises(ValueError, match=supported):
                build_decoder(name, net, partition, (-1, 1))
        for net in (face, cifar):
            with pytest.raises(ValueError, match="partitions pool1, pool2, pool3, not 'pool4'"):
                build_decoder(name, net, "pool4", (-1, 1))
        with pytest.raises(ValueError, match=r"end in tanh: they need images in \(-1, 1\)"):
            build_decoder(name, face, "pool2", (0, 1))
        # App. C's linear output takes either range: the clipping sets it.
        assert build_decoder(name, cifar, "pool2", (0, 1))(torch.zeros(2, 8, 8, 8)).shape == (2, 3, 32, 32)
        with pytest.raises(ValueError, match=r"unknown option\(s\) \['hidden'\]"):
            build_decoder(name, face, "pool2", (-1, 1), hidden=64)


def test_the_names_are_in_the_zoo():
    assert set(NAMES) <= set(DECODERS) and not set(NAMES) & set(BASELINES)


@pytest.mark.parametrize("driver", ["lfw_grid", "cifar_vgg"])
def test_paper_profiles_defend_and_attack_with_the_appendix_decoders(driver, tmp_path):
    paper = PROFILES[driver]["paper"]
    assert paper.defender_suites == (("paper_deconv",),)
    assert paper.attackers == (*NAMES, "mean_image")  # the appendix's attackers and the baseline
    paper.with_(results=str(tmp_path / "r")).validate()
    image_shape = (
        (3, paper.dataset_options["size"], paper.dataset_options["size"])
        if driver == "lfw_grid"
        else (3, 32, 32)
    )
    with torch.device("meta"):
        net = build_net(paper.arch, image_shape, 10, **dict(paper.arch_options))
        for partition in paper.partitions:
            for name in {*paper.attackers, *paper.defender_suites[0]} - {"mean_image"}:
                decoder = build_decoder(name, net, partition, (-1.0, 1.0))
                assert output_shape(decoder, activation_shape(net, partition)) == image_shape
    # The other profiles keep the rules that build for any width and image size.
    for name, spec in PROFILES[driver].items():
        if name != "paper":
            assert spec.defender_suites == (("deconv",),)
            assert not any(a.startswith("paper_") for a in spec.attackers)
