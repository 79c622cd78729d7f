"""Algorithm 1 (defended training): equivalence with plain training, the argmin choice,
the direction of the λ-gradient, divergence, resume, sharding, recipes."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pp_cluster.data.base import Split
from pp_cluster.privacy.defense import TrainConfig, crop_flip, train_defended
from pp_cluster.privacy.metrics import distance
from pp_cluster.privacy.recipes import recipe


@pytest.fixture(autouse=True)
def _fp32(monkeypatch):
    """These tests compare training against reference loops written in fp32, step for step:
    the CPU's bf16 default (pp_cluster.precision) is off here; its own tests set it."""
    monkeypatch.setenv("PP_CLUSTER_CPU_BF16", "0")


SHAPE = (1, 8, 8)
VR = (0.0, 1.0)


def _data(n: int, seed: int = 0, classes: int = 3) -> Split:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    # class-dependent blobs plus noise, so there is something to learn and to recover
    x = torch.rand(n, *SHAPE, generator=g) * 0.3
    for c in range(classes):
        x[y == c, :, 2 * c : 2 * c + 3, 1:7] += 0.6
    return Split(x.clamp(0, 1), y)


def _net(
    seed: int = 0, hidden: int = 16, dropout: float = 0.2
) -> tuple[nn.Sequential, nn.Sequential, nn.Sequential]:
    torch.manual_seed(seed)
    layers = [nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 3)]
    net = nn.Sequential(*layers)
    return net, nn.Sequential(*layers[:4]), nn.Sequential(layers[4])


def _defender(hidden: int = 16, seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(hidden, 64), nn.Sigmoid(), nn.Unflatten(1, SHAPE))


