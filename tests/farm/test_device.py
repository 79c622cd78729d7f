"""One device rule (issue 19): CUDA only when the sweep trains on GPUs and the process holds a
GPU share. Ray 2.60 does not hide GPUs from zero-GPU processes, so a process that could see a
card (simulated: torch.cuda.is_available patched true) must still choose the CPU."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.farm


def test_the_device_rule(monkeypatch):
    import ray
    import torch

    from pp_cluster.farm.capacity import process_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    assert process_device(use_gpu=True) == "cpu"  # sees a card, holds none (a zero-GPU attacker actor)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [0])
    assert process_device(use_gpu=False) == "cpu"  # holds one, but the sweep said --no-gpu
    assert process_device(use_gpu=True) == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert process_device(use_gpu=True) == "cpu"  # a logical GPU with no CUDA behind it


def test_a_zero_gpu_actor_chooses_the_cpu_even_when_it_could_see_cuda(ray_cluster):
    import ray

    @ray.remote(num_cpus=0.1, num_gpus=0)
    def device_here(use_gpu: bool) -> tuple[str, list]:
        import torch

        from pp_cluster.farm.capacity import process_device

        torch.cuda.is_available = lambda: True  # this process "sees" a card
        return process_device(use_gpu), ray.get_gpu_ids()

    assert ray.get(device_here.remote(True)) == ("cpu", [])
