"""Table II of the paper: MNIST with no defender, a single defender and the 4-defender
suite of Appendix A (λ = 200), attacked by the 8 attackers.

  python sweeps/mnist_table2.py --quick
  python sweeps/mnist_table2.py --data-root DATA/mnist
"""

import sys

from pp_cluster.cli import sweep_main
from pp_cluster.profiles import MNIST_TABLE2, MNIST_TABLE2_QUICK

if __name__ == "__main__":
    sys.exit(sweep_main(MNIST_TABLE2, MNIST_TABLE2_QUICK, __doc__))
