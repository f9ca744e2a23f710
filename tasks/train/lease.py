"""One writer per run dir (and per sweep launch): an exclusive lease with a heartbeat.

`flock` is not reliable on the shared filesystems clusters use (NFS, Lustre), so the lease is a
file created with O_CREAT | O_EXCL, which those filesystems make atomic. It names its holder
(host, pid, start time, a random token) and carries a heartbeat that a background thread
renews. Another process may take the lease only when it is stale: its heartbeat is older than
`stale_s`, or its holder is a process on this same host that no longer exists (a SIGKILLed
run can be restarted at once). Taking a stale lease renames it away first, so of two
processes that both see it stale only one wins. Only the holder removes its lease.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
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


def read(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def is_live(holder: dict | None, stale_s: float = STALE_S) -> bool:
    """Whether the holder described by a lease file still holds it."""
    if not holder:
        return False
    if holder.get("host") == socket.gethostname() and not pid_alive(int(holder.get("pid", -1))):
        return False
    return time.time() - float(holder.get("heartbeat", 0)) < stale_s


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
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read(self.path)
                if holder is None and self.path.exists() and \
                        time.time() - self.path.stat().st_mtime < self.stale_s:
                    time.sleep(0.2)  # being written by its holder right now
                    continue
                requeued = holder and holder.get("job") and holder["job"] == scheduler_job()
                if is_live(holder, self.stale_s) and not requeued:
                    started = time.strftime("%Y-%m-%d %H:%M:%S",
                                            time.localtime(holder.get("started", 0)))
                    raise LeaseHeld(
                        f"{self.what} is in use by pid {holder.get('pid')} on "
                        f"{holder.get('host')} (since {started}, heartbeat "
                        f"{time.time() - holder.get('heartbeat', 0):.0f}s ago): {self.path}. "
                        f"Wait for it to end, or stop it; a lease without heartbeat for "
                        f"{self.stale_s:.0f}s is taken over") from None
                self._break_stale()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self._record(), f)
                f.flush()
                os.fsync(f.fileno())
            self._thread = threading.Thread(target=self._beat, daemon=True,
                                            name=f"lease {self.path.name}")
            self._thread.start()
            return self
        raise LeaseHeld(f"could not take the lease {self.path} (contended); try again")

    def _break_stale(self) -> None:
        """Rename the stale lease away; only one of several contenders succeeds."""
        try:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.stale-{self.token}"))
        except FileNotFoundError:
            return
        for old in self.path.parent.glob(f"{self.path.name}.stale-*"):
            old.unlink(missing_ok=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self.held():
                return  # taken over after we stalled: never write over another holder
            tmp = self.path.with_name(f".{self.path.name}.{self.token}")
            tmp.write_text(json.dumps(self._record()))
            os.replace(tmp, self.path)

    def held(self) -> bool:
        return (read(self.path) or {}).get("token") == self.token

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
