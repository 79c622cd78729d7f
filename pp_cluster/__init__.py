"""pp_cluster: a Ray-distributed sweep and attack farm for privacy-partitioned networks.

The science (``data``, ``nets``, ``privacy``) is plain PyTorch and never imports Ray;
the distribution layer lives in ``farm``. ``pp_cluster.load_model`` (``models``) loads a
trained model from a results root; it is imported on first use, so ``import pp_cluster``
stays light (the CLI's ``--help`` imports no torch).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"  # the one place: pyproject.toml reads it, pp-farm --version prints it
__all__ = ["__version__", "load_model"]


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from pp_cluster.models import load_model

        return load_model
    raise AttributeError(f"module 'pp_cluster' has no attribute {name!r}")
