"""Table I of the paper: the MNIST MLP split after its second layer, one defender,
λ ∈ {0, 100, …, 500} (ours in the cpu profile: 0-3, see docs/results_mnist.md), attacked by
the 8 attackers of Appendix A.

  python sweeps/mnist_table1.py --quick                  # embedded digits, minutes on a laptop
  python sweeps/mnist_table1.py --profile cpu --data-root DATA/mnist   # real MNIST, 3 seeds, 2 cores
  python sweeps/mnist_table1.py --data-root DATA/mnist
"""

import sys

from pp_cluster.cli import sweep_main

if __name__ == "__main__":
    sys.exit(sweep_main("mnist_table1", __doc__))
