"""The paper's main experiment (Section V-C, Figure 5 a–e, Table III): LFW face identification
with the photo-to-id CNN, partitions pool1/pool2/pool3 × λ ∈ {0, 0.1}, attacked by the
deconv, fc and sparse-fc attackers.

  python sweeps/lfw_grid.py --quick                      # embedded LFW subset, minutes on a laptop
  python sweeps/lfw_grid.py --quick --dry-run            # its spec, grid and work; runs nothing
  python sweeps/lfw_grid.py --profile cpu --data-root DATA/lfw-deepfunneled     # the reference run
  python sweeps/lfw_grid.py --profile strong --data-root DATA/lfw-deepfunneled  # + white-box, tuned
  python sweeps/lfw_grid.py --data-root DATA/lfw-deepfunneled --results s3://bucket/pp --address auto
"""

import sys

from pp_cluster.cli import sweep_main

if __name__ == "__main__":
    sys.exit(sweep_main("lfw_grid", __doc__))
