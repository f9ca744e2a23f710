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

import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

FINISHED_STATUSES = ("completed", "diverged")
LEASE_FILE = "lease.json"


def make_runs_root(root: str | Path) -> Path:
    """The runs root, created private to the user when it does not exist: submitit's job
    pickles live under it, and a pickle another user could write runs their code as ours.
    A root that exists keeps the permissions its owner gave it."""
    root = Path(root).expanduser().absolute()
    if not root.exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        try:
            root.mkdir(mode=0o700)
        except FileExistsError:  # made by a concurrent launch
            pass
    return root


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

    Every line is a JSON object with an integer `step`. A line that is not is an error naming
    file:line, never silently dropped, except a final line without its newline: the write a
    crash interrupted, dropped on resume with a warning.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

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

    def append(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(_dumps(row) + "\n")
            f.flush()

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
        if not last:
            return rows, None
        try:
            return [*rows, self._row(len(lines) + 1, last)], None
        except MetricsError:
            return rows, last

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