def _params(*modules: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for m in modules for p in m.parameters()]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_lambda_zero_without_defender_is_plain_training(optimizer):
    train, test = _data(50), _data(20, seed=1)
    cfg = TrainConfig(
        epochs=3,
        batch_size=8,
        optimizer=optimizer,
        lr=0.05,
        momentum=0.9,
        weight_decay=1e-3,
        lr_step=2,
        lr_gamma=0.5,
        seed=7,
    )
    net, local, remote = _net()
    plain = copy.deepcopy(net)
    result = train_defended(net, local, remote, [], train, test, VR, cfg)
    assert result.status == "ok" and len(result.epochs) == 3

    # the hand-written loop: seeded order generator, seeded global RNG (dropout)
    opt = (
        torch.optim.Adam(plain.parameters(), lr=0.05, weight_decay=1e-3, fused=True)  # build_optimizer's
        if optimizer == "adam"
        else torch.optim.SGD(plain.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)
    order = torch.Generator().manual_seed(7)
    torch.manual_seed(7)
    for _ in range(3):
        plain.train()
        perm = torch.randperm(50, generator=order)
        for i in range(0, 50, 8):
            idx = perm[i : i + 8]
            loss = F.cross_entropy(plain(train.x[idx]), train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    for a, b in zip(_params(net), _params(plain)):
        assert torch.equal(a, b)
    assert result.epochs[-1]["lr"] == pytest.approx(0.05 * 0.5)
    assert result.final_distance is None and 0 <= result.test_acc <= 1


class _Spy(nn.Module):
    """A defender that counts the batches whose λ-gradient flows back through it."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder, self.lambda_grads = decoder, 0

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.decoder(h)
        if h.requires_grad:  # only step (3) passes the live activation

            def count(grad):
                self.lambda_grads += 1

            out.register_hook(count)
        return out


def test_best_defender_is_the_argmin_and_alone_gets_the_lambda_gradient():
    train, test = _data(40), _data(10, seed=1)
    torch.manual_seed(0)
    local = nn.Sequential(nn.Flatten(), nn.Linear(64, 64))
    with torch.no_grad():  # invertible local partition
        local[1].weight.copy_(torch.eye(64))
        local[1].bias.zero_()
    remote = nn.Sequential(nn.Linear(64, 3))
    net = nn.Sequential(local, remote)
    good = nn.Sequential(nn.Linear(64, 64), nn.Unflatten(1, SHAPE))
    bad = nn.Sequential(nn.Linear(64, 64), nn.Unflatten(1, SHAPE))
    with torch.no_grad():
        good[0].weight.copy_(torch.eye(64))
        good[0].bias.zero_()
        bad[0].weight.zero_()
        bad[0].bias.fill_(0.5)
    spies = [_Spy(bad), _Spy(good)]
    cfg = TrainConfig(lam=0.5, epochs=1, batch_size=8, lr=1e-3, defender_lr=1e-5, seed=0)
    result = train_defended(net, local, remote, spies, train, test, VR, cfg)
    assert result.epochs[0]["best_defender_counts"] == [0, 5]
    assert [s.lambda_grads for s in spies] == [0, 5]
    # the good defender reconstructs almost exactly: its distance is the one reported
    assert result.final_distance < 0.1


def test_lambda_gradient_moves_the_local_partition_to_increase_the_distance():
    """One SGD step with λ > 0 minus the same step with λ = 0 is exactly lr·λ·∇_local d
    under the updated defender, and moving along it raises d."""
    train, test = _data(16), _data(8, seed=1)
    lam, lr = 2.0, 0.1
    runs = {}
    for value in (0.0, lam):
        net, local, remote = _net(dropout=0.0)
        defender = _defender()
        cfg = TrainConfig(lam=value, distance="ssim", epochs=1, batch_size=16, optimizer="sgd", lr=lr, seed=3)
        train_defended(net, local, remote, [defender], train, test, VR, cfg)
        runs[value] = (net, local, remote, defender)
    (_, local0, remote0, d0), (_, local1, remote1, d1) = runs[0.0], runs[lam]
    for a, b in zip(_params(remote0, d0), _params(remote1, d1)):
        assert torch.equal(a, b)  # the λ-term touches neither the remote partition nor the defender
    delta = [b - a for a, b in zip(_params(local0), _params(local1))]
    assert max(float(t.abs().max()) for t in delta) > 0

    # independent autograd: ∇_local d(x, D'(local(x))) at the initial local weights
    start, start_local, _ = _net(dropout=0.0)
    d_at = lambda m: distance("ssim", train.x, d0(m(train.x)), VR)  # noqa: E731
    grads = torch.autograd.grad(d_at(start_local), list(start_local.parameters()))
    for dt, g in zip(delta, grads):
        torch.testing.assert_close(dt, lr * lam * g, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        before = float(d_at(start_local))
        for p, dt in zip(start_local.parameters(), delta):
            p.add_(dt * 0.1)
        assert float(d_at(start_local)) > before


@pytest.mark.parametrize("n_defenders", [1, 2])
def test_simultaneous_update_at_lambda_zero_equals_alternating(n_defenders):
    """Without the λ-term the two orders do the same work: every weight ends up equal."""
    train, test = _data(40), _data(10, seed=1)
    ends = {}
    for update in ("alternating", "simultaneous"):
        net, local, remote = _net()
        defenders = [_defender(seed=s) for s in range(1, n_defenders + 1)]
        cfg = TrainConfig(lam=0.0, epochs=2, batch_size=8, lr=1e-2, defender_lr=1e-2, seed=5, update=update)
        result = train_defended(net, local, remote, defenders, train, test, VR, cfg)
        assert result.status == "ok" and result.final_distance is not None
        ends[update] = _params(net, *defenders)
    for a, b in zip(ends["alternating"], ends["simultaneous"]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("seeds", [(1, 2), (2, 1)])
def test_simultaneous_update_is_one_gradient_step_on_the_pre_update_defenders(seeds):
    """One SGD step of the simultaneous order, computed independently: the defenders step
    on their own d, the best is the argmin *before* that step, and the local partition
    gets ∇(CE - λ·d_best) through h while the remote partition gets ∇CE."""
    train, test = _data(16), _data(8, seed=1)
    lam, lr, d_lr = 2.0, 0.1, 0.05
    net, local, remote = _net(dropout=0.0)
    defenders = [_defender(seed=s) for s in seeds]
    start_net, start_local, start_remote = copy.deepcopy((net, local, remote))
    start_defenders = copy.deepcopy(defenders)
    cfg = TrainConfig(
        lam=lam,
        distance="ssim",
        epochs=1,
        batch_size=16,
        optimizer="sgd",
        lr=lr,
        defender_lr=d_lr,
        seed=3,
        update="simultaneous",
    )
    result = train_defended(net, local, remote, defenders, train, test, VR, cfg)

    x, y = train.x, train.y  # one batch holding the whole split; order does not matter for means
    h = start_local(x)
    dists = [distance("ssim", x, d(h.detach()), VR) for d in start_defenders]
    best = int(torch.stack([v.detach() for v in dists]).argmin())
    assert result.epochs[0]["best_defender_counts"] == [int(k == best) for k in range(2)]
    assert result.final_distance == pytest.approx(float(dists[best].detach()), rel=1e-5)
    task = F.cross_entropy(start_remote(h), y)
    adv = distance("ssim", x, start_defenders[best](h), VR)
    local_grads = torch.autograd.grad(task - lam * adv, list(start_local.parameters()), retain_graph=True)
    remote_grads = torch.autograd.grad(task, list(start_remote.parameters()))
    for p0, g, p1 in zip(start_local.parameters(), local_grads, local.parameters()):
        torch.testing.assert_close(p1.detach(), p0.detach() - lr * g, rtol=1e-5, atol=1e-6)
    for p0, g, p1 in zip(start_remote.parameters(), remote_grads, remote.parameters()):
        torch.testing.assert_close(p1.detach(), p0.detach() - lr * g, rtol=1e-5, atol=1e-6)
    for d0, v, d1 in zip(start_defenders, dists, defenders):
        grads = torch.autograd.grad(v, list(d0.parameters()))
        for p0, g, p1 in zip(d0.parameters(), grads, d1.parameters()):
            torch.testing.assert_close(p1.detach(), p0.detach() - d_lr * g, rtol=1e-5, atol=1e-6)
    ce_only = torch.autograd.grad(
        F.cross_entropy(start_remote(start_local(x)), y), list(start_local.parameters())
    )
    assert max(float((a - b).abs().max()) for a, b in zip(local_grads, ce_only)) > 1e-4  # the λ-term acted


def test_fast_paths_default_on_for_cuda_and_bf16_cpus(monkeypatch):
    from pp_cluster import precision

    assert TrainConfig().fast_paths() == (False, False)  # PP_CLUSTER_CPU_BF16=0 (the fixture)
    assert TrainConfig(amp=True, channels_last=True).fast_paths() == (True, True)  # forced on a CPU
    monkeypatch.delenv("PP_CLUSTER_CPU_BF16")
    on = precision.cpu_has_bf16_matmul()
    assert TrainConfig().fast_paths() == (on, on)  # the CPU default follows its bf16 units
    assert TrainConfig(amp=False).fast_paths() == (False, on)
    monkeypatch.setenv("PP_CLUSTER_CPU_BF16", "1")
    assert TrainConfig().fast_paths() == (True, True)
    assert TrainConfig(device="cuda").fast_paths() == (True, True)
    assert TrainConfig(device="cuda", amp=False, channels_last=False).fast_paths() == (False, False)
    with pytest.raises(ValueError, match="update"):
        TrainConfig(update="interleaved")
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(amp="yes")


def test_huge_lambda_diverges_without_nan_metrics():
    train, test = _data(64), _data(16, seed=1)
    net, local, remote = _net(dropout=0.0)
    decoder = nn.Sequential(nn.Linear(16, 64), nn.Unflatten(1, SHAPE))  # unbounded output
    cfg = TrainConfig(lam=1e9, distance="mse", epochs=3, batch_size=8, optimizer="sgd", lr=0.1, seed=0)
    seen = []
    result = train_defended(
        net, local, remote, [decoder], train, test, VR, cfg, on_epoch=lambda row, _: seen.append(row)
    )
    assert result.status == "diverged" and result.diverged_epoch == 1
    assert result.test_acc is None and result.train_acc is None
    assert result.final_task_loss is None and result.final_distance is None
    assert result.epochs == [] and seen == []
    assert math.isfinite(result.seconds)


def test_resume_equals_an_uninterrupted_run():
    train, test = _data(40), _data(10, seed=1)
    cfg = TrainConfig(
        lam=0.3,
        epochs=3,
        batch_size=8,
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        lr_step=1,
        lr_gamma=0.5,
        seed=5,
    )
    net, local, remote = _net()
    defender = _defender()
    snapshots = {}
    full = train_defended(
        net,
        local,
        remote,
        [defender],
        train,
        test,
        VR,
        cfg,
        on_epoch=lambda row, state_fn: snapshots.setdefault(row["epoch"], state_fn()),
    )
    assert snapshots[1]["epoch"] == 1 and set(snapshots) == {1, 2, 3}

    net2, local2, remote2 = _net(seed=99)  # different weights: all must come from the snapshot
    defender2 = _defender(seed=98)
    resumed = train_defended(net2, local2, remote2, [defender2], train, test, VR, cfg, resume=snapshots[1])
    assert [r["epoch"] for r in resumed.epochs] == [2, 3]
    for a, b in zip(_params(net, defender), _params(net2, defender2)):
        assert torch.equal(a, b)
    assert resumed.epochs[-1]["task_loss"] == full.epochs[-1]["task_loss"]
    assert resumed.epochs[-1]["lr"] == pytest.approx(0.05 * 0.25)


class _Recorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen.append(x[:, 0, 0, 0].clone())
        return x


def test_shards_split_each_epoch_disjointly():
    train, test = _data(11), _data(4, seed=1)
    train = Split(train.x.clone(), train.y)
    train.x[:, 0, 0, 0] = torch.arange(11.0)  # an id pixel per image

    def run(rank: int, batch_size: int) -> list[int]:
        net, local, remote = _net(dropout=0.0)
        rec = _Recorder()
        local.insert(0, rec)
        cfg = TrainConfig(epochs=1, batch_size=batch_size, seed=4)
        train_defended(nn.Sequential(local, remote), local, remote, [], train, test, VR, cfg, shard=(rank, 2))
        return torch.cat(rec.seen).long().tolist()

    seen = [run(0, 3), run(1, 3)]
    assert len(seen[0]) == len(seen[1]) == 5  # 11 trimmed to 10, 5 per shard
    assert not set(seen[0]) & set(seen[1])
    order = torch.randperm(11, generator=torch.Generator().manual_seed(4))[:10]
    assert seen[0] == order[0::2].tolist() and seen[1] == order[1::2].tolist()
    assert run(0, 2) == seen[0][:4]  # a trailing one-image batch is skipped (BatchNorm)


def test_crop_flip_crops_each_image_independently():
    torch.manual_seed(0)
    x = torch.rand(6, 3, 8, 8)
    out = crop_flip(x, fill=-1.0, memory_format=torch.contiguous_format)
    assert out.shape == x.shape
    padded = F.pad(x, (4, 4, 4, 4), value=-1.0)
    found = []
    for n in range(len(x)):
        matches = [
            (dy, dx, f)
            for dy in range(9)
            for dx in range(9)
            for f in (False, True)
            if torch.equal(out[n], (lambda c: c.flip(-1) if f else c)(padded[n, :, dy : dy + 8, dx : dx + 8]))
        ]
        assert matches, f"image {n} is not a crop/flip of its padded original"
        found.append(matches[0])
    assert len(set(found)) > 1  # not one crop for the whole batch


def test_config_and_recipe_validation():
    with pytest.raises(ValueError, match="lam"):
        TrainConfig(lam=-1.0)
    with pytest.raises(ValueError, match="distance"):
        TrainConfig(distance="l1")
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="augment"):
        TrainConfig(augment="mixup")
    net, local, remote = _net()
    with pytest.raises(ValueError, match="defender"):
        train_defended(net, local, remote, [], _data(8), _data(4), VR, TrainConfig(lam=1.0))

    mnist = recipe("mnist")
    assert (mnist.optimizer, mnist.lr, mnist.defender_settings()[:2], mnist.batch_size) == (
        "adam",
        1e-4,
        ("adam", 1e-3),
        32,
    )
    lfw = recipe("lfw-subset", epochs=2)
    assert (lfw.optimizer, lfw.momentum, lfw.lr, lfw.lr_step, lfw.weight_decay, lfw.lam, lfw.epochs) == (
        "sgd",
        0.9,
        0.01,
        100,
        5e-4,
        0.1,
        2,
    )
    cifar = recipe("cifar10")
    assert (cifar.lr_step, cifar.epochs, cifar.augment, cifar.weight_decay) == (50, 150, "crop_flip", 5e-4)
    with pytest.raises(ValueError, match="imagenet"):
        recipe("imagenet")
    with pytest.raises(ValueError, match="lamda"):
        recipe("mnist", lamda=1.0)


def test_conv_net_with_batchnorm_augmentation_and_channels_last_is_reproducible():
    g = torch.Generator().manual_seed(0)
    train = Split(torch.rand(20, 3, 8, 8, generator=g) * 2 - 1, torch.randint(0, 2, (20,), generator=g))
    test = Split(torch.rand(6, 3, 8, 8, generator=g) * 2 - 1, torch.randint(0, 2, (6,), generator=g))

    def run(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(0)
        local = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2))
        remote = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
        defender = nn.Sequential(nn.ConvTranspose2d(4, 3, 2, stride=2), nn.BatchNorm2d(3), nn.Tanh())
        cfg = TrainConfig(
            lam=0.1,
            epochs=2,
            batch_size=8,
            optimizer="sgd",
            lr=0.01,
            momentum=0.9,
            augment="crop_flip",
            channels_last=True,
            seed=seed,
        )
        net = nn.Sequential(local, remote)
        result = train_defended(net, local, remote, [defender], train, test, (-1.0, 1.0), cfg)
        assert result.status == "ok" and 0 <= result.final_distance <= 2
        return _params(net, defender)

    a, b, c = run(1), run(1), run(2)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not all(torch.equal(p, q) for p, q in zip(a, c))


def _ddp_worker(rank: int, world: int, port: int, out: str, update: str) -> None:
    import os

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    net, local, remote = _net(dropout=0.0)
    defenders = [_defender(seed=1), _defender(seed=2)]
    cfg = TrainConfig(lam=0.5, epochs=2, batch_size=4, seed=0, update=update)
    result = train_defended(
        net,
        local,
        remote,
        defenders,
        _data(32),
        _data(8, seed=1),
        VR,
        cfg,
        wrap=DistributedDataParallel,
        shard=(rank, world),
    )
    torch.save(
        {"params": _params(net, *defenders), "counts": [r["best_defender_counts"] for r in result.epochs]},
        f"{out}/{rank}.pt",
    )
    dist.destroy_process_group()


@pytest.mark.parametrize("update", ["alternating", "simultaneous"])
def test_two_ddp_workers_equal_one_process_with_the_global_batch(tmp_path, update):
    """Two gloo workers with batch 4 each = one process with batch 8: the gradients are
    averaged by DDP and the defender choice is made on the global batch."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path), update), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"{r}.pt") for r in (0, 1)]
    assert ranks[0]["counts"] == ranks[1]["counts"]
    for a, b in zip(ranks[0]["params"], ranks[1]["params"]):
        assert torch.equal(a, b)

    net, local, remote = _net(dropout=0.0)
    defenders = [_defender(seed=1), _defender(seed=2)]
    single = train_defended(
        net,
        local,
        remote,
        defenders,
        _data(32),
        _data(8, seed=1),
        VR,
        TrainConfig(lam=0.5, epochs=2, batch_size=8, seed=0, update=update),
    )
    assert [r["best_defender_counts"] for r in single.epochs] == ranks[0]["counts"]
    for a, b in zip(ranks[0]["params"], _params(net, *defenders)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
