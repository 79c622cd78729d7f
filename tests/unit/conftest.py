"""Fixtures the unit tests share: one torch thread, and a tiny face CNN trained on real crops."""

from __future__ import annotations

import pytest
import torch

from pp_cluster import pipeline
from pp_cluster.config import ModelSpec


@pytest.fixture
def one_thread():
    """Run the test on one torch thread (exact, and fair to a test running beside it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_faces():
    """(spec at pool1, data, net): scikit-image's real LFW crops at 16×16 and a narrow face CNN
    trained on them for 2 epochs, undefended, in eval mode; for attacks at pool1."""
    spec = ModelSpec(
        dataset="lfw-subset",
        arch="face_cnn",
        partition=None,
        lam=0.0,
        defenders=(),
        distance="ssim",
        seed=0,
        epochs=2,
        batch_size=32,
        defense="none",
        dataset_options={"size": 16},
        arch_options={"widths": (8, 8, 8, 8), "fc": 16},
    )
    ds = pipeline.load_data(spec)
    model, result = pipeline.train_model(spec, ds)
    assert result.status == "ok"
    return spec.at("pool1"), ds, model.net.eval()
