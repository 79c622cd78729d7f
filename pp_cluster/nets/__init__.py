"""Partitionable classifiers, their split points, the decoder zoo shared by defenders
and attackers, and the activation-noise defense. Plain PyTorch: nothing here imports Ray.
A new network or decoder registers with :func:`register_net` / :func:`register_decoder`."""

# Registers the appendices' decoders (paper_deconv, paper_fc, paper_sparse_fc) with the zoo.
from pp_cluster.nets import paper_decoders  # noqa: F401
from pp_cluster.nets.classifiers import (
    ARCHS,
    NET_REGISTRY,
    PartitionedNet,
    activation_shape,
    build_net,
    register_net,
    split,
)
from pp_cluster.nets.decoders import (
    BASELINES,
    DECODER_REGISTRY,
    DECODERS,
    MNIST_ONLY,
    WHITE_BOX,
    build_decoder,
    clip_to_range,
    register_decoder,
)
from pp_cluster.nets.measure import flops_per_sample, output_shape, param_count
from pp_cluster.nets.noise import GaussianNoise, add_activation_noise

__all__ = [
    "ARCHS",
    "BASELINES",
    "DECODERS",
    "DECODER_REGISTRY",
    "MNIST_ONLY",
    "NET_REGISTRY",
    "WHITE_BOX",
    "GaussianNoise",
    "PartitionedNet",
    "activation_shape",
    "add_activation_noise",
    "build_decoder",
    "build_net",
    "clip_to_range",
    "flops_per_sample",
    "output_shape",
    "param_count",
    "register_decoder",
    "register_net",
    "split",
]
