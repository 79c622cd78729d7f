"""One filesystem abstraction for everything the farm writes: local/NFS paths and
``s3://`` (or any pyarrow filesystem URI) go through pyarrow's filesystem layer."""

from __future__ import annotations

from typing import Any

import pyarrow.fs as pafs


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def is_shared(uri: str) -> bool:
    """Storage every node sees: a remote URI, or a ``file://`` path the user declares shared
    (an NFS mount present at the same path on every node)."""
    return is_remote(uri) or uri.startswith("file://")


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI such as ``s3://bucket/prefix``.
    S3 honours ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3`` (pyarrow reads them), which is how
    tests point it at a local S3-compatible server."""
    if not is_remote(uri):
        return pafs.LocalFileSystem(), uri.removeprefix("file://")
    return pafs.FileSystem.from_uri(uri)


def storage_args(uri: str) -> dict[str, Any]:
    """Keyword arguments for ``ray.train.RunConfig`` / ``ray.tune.RunConfig``."""
    if not is_remote(uri):
        return {"storage_path": uri.removeprefix("file://")}
    fs, path = resolve(uri)
    return {"storage_path": path, "storage_filesystem": fs}
