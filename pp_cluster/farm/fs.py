"""One filesystem abstraction for everything the farm writes: local/NFS paths and
``s3://`` (or any pyarrow filesystem URI) go through pyarrow's filesystem layer."""

from __future__ import annotations

import uuid
from typing import Any, Callable

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


# Object stores: one PUT is atomic and a rename would be a copy, so no temp file; and no
# directories either: pyarrow's create_dir writes empty "dir/" marker objects there, which
# make fsspec's s3fs (pandas' storage_options=) fail to read the hive-partitioned tables.
SINGLE_PUT = {"s3", "gcs", "abfs"}


def single_put(fs: pafs.FileSystem) -> bool:
    return fs.type_name in SINGLE_PUT


def replace_file(fs: pafs.FileSystem, path: str, write: Callable[[str], None]) -> None:
    """Put a whole file at ``path`` in one step, so readers see the old file or the new one:
    ``write(p)`` writes it at ``p``. On an object store that is ``path`` itself (one PUT);
    elsewhere a temporary file beside it, renamed over it (rename(2) locally and on NFS)."""
    if single_put(fs):
        write(path)
        return
    directory, name = path.rsplit("/", 1)
    fs.create_dir(directory, recursive=True)
    tmp = f"{directory}/.{name}.tmp-{uuid.uuid4().hex}"
    try:
        write(tmp)
        fs.move(tmp, path)
    except BaseException:
        if fs.get_file_info(tmp).type == pafs.FileType.File:
            fs.delete_file(tmp)
        raise


def read_bytes(uri: str) -> bytes | None:
    """The whole file at ``uri``, or None when there is none."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return f.read()


def write_bytes(uri: str, data: bytes) -> None:
    """Replace the file at ``uri`` with ``data`` in one step (:func:`replace_file`)."""
    fs, path = resolve(uri)

    def write(p: str) -> None:
        with fs.open_output_stream(p) as f:
            f.write(data)

    replace_file(fs, path, write)
