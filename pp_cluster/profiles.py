"""The sweeps of the paper, each as (paper profile, quick CPU profile).

The paper profiles follow its Section V and Appendices A–C. The quick profiles run in
minutes on a 2-core laptop on the embedded data sets; their λ values were chosen from
measurements at their own short budgets (the paper's λ belong to 250–500 epochs).
"""

from __future__ import annotations

from pp_cluster.config import SweepSpec

MNIST_ATTACKERS = tuple(f"mnist_a{i}" for i in range(1, 9))
MNIST_DEFENDERS = tuple(f"mnist_d{i}" for i in range(1, 5))
# The paper's single MNIST defender is "a two-layer ReLU-based neural network": attacker ①'s shape.
MNIST_SINGLE = ("mnist_a1",)

LFW_GRID = SweepSpec(
    name="lfw_grid", dataset="lfw", dataset_options={"min_faces": 30, "size": 64}, arch="face_cnn",
    partitions=("pool1", "pool2", "pool3"), lams=(0.0, 0.1), defender_suites=(("deconv",),),
    attackers=("deconv", "fc", "sparse_fc"), seeds=(0,), epochs=250, batch_size=32, attack_epochs=50,
)
LFW_GRID_QUICK = LFW_GRID.with_(
    name="lfw_grid_quick", dataset="lfw-subset", dataset_options={"size": 32},
    arch_options={"widths": (16, 32, 64, 128), "fc": 128}, lams=(0.0, 1.0), epochs=8, attack_epochs=10,
)

MNIST_TABLE1 = SweepSpec(
    name="mnist_table1", dataset="mnist", arch="mnist_mlp", partitions=("fc2",),
    lams=(0.0, 100.0, 200.0, 300.0, 400.0, 500.0), defender_suites=(MNIST_SINGLE,),
    attackers=MNIST_ATTACKERS, seeds=(0,), epochs=500, batch_size=32, attack_epochs=50,
)
MNIST_TABLE1_QUICK = MNIST_TABLE1.with_(
    name="mnist_table1_quick", dataset="digits", lams=(0.0, 1.0, 10.0), epochs=5, attack_epochs=10,
)

MNIST_TABLE2 = MNIST_TABLE1.with_(
    name="mnist_table2", lams=(0.0, 200.0), defender_suites=(MNIST_SINGLE, MNIST_DEFENDERS),
)
MNIST_TABLE2_QUICK = MNIST_TABLE2.with_(
    name="mnist_table2_quick", dataset="digits", lams=(0.0, 10.0), epochs=5, attack_epochs=10,
)

CIFAR_VGG = SweepSpec(
    name="cifar_vgg", dataset="cifar10", arch="vgg19_bn", partitions=("pool1", "pool2", "pool3"),
    lams=(0.0, 0.1), defender_suites=(("deconv",),), attackers=("deconv", "fc", "sparse_fc"),
    seeds=(0,), epochs=150, batch_size=128, attack_epochs=30,
)
CIFAR_VGG_QUICK = CIFAR_VGG.with_(
    name="cifar_vgg_quick", arch_options={"width_mult": 0.125}, epochs=2, attack_epochs=3,
    dataset_options={"limit_train": 2000},
)

PROFILES: dict[str, tuple[SweepSpec, SweepSpec]] = {
    "lfw_grid": (LFW_GRID, LFW_GRID_QUICK),
    "mnist_table1": (MNIST_TABLE1, MNIST_TABLE1_QUICK),
    "mnist_table2": (MNIST_TABLE2, MNIST_TABLE2_QUICK),
    "cifar_vgg": (CIFAR_VGG, CIFAR_VGG_QUICK),
}
