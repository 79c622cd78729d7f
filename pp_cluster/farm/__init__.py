"""The distribution layer: Ray Train, Ray Tune, the attacker pool and the Parquet store."""
