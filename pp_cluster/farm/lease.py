"""One driver per (results root, sweep): a lease file with its holder and a heartbeat.

``<results>/_sweeps/<name>/lease.json`` names the driver that runs the sweep (host, pid, a
random token, when it started) and a heartbeat the holder rewrites every ``ttl/4`` seconds.
A second driver is refused with who holds the lease. A lease is stale, and taken over, when
its heartbeat is older than ``ttl`` (a holder that died on another machine, or lost its
network), or at once when its holder ran on this host and that process is gone.

The same file works on a local disk, NFS and an object store. Taking a free lease is an
exclusive create on local disks and NFS (``O_EXCL``); object stores have no exclusive create
through pyarrow, so there the driver writes its lease and reads it back: of two drivers
started within the same second both may read their own write back only if the store is
not read-after-write consistent (S3 is), which is the remaining window. Heartbeats compare
the holder's clock with the reader's: clocks must agree to well under ``ttl``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from pp_cluster.config import SpecError
from pp_cluster.results.fs import read_bytes, redact, resolve, write_bytes

LEASE = "lease.json"
TTL_S = 120.0


class LeaseHeld(SpecError):
    """Another live driver runs this sweep."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def stale(holder: dict, now: float | None = None) -> str | None:
    """Why ``holder``'s lease may be taken over, or None while it is live."""
    now = time.time() if now is None else now
    age = now - float(holder.get("heartbeat", 0))
    if holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", -1))):
        return f"its holder (pid {holder.get('pid')} on this host) is gone"
    if age > float(holder.get("ttl_s", TTL_S)):
        return f"its heartbeat is {age:.0f} s old (ttl {holder.get('ttl_s', TTL_S):g} s)"
    return None


def describe(holder: dict, now: float | None = None) -> str:
    now = time.time() if now is None else now
    return (
        f"host {holder.get('host')!r} pid {holder.get('pid')} since {holder.get('started_at')} "
        f"(heartbeat {now - float(holder.get('heartbeat', 0)):.0f} s ago)"
    )


@dataclass
class Lease:
    """A held lease; ``release()`` (or the context manager's exit) gives it back."""

    uri: str
    ttl_s: float = TTL_S
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    started_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    lost: str | None = None  # set when another driver took the lease over from under us

    @classmethod
    def acquire(cls, sweep_dir: str, sweep: str, ttl_s: float = TTL_S) -> Lease:
        """Take the sweep's lease or raise LeaseHeld naming its live holder."""
        lease = cls(f"{sweep_dir.rstrip('/')}/{LEASE}", ttl_s)
        raw = read_bytes(lease.uri)
        if raw is not None:
            try:
                holder = json.loads(raw)
            except ValueError:
                holder = {}  # a torn or foreign file: no live holder can be named
            why = stale(holder) if holder else "it is unreadable"
            if why is None:
                raise LeaseHeld(
                    f"sweep {sweep!r} is being run by another driver: {describe(holder)}; its lease "
                    f"is {redact(lease.uri)} (taken over automatically once that driver is gone, "
                    f"or {ttl_s:g} s after its last heartbeat)"
                )
            print(f"[pp-farm] taking over the lease of sweep {sweep!r}: {why}", file=sys.stderr)
            lease._write()
        elif not lease._create():
            return cls.acquire(sweep_dir, sweep, ttl_s)  # someone created it just now: look again
        if lease._holder_token() != lease.token:
            holder = json.loads(read_bytes(lease.uri) or b"{}")
            raise LeaseHeld(
                f"sweep {sweep!r}: another driver took its lease at the same moment: {describe(holder)}"
            )
        lease._thread = threading.Thread(target=lease._beat, name="pp-farm-lease", daemon=True)
        lease._thread.start()
        return lease

    def _body(self) -> bytes:
        return json.dumps(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "token": self.token,
                "started_at": self.started_at,
                "heartbeat": time.time(),
                "ttl_s": self.ttl_s,
            }
        ).encode()

    def _write(self) -> None:
        write_bytes(self.uri, self._body())

    def _create(self) -> bool:
        """Exclusive create where the filesystem has one; False if the file appeared meanwhile."""
        fs, path = resolve(self.uri)
        if not isinstance(fs, pafs.LocalFileSystem):
            self._write()
            return True
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(self._body())
        return True

    def _holder_token(self) -> str | None:
        raw = read_bytes(self.uri)
        try:
            return json.loads(raw).get("token") if raw else None
        except ValueError:
            return None

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                token = self._holder_token()
                if token != self.token:
                    self.lost = "another driver took the lease over"
                    print(
                        f"[pp-farm] warning: {self.lost} ({redact(self.uri)}); two drivers may now run this "
                        "sweep",
                        file=sys.stderr,
                    )
                    return
                self._write()
            except OSError as e:  # a storage hiccup: try again at the next beat
                print(f"[pp-farm] warning: lease heartbeat failed: {redact(str(e))}", file=sys.stderr)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            if self._holder_token() == self.token:
                fs, path = resolve(self.uri)
                fs.delete_file(path)
        except OSError:
            pass  # a lease left behind goes stale; the next driver takes it over

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
