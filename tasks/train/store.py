"""The on-disk results store: atomic writes, summaries and the metrics log of a run dir.

The run dir is derived from the run key (tasks/train/identity.py), never from a timestamp, so
a requeued or re-launched job finds its own checkpoint.

    <runs_root>/<task>/<optim>/<key>/
        lease.json      held by the one process writing the run (tasks/train/lease.py)
        config.yaml     resolved config (written at start)
        env.json        commit, versions and device of each attempt
        metrics.jsonl   one JSON object per log step
        summary.json    written last; its presence means the run ended
        ckpt.pt         model + optimizer + scheduler + step + tracker + RNG states, with
                        ckpt.pt.sha256 and the previous pair ckpt.prev.pt(.sha256)
        error.txt       a failed run's root cause, then its traceback
"""

from __future__ import annotations

import contextlib
import getpass
import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

from tasks.train.errors import ConfigError

FINISHED_STATUSES = ("completed", "diverged")
LEASE_FILE = "lease.json"


def make_runs_root(root: str | Path) -> Path:
    """The runs root, created private to the user when it does not exist: submitit's job
    pickles live under it, and a pickle another user could write runs their code as ours.
    A root that exists keeps the permissions its owner gave it, unless other users can write
    into it (a shared 0777 folder): that one is refused, naming the fix."""
    root = Path(root).expanduser().absolute()
    if not root.exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        try:
            root.mkdir(mode=0o700)
        except FileExistsError:  # made by a concurrent launch
            pass
    mode = root.stat().st_mode
    if mode & 0o022:
        raise ConfigError(
            f"runs_root {root} can be written by other users (mode {oct(mode & 0o7777)}): "
            f"submitit's job pickles live there, and a pickle another user swaps in runs their "
            f"code as you. Use a folder only you can write: runs_root={root}/{_user_name()} (made "
            f"private), or `chmod go-w {root}`")
    return root


def _user_name() -> str:
    """This user's name, for a private folder's suggested name."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "$USER"


# ---------------------------------------------------------------- fenced writes

# {run dir: the check its writer must pass before each write}: the run's lease holder proves it
# still holds the lease (tasks/train/lease.py `Lease.fence`). Every write of this module into a
# fenced folder checks first, so a process that lost its run dir to another writes nothing more.
_FENCES: dict[Path, Callable[[], None]] = {}


@contextlib.contextmanager
def fenced(folder: Path, check: Callable[[], None]) -> Iterator[None]:
    """While inside, every write into `folder` (atomic writes, metrics rows, checkpoints)
    calls `check` first, which raises to stop the write."""
    folder = Path(folder).absolute()
    _FENCES[folder] = check
    try:
        yield
    finally:
        _FENCES.pop(folder, None)


def prove_writer(path: Path) -> None:
    """The fence of the folder `path` is in, if it has one: raises when this process may no
    longer write there."""
    check = _FENCES.get(Path(path).absolute().parent)
    if check is not None:
        check()


# ---------------------------------------------------------------- atomic writes

TEMP_SUFFIX = ".tmp"  # what an interrupted write leaves behind: `.<name>.<random>.tmp`


def remove_leftovers(folder: Path) -> list[Path]:
    """Remove the temporary files of writes a crash interrupted (a checkpoint's is gigabytes
    at paper scale). Only for a run dir whose lease the caller holds: no live writer owns
    them then. Returns what was removed."""
    removed = []
    for leftover in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed



def atomic_write(path: Path, write) -> None:
    """Write `path` through `write(file)` into a temporary file, fsync, then rename it into
    place: readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; results are meant to be shared
        prove_writer(path)  # the moment the write becomes visible
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(Path(path), lambda f: f.write(text.encode()))


def strict(obj: Any) -> Any:
    """`obj` with every non-finite float as None: strict JSON has no NaN or Infinity."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj


def _dumps(obj: Any, **kwargs) -> str:
    return json.dumps(strict(obj), allow_nan=False, default=str, **kwargs)


def write_json(path: Path, obj: Any) -> None:
    write_text(path, _dumps(obj, indent=2, sort_keys=True) + "\n")


class CorruptFile(ValueError):
    """A results file that exists but cannot be read."""


def read_json(path: Path) -> Any | None:
    """The file's JSON, None if it does not exist; CorruptFile (naming it) if unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptFile(f"{path} is not valid JSON ({e}); move it aside or delete it") from None


def read_summary(rdir: Path) -> dict | None:
    return read_json(Path(rdir) / "summary.json")


def is_finished(rdir: Path) -> bool:
    summary = read_summary(rdir)
    return summary is not None and summary.get("status") in FINISHED_STATUSES


# ---------------------------------------------------------------- metrics log


class MetricsError(ValueError):
    """metrics.jsonl holds a line that is not a metrics row."""


