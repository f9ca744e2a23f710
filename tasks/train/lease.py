"""One writer per run dir (and per sweep launch): an exclusive lease with a heartbeat.

`flock` is not reliable on the shared filesystems clusters use (NFS, Lustre), so the lease is a
file that appears atomically and whole: its record (host, pid, start time, a random token, a
heartbeat) is written to a private temporary file, which is then hard-linked to `lease.json`;
the link fails if the name exists, atomically on NFS and Lustre too. So a `lease.json` that is
empty, torn or malformed was never a live holder's: it is stale and taken over at once. A
background thread renews the heartbeat (write a temporary file, rename it over the lease).
Another process may take the lease only when it is stale: unreadable, its heartbeat older than
`stale_s`, or its holder a process on this same host that no longer exists (a SIGKILLed run can
be restarted at once). Taking a stale lease renames it away first, so of two processes that
both see it stale only one wins. Only the holder removes its lease.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

HEARTBEAT_S = 30.0
STALE_S = 180.0  # six missed heartbeats


class LeaseHeld(RuntimeError):
    """Another live process holds the lease."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def scheduler_job() -> str | None:
    """This process's SLURM job (array task included): a requeued job is the same job, so
    it may take over a lease its earlier, killed attempt left behind."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array:
        return f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID')}"
    return os.environ.get("SLURM_JOB_ID")


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, as its file says."""

    host: str
    pid: int
    token: str
    started: float
    heartbeat: float
    job: str | None = None

    @classmethod
    def parse(cls, record) -> Holder | None:
        """The holder a lease record names, or None when the record is not one (a lease file
        that was never written whole by this module: stale)."""
        if not isinstance(record, dict):
            return None
        try:
            holder = cls(host=str(record["host"]), pid=int(record["pid"]),
                         token=str(record["token"]), started=float(record["started"]),
                         heartbeat=float(record["heartbeat"]),
                         job=None if record.get("job") is None else str(record["job"]))
        except (KeyError, TypeError, ValueError):
            return None
        if not (math.isfinite(holder.started) and math.isfinite(holder.heartbeat)):
            return None
        return holder

    def is_live(self, stale_s: float = STALE_S) -> bool:
        """Whether this holder still holds the lease."""
        if self.host == socket.gethostname() and not pid_alive(self.pid):
            return False
        return time.time() - self.heartbeat < stale_s

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return (f"pid {self.pid} on {self.host} (since {started}, heartbeat "
                f"{time.time() - self.heartbeat:.0f}s ago)")


def read(path: Path) -> Holder | None:
    """The lease's holder; None when there is no lease or its file is not a whole record."""
    try:
        record = json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return Holder.parse(record)


class Lease:
    def __init__(self, path: Path, what: str, heartbeat_s: float = HEARTBEAT_S,
                 stale_s: float = STALE_S):
        self.path, self.what = Path(path), what
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        self.token = uuid.uuid4().hex
        self.started = time.time()
        self._made: list[Path] = []  # folders made for the lease, removed with it if empty
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> dict:
        now = time.time()
        return {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                "job": scheduler_job(), "started": self.started, "heartbeat": now}

    def acquire(self) -> "Lease":
        self._made = [p for p in [self.path.parent, *self.path.parent.parents]
                      if not p.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        for _ in range(3):
            if self._publish():
                self._thread = threading.Thread(target=self._beat, daemon=True,
                                                name=f"lease {self.path.name}")
                self._thread.start()
                return self
            holder = read(self.path)
            requeued = holder is not None and holder.job is not None \
                and holder.job == scheduler_job()
            if holder is not None and holder.is_live(self.stale_s) and not requeued:
                raise LeaseHeld(
                    f"{self.what} is in use by {holder.describe()}: {self.path}. Wait for it "
                    f"to end, or stop it; a lease without heartbeat for {self.stale_s:.0f}s "
                    f"is taken over") from None
            self._break_stale(holder)  # unreadable, dead or silent: stale
        raise LeaseHeld(f"could not take the lease {self.path} (contended); try again")

    def _publish(self) -> bool:
        """Write our record whole, then link it into place; False if a lease exists. A full
        disk raises OSError and leaves no lease file behind."""
        tmp = self.path.with_name(f".{self.path.name}.{self.token}")
        try:
            with open(tmp, "w") as f:
                json.dump(self._record(), f)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                return False
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def _break_stale(self, judged: Holder | None) -> None:
        """Rename the stale lease (the one judged, `judged`) away. Should another process have
        replaced it by a live lease in the meantime, that one is put back untouched."""
        moved = self.path.with_name(f"{self.path.name}.stale-{self.token}")
        try:
            os.replace(self.path, moved)
        except FileNotFoundError:
            return
        now = read(moved)
        if now is not None and (judged is None or now.token != judged.token):
            try:  # not the lease we judged: restore it unless a newer one appeared
                os.link(moved, self.path)
            except FileExistsError:
                pass
        moved.unlink(missing_ok=True)
        for old in self.path.parent.glob(f"{self.path.name}.stale-*"):
            old.unlink(missing_ok=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self.held():
                return  # taken over after we stalled: never write over another holder
            tmp = self.path.with_name(f".{self.path.name}.{self.token}")
            try:
                tmp.write_text(json.dumps(self._record()))
                os.replace(tmp, self.path)
            except OSError:  # a full disk: the lease stands as it is; try again next beat
                tmp.unlink(missing_ok=True)

    def held(self) -> bool:
        holder = read(self.path)
        return holder is not None and holder.token == self.token

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.held():
            self.path.unlink(missing_ok=True)
        for folder in self._made:  # innermost first
            try:
                folder.rmdir()
            except OSError:  # not empty: something else lives there now
                break

    def __enter__(self) -> "Lease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
