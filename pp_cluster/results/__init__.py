"""The results contract, shared by the farm that writes it and the analysts who read it.

- ``fs``: one filesystem layer (local, NFS, ``s3://``), credentials kept out of URIs;
- ``store``: the Parquet tables, their schemas (``docs/schema.md`` is generated from them),
  provenance, and ``ResultStore`` that reads and writes them;
- ``rows``: one builder per table row, from what training and attacks return;
- ``rules``: the rules every consumer shares: which rows succeeded, which attackers are
  baselines, the strongest attacker per metric, the Pareto set.

No Ray here: results are read without a cluster.
"""