class MetricsLog:
    """Append-only `metrics.jsonl`, truncated back to the checkpoint step on resume.

    Every line is a JSON object with an integer `step`, steps strictly increasing. A line that
    is not is an error naming file:line, never silently dropped, except a final line without
    its newline: the write a crash interrupted, dropped on resume with a warning.

    One process writes it (its run's lease holder), and appends are fenced (`prove_writer`).
    As a second line against a writer that lost its lease between its proof and its write, the
    log knows the file's size after its own last write: bytes found beyond it were appended by
    another process and are cut off again, with a warning; and a row whose step does not exceed
    the file's last is refused.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._size: int | None = None  # the file's size after this process's last write

    def truncate_after(self, step: int, logged_step: int = 0) -> None:
        """Drop rows logged after `step` (written after the checkpoint we resume from); the
        checkpoint says its last row was logged at `logged_step`, and that row must be here."""
        rows, torn = self.read_with_tail()
        if torn is not None:
            warnings.warn(f"{self.path}:{len(rows) + 1}: dropped a torn final line (a write "
                          f"interrupted by a crash): {torn[:80]!r}")
        if logged_step and not any(r["step"] == logged_step for r in rows):
            raise MetricsError(
                f"{self.path} lacks the row of step {logged_step}, which the checkpoint of "
                f"step {step} covers (the file was deleted or cut short): the run's curves "
                f"would have a hole. Restore the file, or remove the run dir "
                f"{self.path.parent} to train the run again from step 0")
        write_text(self.path, "".join(_dumps(r) + "\n" for r in rows if r["step"] <= step))
        self._size = self.path.stat().st_size

    def append(self, row: dict) -> None:
        prove_writer(self.path)
        self._cut_foreign_rows()
        last = self.last_step()
        if last is not None and row["step"] <= last:
            raise MetricsError(
                f"{self.path}: refusing a row of step {row['step']} after one of step {last}: "
                f"steps must increase (another process wrote this run's metrics?). Nothing was "
                f"appended")
        with open(self.path, "a") as f:
            f.write(_dumps(row) + "\n")
            f.flush()
            if self._size is not None:
                self._size = f.tell()

    def _cut_foreign_rows(self) -> None:
        """Cut off what another process appended after this one's last write."""
        if self._size is None or not self.path.is_file():
            return
        size = self.path.stat().st_size
        if size > self._size:
            warnings.warn(f"{self.path}: cut {size - self._size} bytes of rows that another "
                          f"process appended after this one's last row (a writer that had lost "
                          f"its lease); the run's own rows are kept")
            os.truncate(self.path, self._size)
        elif size < self._size:
            raise MetricsError(f"{self.path} was cut short by another process ({size} bytes, "
                               f"{self._size} written here): two writers in one run dir")

    def last_step(self) -> int | None:
        """The step of the file's last whole row (None for an empty or missing file), read
        from its end: an append costs the same at step 10 and at step 10^6."""
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - 65536))
                tail = f.read().decode(errors="replace")
        except FileNotFoundError:
            return None
        for line in reversed(tail.split("\n")):
            try:
                step = json.loads(line).get("step")
            except (json.JSONDecodeError, AttributeError):
                continue  # a torn line (the resume drops it), or a cut at the window's start
            if isinstance(step, int):
                return step
        return None

    def sync(self) -> None:
        """Make every appended row durable (before a checkpoint that covers them)."""
        if self.path.exists():
            with open(self.path, "a") as f:
                os.fsync(f.fileno())

    def read(self) -> list[dict]:
        return self.read_with_tail()[0]

    def read_with_tail(self) -> tuple[list[dict], str | None]:
        """(rows, the torn final line or None)."""
        if not self.path.exists():
            return [], None
        lines = self.path.read_text().split("\n")
        last = lines.pop()  # "" when the file ends with a newline
        rows = [self._row(i, line) for i, line in enumerate(lines, 1)]
        torn = None
        if last:
            try:
                rows.append(self._row(len(lines) + 1, last))
            except MetricsError:
                torn = last
        for number, (before, row) in enumerate(zip(rows, rows[1:]), 2):
            if row["step"] <= before["step"]:
                raise MetricsError(
                    f"{self.path}:{number}: step {row['step']} after step {before['step']}: "
                    f"steps must increase (two processes wrote this run's metrics?); the run "
                    f"cannot be trusted as it is: remove its run dir {self.path.parent} to "
                    f"train it again")
        return rows, torn

    def _row(self, number: int, line: str) -> dict:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise MetricsError(f"{self.path}:{number}: not JSON ({e.msg}): {line[:80]!r}; "
                               f"fix or delete the line") from None
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise MetricsError(f"{self.path}:{number}: not a metrics row (a JSON object with "
                               f"an integer step): {line[:80]!r}; fix or delete the line")
        return row
