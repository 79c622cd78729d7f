"""pp_cluster: a Ray-distributed sweep and attack farm for privacy-partitioned networks.

The science (``data``, ``nets``, ``privacy``) is plain PyTorch and never imports Ray;
the distribution layer lives in ``farm``.
"""

__version__ = "0.1.0"
