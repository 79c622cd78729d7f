"""One filesystem abstraction for everything the farm writes: local/NFS paths and
``s3://`` (or any pyarrow filesystem URI) go through pyarrow's filesystem layer."""

from __future__ import annotations

import uuid
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


def read_bytes(uri: str) -> bytes | None:
    """The whole file at ``uri``, or None when there is none."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return f.read()


def write_bytes(uri: str, data: bytes) -> None:
    """Replace the file at ``uri`` in one step: readers see the old bytes or the new ones.
    Local and NFS paths write a temporary file and rename it; an object store's PUT is
    atomic by itself (and has no directories to create)."""
    fs, path = resolve(uri)
    if is_remote(uri):
        with fs.open_output_stream(path) as f:
            f.write(data)
        return
    directory = path.rsplit("/", 1)[0]
    fs.create_dir(directory, recursive=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with fs.open_output_stream(tmp) as f:
            f.write(data)
        fs.move(tmp, path)
    except BaseException:
        if fs.get_file_info(tmp).type == pafs.FileType.File:
            fs.delete_file(tmp)
        raise
