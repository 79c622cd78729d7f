"""Partitionable classifiers, split points and the decoder zoo (pp_cluster.nets)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from pp_cluster.nets import (
    ARCHS,
    BASELINES,
    DECODERS,
    WHITE_BOX,
    activation_shape,
    build_decoder,
    build_net,
    clip_to_range,
    flops_per_sample,
    output_shape,
    param_count,
    split,
)

# Width-reduced versions of each arch so every split point runs in milliseconds.
SMALL = {
    "mnist_mlp": ((1, 28, 28), {"hidden": 32}),
    "face_cnn": ((3, 32, 32), {"widths": (4, 8, 8, 8), "fc": 16}),
    "vgg19_bn": ((3, 32, 32), {"width_mult": 1 / 16}),
}
PARTITIONS = {
    "mnist_mlp": ("fc1", "fc2", "fc3"),
    "face_cnn": ("pool1", "pool2", "pool3", "pool4"),
    "vgg19_bn": ("pool1", "pool2", "pool3", "pool4"),
}
SPLITS = [(arch, p) for arch in ARCHS for p in PARTITIONS[arch]]
RANGES = [(0.0, 1.0), (-1.0, 1.0)]


def small_net(arch: str, num_classes: int = 5):
    torch.manual_seed(0)
    image_shape, options = SMALL[arch]
    return build_net(arch, image_shape, num_classes, **options)


def trained_bn_net(arch: str):
    """A small net whose BatchNorm running statistics are no longer the identity."""
    net = small_net(arch)
    with torch.no_grad():
        for _ in range(2):
            net(torch.rand(4, *net.image_shape))
    return net.eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_stages_partitions_and_attributes(arch):
    net = small_net(arch, num_classes=7)
    assert net.arch == arch and net.num_classes == 7 and net.image_shape == SMALL[arch][0]
    assert net.partitions == PARTITIONS[arch]
    names = list(net.stages)
    assert names[-1] == "classifier" and names[: len(net.partitions)] == list(net.partitions)
    assert net.default_partition in net.partitions
    assert net(torch.rand(3, *net.image_shape)).shape == (3, 7)


def test_mnist_mlp_is_the_papers_800_wide_net():
    net = build_net("mnist_mlp", (1, 28, 28), 10)
    assert list(net.stages) == ["fc1", "fc2", "fc3", "classifier"]
    assert net.default_partition == "fc2"
    assert param_count(net) == (784 * 800 + 800) + 2 * (800 * 800 + 800) + (800 * 10 + 10)
    dropouts = [m.p for m in net.modules() if isinstance(m, nn.Dropout)]
    assert dropouts == [0.1, 0.1, 0.1]


def test_face_cnn_follows_appendix_b():
    net = build_net("face_cnn", (3, 64, 64), 34)
    pool1 = [type(m) for m in net.stages["pool1"]]
    # conv 5×5 → ReLU → BN, twice, then the pool (the paper's conv→ReLU→BN order).
    assert pool1 == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d] * 2 + [nn.MaxPool2d]
    kernels = [m.kernel_size for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert kernels == [(5, 5)] * 2 + [(3, 3)] * 6
    linears = [(m.in_features, m.out_features) for m in net.stages["classifier"] if isinstance(m, nn.Linear)]
    assert linears == [(256 * 4 * 4, 512), (512, 512), (512, 34)]
    assert activation_shape(net, "pool3") == (128, 8, 8)


def test_vgg19_bn_features_match_torchvision():
    net = build_net("vgg19_bn", (3, 32, 32), 10)
    ours = [m for stage in list(net.stages.values())[:-1] for m in stage]
    theirs = list(make_layers(cfgs["E"], batch_norm=True))
    assert [type(m) for m in ours] == [type(m) for m in theirs]
    assert param_count(nn.Sequential(*ours)) == param_count(nn.Sequential(*theirs))
    assert [m for m in net.stages["classifier"] if isinstance(m, nn.Linear)][0].in_features == 512
    assert activation_shape(net, "pool4") == (512, 2, 2)


@pytest.mark.parametrize(("arch", "partition"), SPLITS)
def test_split_recomposes_the_net_and_shares_its_modules(arch, partition):
    net = trained_bn_net(arch)
    local, remote = split(net, partition)
    x = torch.rand(3, *net.image_shape)
    with torch.no_grad():
        h = local(x)
        assert torch.equal(remote(h), net(x))
    assert tuple(h.shape[1:]) == activation_shape(net, partition)

    ids = lambda m: {id(p) for p in m.parameters()}  # noqa: E731
    assert ids(local) | ids(remote) == ids(net) and not ids(local) & ids(remote)
    assert getattr(local, partition) is net.stages[partition]
    # Training the net moves the local half's weights: they are the same tensors.
    before = [p.detach().clone() for p in local.parameters()]
    net.train()
    nn.functional.cross_entropy(net(x), torch.tensor([0, 1, 2])).backward()
    torch.optim.SGD(net.parameters(), lr=0.1).step()
    assert any(not torch.equal(b, p) for b, p in zip(before, local.parameters()))


def _decoder_cases():
    for arch, partition in SPLITS:
        for name in DECODERS:
            if name in BASELINES:
                continue  # no weights, no H: see test_mean_image_baseline
            if name in WHITE_BOX:
                continue  # no weights, optimises images: tests/unit/test_inversion.py
            if name.startswith("paper_"):
                continue  # the appendices' nets and image sizes only: tests/unit/test_paper_decoders.py
            if arch == "mnist_mlp" or not name.startswith("mnist_"):
                yield arch, partition, name


@pytest.mark.parametrize(("arch", "partition", "name"), list(_decoder_cases()))
def test_every_decoder_maps_the_activation_back_to_the_image(arch, partition, name):
    net = trained_bn_net(arch)
    local, _ = split(net, partition)
    x = torch.rand(2, *net.image_shape)
    with torch.no_grad():
        h = local(x)
    for lo, hi in RANGES:
        decoder = build_decoder(name, net, partition, (lo, hi))
        out = decoder(h)
        assert out.shape == x.shape
        assert out.min() >= lo and out.max() <= hi
        out.square().mean().backward()
        assert all(p.grad is not None for p in decoder.parameters())


def test_mean_image_baseline_outputs_the_training_mean_whatever_h():
    from pp_cluster.privacy.attack import AttackConfig, train_attacker

    net = small_net("face_cnn")
    local, _ = split(net, "pool1")
    x = torch.rand(6, *net.image_shape) * 2 - 1
    with torch.no_grad():
        h = local(x)
    attacker, history = train_attacker(
        build_decoder("mean_image", net, "pool1", (-1, 1)), h, x, (-1, 1), AttackConfig(epochs=3)
    )
    assert history["epochs_run"] == 0 and not list(attacker.parameters())
    out = attacker(torch.randn_like(h[:2]))
    assert out.shape == (2, *net.image_shape)
    assert torch.allclose(out, x.mean(dim=0).expand_as(out))
    assert "mean_image" in BASELINES


def test_output_activation_follows_value_range():
    net = small_net("face_cnn")
    assert isinstance(build_decoder("fc", net, "pool1", (-1, 1))[-2], nn.Tanh)
    assert isinstance(build_decoder("fc", net, "pool1", (0, 1))[-2], nn.Sigmoid)
    assert isinstance(build_decoder("deconv", net, "pool1", (-1, 1))[-1], nn.Tanh)


@pytest.mark.parametrize(("arch", "partition"), [s for s in SPLITS if s[0] != "mnist_mlp"])
def test_deconv_reverses_the_local_conv_layers(arch, partition):
    net = small_net(arch)
    local, _ = split(net, partition)
    decoder = build_decoder("deconv", net, partition, (-1, 1))
    convs = [m for m in local.modules() if isinstance(m, nn.Conv2d)]
    pools = [m for m in local.modules() if isinstance(m, nn.MaxPool2d)]
    deconvs = [m for m in decoder if isinstance(m, nn.ConvTranspose2d)]
    upsamplers = [m for m in deconvs if m.stride == (2, 2)]
    assert len(upsamplers) == len(pools) == int(partition[-1])
    assert len(deconvs) == len(convs) + len(pools)
    same_size = [m for m in deconvs if m.stride == (1, 1)]
    assert [(m.kernel_size, m.out_channels) for m in same_size] == [
        (c.kernel_size, c.in_channels) for c in reversed(convs)
    ]


def test_deconv_for_face_pool2_mirrors_appendix_b():
    """App. B: deconv 3×3 (stride 2) → … → deconv 5×5 (stride 2) → deconv 5×5 → tanh."""
    net = build_net("face_cnn", (3, 64, 64), 34)
    decoder = build_decoder("deconv", net, "pool2", (-1, 1))
    deconvs = [m for m in decoder if isinstance(m, nn.ConvTranspose2d)]
    assert sum(m.stride == (2, 2) for m in deconvs) == 2
    assert deconvs[0].stride == (2, 2) and deconvs[0].kernel_size == (3, 3)
    assert [m.kernel_size for m in deconvs[-2:]] == [(5, 5), (5, 5)] and deconvs[-1].out_channels == 3
    assert isinstance(decoder[-1], nn.Tanh) and not isinstance(decoder[-2], (nn.ReLU, nn.BatchNorm2d))
    assert output_shape(decoder, activation_shape(net, "pool2")) == (3, 64, 64)


def test_deconv_for_mnist_reverses_the_linear_layers():
    net = small_net("mnist_mlp")
    decoder = build_decoder("deconv", net, "fc2", (0, 1))
    linears = [(m.in_features, m.out_features) for m in decoder if isinstance(m, nn.Linear)]
    assert linears == [(32, 32), (32, 784)]


def test_fc_hidden_size_reproduces_the_paper():
    face = build_net("face_cnn", (3, 64, 64), 34, widths=(4, 8, 8, 8), fc=16)
    cifar = small_net("vgg19_bn")
    mnist = small_net("mnist_mlp")
    with torch.device("meta"):  # the App. B decoders are ~10^8 parameters: shapes only
        fc_face = build_decoder("fc", face, "pool2", (-1, 1))
        sparse_cifar = build_decoder("sparse_fc", cifar, "pool2", (-1, 1))
        fc_override = build_decoder("fc", face, "pool2", (-1, 1), hidden=128)
        fc_mnist = build_decoder("fc", mnist, "fc2", (0, 1))
    widths = lambda d: [m.out_features for m in d if isinstance(m, nn.Linear)]  # noqa: E731
    assert widths(fc_face) == [4096, 12288]
    assert widths(sparse_cifar) == [1024, 3072]
    assert widths(fc_override) == [128, 12288]
    assert widths(fc_mnist) == [256, 784]
    assert [m.p for m in sparse_cifar if isinstance(m, nn.Dropout)] == [0.5]
    assert not any(isinstance(m, nn.Dropout) for m in fc_face)


def test_appendix_a_attackers_and_defenders():
    net = small_net("mnist_mlp")

    def layers(name):
        decoder = build_decoder(name, net, "fc2", (0, 1))
        return [(type(m).__name__, getattr(m, "out_features", getattr(m, "p", None))) for m in decoder]

    head = [("Linear", 784), ("Sigmoid", None), ("Unflatten", None)]
    assert layers("mnist_a1") == [("Flatten", None), ("Linear", 800), ("ReLU", None), *head]
    assert layers("mnist_a2") == [("Flatten", None), ("Linear", 800), ("ReLU", None), ("Dropout", 0.1), *head]
    assert layers("mnist_a3")[2] == ("Tanh", None) and layers("mnist_a4")[2] == ("Sigmoid", None)
    assert layers("mnist_a5")[1] == ("Linear", 512) and layers("mnist_a6")[1] == ("Linear", 1024)
    assert any(kind == "Conv1d" for kind, _ in layers("mnist_a7"))
    assert layers("mnist_a8") == [("Flatten", None), *head]
    for defender, attacker in [
        ("mnist_d1", "mnist_a3"),
        ("mnist_d2", "mnist_a4"),
        ("mnist_d3", "mnist_a7"),
        ("mnist_d4", "mnist_a8"),
    ]:
        assert layers(defender) == layers(attacker)


def test_unknown_names_are_rejected_with_the_valid_ones():
    with pytest.raises(ValueError, match="unknown arch 'resnet'.*mnist_mlp"):
        build_net("resnet", (3, 32, 32), 10)
    net = small_net("vgg19_bn")
    with pytest.raises(ValueError, match="unknown partition 'pool5'.*pool1, pool2, pool3, pool4"):
        split(net, "pool5")
    with pytest.raises(ValueError, match="unknown partition 'fc2'"):
        activation_shape(net, "fc2")
    with pytest.raises(ValueError, match="unknown decoder 'unet'.*deconv"):
        build_decoder("unet", net, "pool1", (0, 1))
    with pytest.raises(ValueError, match="only for mnist_mlp"):
        build_decoder("mnist_a1", net, "pool1", (0, 1))
    with pytest.raises(ValueError, match="unknown partition 'pool9'"):
        build_decoder("fc", net, "pool9", (0, 1))


def test_bad_shapes_options_and_ranges_are_rejected():
    with pytest.raises(ValueError, match="divisible by 16"):
        build_net("face_cnn", (3, 50, 50), 10)
    with pytest.raises(ValueError, match="divisible by 32"):
        build_net("vgg19_bn", (3, 28, 28), 10)
    with pytest.raises(ValueError, match="image_shape"):
        build_net("mnist_mlp", (28, 28), 10)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['width_mult'\] for face_cnn"):
        build_net("face_cnn", (3, 32, 32), 10, width_mult=0.5)
    net = small_net("face_cnn")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['hidden'\] for decoder 'mnist_a1'|only for"):
        build_decoder("mnist_a1", net, "pool1", (0, 1), hidden=3)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['hidden'\] for decoder 'deconv'"):
        build_decoder("deconv", net, "pool1", (0, 1), hidden=3)
    with pytest.raises(ValueError, match="value_range"):
        build_decoder("fc", net, "pool1", (0, 255))
    with pytest.raises(ValueError, match="value_range"):
        clip_to_range(torch.zeros(1), (1.0, 0.0))


def test_clip_to_range():
    x = torch.tensor([-2.0, -0.5, 0.5, 3.0])
    assert torch.equal(clip_to_range(x, (-1, 1)), torch.tensor([-1.0, -0.5, 0.5, 1.0]))
    assert torch.equal(clip_to_range(x, (0, 1)), torch.tensor([0.0, 0.0, 0.5, 1.0]))


def test_param_count_and_flops_per_sample():
    assert param_count(nn.Linear(10, 5)) == 55
    assert flops_per_sample(nn.Linear(10, 5), (10,)) == 2 * 10 * 5
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
    assert flops_per_sample(conv, (3, 16, 16)) == 2 * 3 * 8 * 9 * 16 * 16
    # Measuring touches neither the weights, the running statistics nor the mode.
    net = small_net("face_cnn")
    state = {k: v.clone() for k, v in net.state_dict().items()}
    assert flops_per_sample(net, net.image_shape) > flops_per_sample(split(net, "pool1")[0], net.image_shape)
    assert net.training and all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="input_shape"):
        output_shape(conv, ())


def test_the_results_contract_knows_the_zoo_baselines():
    """The store (no torch) names the baselines itself; it must agree with the zoo."""
    from pp_cluster.results.rules import BASELINE_ATTACKERS

    assert set(BASELINE_ATTACKERS) == set(BASELINES)
