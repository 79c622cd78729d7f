"""One filesystem abstraction for everything the farm writes: local/NFS paths and
``s3://`` (or any pyarrow filesystem URI) go through pyarrow's filesystem layer.

Credentials never travel inside a URI past the driver's first line: ``strip_credentials``
moves ``s3://KEY:SECRET@bucket`` (or ``?access_key=…&secret_key=…``) into the environment
that pyarrow and every Ray worker read, and ``redact`` removes them from any text that is
printed. A remote store that does not answer fails within ``TIMEOUT_S`` naming its endpoint.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import pyarrow.fs as pafs

T = TypeVar("T")
# Seconds a remote store gets to answer the driver's first contact (resolving the URI and
# the write probe); pyarrow's own request timeout is ignored on Linux.
TIMEOUT_S = float(os.environ.get("PP_CLUSTER_STORE_TIMEOUT_S", "20"))
CONNECT_TIMEOUT_S = 5.0
_SECRET_PARAMS = ("access_key", "secret_key", "session_token")
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^@\s'\"]+@")  # over-redacts rather than leaks
_SECRET_QUERY = re.compile(r"((?:" + "|".join(_SECRET_PARAMS) + r")=)[^&\s'\"]+")
_ENV_OF = {"s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}


def redact(text: str) -> str:
    """``text`` with every URI's ``user:password@`` and secret query values replaced by ``***``."""
    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(r"\1***@", str(text)))


def strip_credentials(uri: str | None) -> tuple[str | None, dict[str, str]]:
    """(the URI without credentials, the environment variables that carry them instead).
    Only S3 has such variables; credentials in another scheme's URI are refused."""
    if uri is None or not is_remote(uri):
        return uri, {}
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    secrets = {k: v for k, v in query if k in _SECRET_PARAMS}
    if "@" in parts.netloc:
        userinfo, host = parts.netloc.rsplit("@", 1)
        key, _, secret = userinfo.partition(":")
        secrets.setdefault("access_key", unquote(key))
        if secret:
            secrets.setdefault("secret_key", unquote(secret))
    else:
        host = parts.netloc
    if not secrets:
        return uri, {}
    if parts.scheme not in _ENV_OF:
        raise ValueError(
            f"credentials in a {parts.scheme}:// URI ({redact(uri)}): give them through the "
            "environment instead"
        )
    names = dict(zip(_SECRET_PARAMS, _ENV_OF[parts.scheme]))
    env = {names[k]: v for k, v in secrets.items()}
    clean = urlunsplit(
        (
            parts.scheme,
            host,
            parts.path,
            urlencode([(k, v) for k, v in query if k not in secrets]),
            parts.fragment,
        )
    )
    return clean, env


def with_deadline(fn: Callable[[], T], what: str, seconds: float | None = None) -> T:
    """``fn()``, or OSError naming ``what`` when it has not returned within ``seconds``
    (the call is left to finish in a daemon thread: a store that never answers cannot hold
    the driver)."""
    seconds = TIMEOUT_S if seconds is None else seconds
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the caller
            box["error"] = e

    t = threading.Thread(target=run, name="pp-farm-store", daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise OSError(f"{what}: no answer within {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def endpoint(uri: str) -> str:
    """Which server a remote URI talks to, for error messages."""
    parts = urlsplit(uri)
    override = dict(parse_qsl(parts.query)).get("endpoint_override")
    env = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if override or (parts.scheme == "s3" and env):
        return f"endpoint {override or env}"
    return f"{parts.scheme} endpoint of bucket {parts.netloc.rsplit('@', 1)[-1]!r}"


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
    fs, path = with_deadline(lambda: pafs.FileSystem.from_uri(uri), f"{endpoint(uri)} ({redact(uri)})")
    if isinstance(fs, pafs.S3FileSystem):  # bounded connects (the SDK's retries stay)
        rebuild, (options,) = fs.__reduce__()
        fs = rebuild({**options, "connect_timeout": CONNECT_TIMEOUT_S})
    return fs, path


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


class CountingHandler(pafs.FileSystemHandler):
    """A filesystem that counts what is asked of it (listings, lookups, opens): how the tests
    and ``benchmarks/store_scale.py`` check that a reader's requests do not grow with a
    sweep. ``counting(fs)`` wraps ``fs``."""

    def __init__(self, fs: pafs.FileSystem) -> None:
        self.fs, self.calls = fs, {"list": 0, "info": 0, "open": 0}

    def get_type_name(self):
        return "counting"

    def normalize_path(self, path):
        return path

    def get_file_info(self, paths):
        self.calls["info"] += len(paths)
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        self.calls["list"] += 1
        return self.fs.get_file_info(selector)

    def open_input_file(self, path):
        self.calls["open"] += 1
        return self.fs.open_input_file(path)

    def open_input_stream(self, path):
        self.calls["open"] += 1
        return self.fs.open_input_stream(path)

    def create_dir(self, path, recursive):
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise NotImplementedError("not on a results root")

    def delete_file(self, path):
        self.fs.delete_file(path)

    def move(self, src, dest):
        self.fs.move(src, dest)

    def copy_file(self, src, dest):
        self.fs.copy_file(src, dest)

    def open_output_stream(self, path, metadata):
        return self.fs.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path, metadata):
        return self.fs.open_append_stream(path, metadata=metadata)


def counting(fs: pafs.FileSystem) -> tuple[pafs.FileSystem, dict[str, int]]:
    """``fs`` wrapped to count its listings, lookups and opens; returns it and the counters."""
    handler = CountingHandler(fs)
    return pafs.PyFileSystem(handler), handler.calls
