"""One writer per run dir (and per sweep launch): an exclusive lease with a heartbeat.

`flock` is not reliable on the shared filesystems clusters use (NFS, Lustre), so the lease is a
file that appears atomically and whole: its record (host, pid, start time, a random token, a
heartbeat) is written to a private temporary file, which is then hard-linked to `lease.json`;
the link fails if the name exists, atomically on NFS and Lustre too. So a `lease.json` that is
empty, torn or malformed was never a live holder's: it is stale and taken over at once. A
background thread renews the heartbeat (write a temporary file, rename it over the lease).
Another process may take the lease only when it is stale: unreadable, its heartbeat older than
`stale_s` (or further in the future than that: a clock cannot be trusted there), or its holder a
process on this same host that no longer exists (a SIGKILLed run can be restarted at once).
Taking a stale lease renames it away first, so of two processes that both see it stale only one
wins. Only the holder removes its lease.

A holder can lose its lease without knowing it: SLURM's suspend sends SIGSTOP, and a run stopped
longer than `stale_s` is taken over by a relaunch. When it continues, it must not write beside
its successor. So every write into a run dir is fenced (`fence`, with the token as the fencing
token): the writer proves it still holds the lease first, and once it has lost it raises
`LeaseLost` and writes nothing more. The proof is a read of `lease.json` just before the write;
a pause of more than `stale_s` that falls between that read and the write itself (microseconds)
is not caught here, and the metrics log refuses rows whose steps do not increase
(tasks/train/store.py) as a second line.

The heartbeat and stale times can be set for a cluster whose suspensions last longer
(`OPTBENCH_LEASE_STALE_S`, `OPTBENCH_LEASE_HEARTBEAT_S`; the heartbeat must be shorter).
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
MAX_PID = 2**22  # Linux's pid_max ceiling: a larger pid was never a process's


class LeaseHeld(RuntimeError):
    """Another live process holds the lease."""


class LeaseLost(RuntimeError):
    """This process held the lease and another took it over (it was paused, or silent, past the
    stale time): it must stop, writing nothing more where the new holder writes."""


def _seconds(variable: str, default: float) -> float:
    """A time in seconds from the environment, or `default`; a bad value is an error naming
    the variable (a lease that silently used another time would take over live runs)."""
    raw = os.environ.get(variable)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{variable} must be a number of seconds > 0, got {raw!r}")
    return value


def timing() -> tuple[float, float]:
    """(heartbeat, stale time) in seconds: the defaults, or the environment's."""
    heartbeat = _seconds("OPTBENCH_LEASE_HEARTBEAT_S", HEARTBEAT_S)
    stale = _seconds("OPTBENCH_LEASE_STALE_S", STALE_S)
    if heartbeat >= stale:
        raise ValueError(f"OPTBENCH_LEASE_HEARTBEAT_S ({heartbeat:g}) must be shorter than "
                         f"OPTBENCH_LEASE_STALE_S ({stale:g}): a live holder would look stale")
    return heartbeat, stale


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
        if not (math.isfinite(holder.started) and math.isfinite(holder.heartbeat)
                and 0 < holder.pid <= MAX_PID):
            return None
        return holder

    def is_live(self, stale_s: float | None = None) -> bool:
        """Whether this holder still holds the lease: judged by its heartbeat (never by when it
        started: a healthy run renews it for days), or on this host by its process."""
        if self.host == socket.gethostname() and not pid_alive(self.pid):
            return False
        return abs(time.time() - self.heartbeat) < (timing()[1] if stale_s is None else stale_s)

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
    def __init__(self, path: Path, what: str, heartbeat_s: float | None = None,
                 stale_s: float | None = None):
        self.path, self.what = Path(path), what
        default_heartbeat, default_stale = timing()
        self.heartbeat_s = default_heartbeat if heartbeat_s is None else heartbeat_s
        self.stale_s = default_stale if stale_s is None else stale_s
        self.token = uuid.uuid4().hex
        self.started = time.time()
        self._made: list[Path] = []  # folders made for the lease, removed with it if empty
        self._stop = threading.Event()
        self._lost = threading.Event()  # set once a takeover was seen: never cleared
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
        replaced it by a live lease in the meantime, or its holder renewed it (it was paused,
        not dead), that one is put back untouched."""
        moved = self.path.with_name(f"{self.path.name}.stale-{self.token}")
        try:
            os.replace(self.path, moved)
        except FileNotFoundError:
            return
        now = read(moved)
        if now is not None and (judged is None or now.token != judged.token
                                or now.heartbeat != judged.heartbeat):
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
                self._lost.set()
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

    def fence(self) -> None:
        """Prove this process still holds the lease, before a write; `LeaseLost` (naming the
        new holder) once it does not. A loss is final: the lease is never taken back."""
        if not self._lost.is_set():
            if self.held():
                return
            self._lost.set()
        holder = read(self.path)
        now = f"it is held by {holder.describe()}" if holder else "it is no longer held"
        raise LeaseLost(
            f"{self.what}: this process (pid {os.getpid()}) lost its lease, {now}; it was "
            f"paused or silent longer than {self.stale_s:.0f}s (a SLURM suspend, say) and "
            f"another process took the run over. Stopped without writing: the run continues "
            f"there ({self.path})")

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
