"""Figure 5 f–j of the paper: CIFAR-10 with batch-normalised VGG-19, partitions
pool1/pool2/pool3 × λ ∈ {0, 0.1}; several GPU workers per model (DDP) with --num-workers.

  python sweeps/cifar_vgg.py --quick --data-root DATA/cifar10
  python sweeps/cifar_vgg.py --profile cpu --data-root DATA/cifar10     # 2 cores, quarter widths
  python sweeps/cifar_vgg.py --data-root DATA/cifar-10-batches-py --num-workers 4 --gpu --address auto
"""

import sys

from pp_cluster.cli import sweep_main

if __name__ == "__main__":
    sys.exit(sweep_main("cifar_vgg", __doc__))
