"""Resuming a DDP run: two gloo ranks, each with its own dropout stream (the global RNG seeded
with ``seed + rank``), interrupted after epoch K and resumed in fresh processes from the state
rank 0 saved, draw the same dropout masks as an uninterrupted run, and end with its weights."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pp_cluster.data.base import Split
from pp_cluster.privacy.defense import TrainConfig, train_defended

WORLD, EPOCHS, K = 2, 4, 2  # K: the epoch after which the interrupted run stops
SHAPE = (1, 8, 8)
VR = (0.0, 1.0)
CFG = TrainConfig(lam=0.3, epochs=EPOCHS, batch_size=4, optimizer="sgd", lr=0.05, momentum=0.9, seed=3)


class _Interrupted(Exception):
    """Raised on every rank at the same epoch: a worker group that dies after a checkpoint."""


def _data(n: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.rand(n, *SHAPE, generator=g), torch.randint(0, 3, (n,), generator=g))


def _mlp() -> tuple[nn.Sequential, nn.Sequential, nn.Sequential]:
    """(net, local, remote) of an MLP whose local partition ends in dropout."""
    layers = [nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3)]
    return nn.Sequential(*layers), nn.Sequential(*layers[:4]), nn.Sequential(layers[4])


def _train(rank: int, init_seed: int, resume: dict | None = None, stop: Path | None = None) -> dict:
    """Train the dropout MLP under DDP; record every training dropout output per epoch, each
    epoch's end RNG state and the final weights. With ``stop``, rank 0 writes the state after
    epoch K there and every rank stops."""
    torch.manual_seed(init_seed)  # a resumed run starts from other weights: all must come from the state
    net, local, remote = _mlp()
    defender = nn.Sequential(nn.Linear(16, 64), nn.Sigmoid(), nn.Unflatten(1, SHAPE))
    drops: list[torch.Tensor] = []
    local[3].register_forward_hook(
        lambda m, _, out: drops.append(out.detach().clone()) if m.training else None
    )
    seen: dict = {"drops": {}, "rng": {}}

    def on_epoch(row: dict, state_fn) -> None:
        seen["drops"][row["epoch"]] = torch.stack(drops)
        drops.clear()
        seen["rng"][row["epoch"]] = torch.get_rng_state()
        if stop is not None and row["epoch"] == K:
            if rank == 0:  # as the farm does: rank 0 alone writes the state file
                torch.save(state_fn(), stop)
            raise _Interrupted

    train_defended(
        net,
        local,
        remote,
        [defender],
        _data(32, seed=0),
        _data(8, seed=1),
        VR,
        CFG,
        on_epoch=on_epoch,
        resume=resume,
        wrap=DistributedDataParallel,
        shard=(rank, WORLD),
    )
    seen["params"] = [p.detach().clone() for m in (net, defender) for p in m.parameters()]
    return seen


def _worker(rank: int, port: int, out: str, phase: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        state = Path(out) / "state.pt"
        if phase == "first":  # the uninterrupted run, then the one interrupted after epoch K
            torch.save(_train(rank, init_seed=0), f"{out}/full-{rank}.pt")
            try:
                _train(rank, init_seed=0, stop=state)
            except _Interrupted:
                pass
        else:  # fresh processes: resume from the file alone
            resume = torch.load(state, map_location="cpu", weights_only=True)
            torch.save(_train(rank, init_seed=99, resume=resume), f"{out}/resumed-{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_each_rank_resumes_its_own_dropout_stream(tmp_path):
    for phase in ("first", "resume"):
        # forked, not spawned: a child starts with the imports done (seconds each under load) but
        # from the test's process, never from the first phase's, so the resumed ranks are fresh
        mp.start_processes(
            _worker, args=(_free_port(), str(tmp_path), phase), nprocs=WORLD, start_method="fork"
        )
    full = [torch.load(tmp_path / f"full-{r}.pt") for r in range(WORLD)]
    resumed = [torch.load(tmp_path / f"resumed-{r}.pt") for r in range(WORLD)]

    # the two ranks draw different masks (else this test could not tell their streams apart)
    assert not torch.equal(full[0]["drops"][1] != 0, full[1]["drops"][1] != 0)
    resumed_epochs = list(range(K + 1, EPOCHS + 1))
    for rank in range(WORLD):  # where each rank's stream stands after every resumed epoch
        assert sorted(resumed[rank]["rng"]) == resumed_epochs
        for epoch in resumed_epochs:
            assert torch.equal(resumed[rank]["rng"][epoch], full[rank]["rng"][epoch]), (rank, epoch)
    for rank in range(WORLD):  # the masks it drew (and the activations they fell on), the weights
        for epoch in resumed_epochs:
            assert torch.equal(resumed[rank]["drops"][epoch], full[rank]["drops"][epoch]), (rank, epoch)
        for a, b in zip(resumed[rank]["params"], full[rank]["params"], strict=True):
            assert torch.equal(a, b), rank


def test_a_state_of_another_world_size_is_refused_and_an_older_one_read():
    """One entry serves every rank (a state saved without a process group, or written before
    the states were per rank, as a dict); a state of three ranks does not fit two."""
    torch.manual_seed(0)
    net, local, remote = _mlp()
    cfg = TrainConfig(epochs=2, batch_size=8, seed=3)
    train, test = _data(16, seed=0), _data(8, seed=1)
    states: dict = {}
    train_defended(
        net, local, remote, [], train, test, VR, cfg, on_epoch=lambda r, f: states.setdefault(r["epoch"], f())
    )
    assert len(states[1]["rng"]) == 1
    full = [p.detach().clone() for p in net.parameters()]
    older = {**states[1], "rng": states[1]["rng"][0]}
    resumed = train_defended(net, local, remote, [], train, test, VR, cfg, resume=older)
    assert [r["epoch"] for r in resumed.epochs] == [2]
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), full, strict=True))  # dropout too
    with pytest.raises(ValueError, match="random state of 3 ranks, this run has 2"):
        train_defended(
            net,
            local,
            remote,
            [],
            train,
            test,
            VR,
            cfg,
            resume={**states[1], "rng": states[1]["rng"] * 3},
            shard=(0, 2),
        )
