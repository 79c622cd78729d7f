"""Table II of the paper: MNIST with no defender, a single defender and the 4-defender
suite of Appendix A (λ = 200; ours: 1 in the cpu profile), attacked by the 8 attackers.

  python sweeps/mnist_table2.py --quick
  python sweeps/mnist_table2.py --profile cpu --data-root DATA/mnist   # real MNIST, 3 seeds
  python sweeps/mnist_table2.py --data-root DATA/mnist
"""

import sys

from pp_cluster.cli import sweep_main

if __name__ == "__main__":
    sys.exit(sweep_main("mnist_table2", __doc__))
