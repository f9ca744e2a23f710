"""A rendered table's run records: the compact trace of every run it was rendered from,
committed beside the table as results/<table>/<scale>/records.json.gz.

The file holds what rendering reads and nothing else: the table's provenance (command, commit,
machine, date), the extra overrides and final lr grids it ran with, and for every run its
overrides, summary and metric curves (metrics.jsonl). `materialize` writes those back as run
dirs, so `reproduce.py TABLE --render-only` renders the committed table again, byte for byte,
on a machine that never ran it. The gzip stream carries no timestamp, so the same runs give the
same bytes.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

from tasks.train import store

RECORDS_FILE = "records.json.gz"
FORMAT = 1


def build(runs, run_dirs: dict[int, Path], provenance: dict, extra: list[str],
          grids: dict[str, list[float]], allow_mixed: bool) -> dict:
    """The records of a table's runs (`runs[i]` ran in `run_dirs[i]`)."""
    entries = []
    for i, run in enumerate(runs):
        rdir = Path(run_dirs[i])
        entries.append({"row": run.row.label, "overrides": run.overrides,
                        "summary": store.read_summary(rdir),
                        "metrics": store.MetricsLog(rdir / "metrics.jsonl").read()})
    return {"format": FORMAT, "provenance": provenance, "extra": list(extra), "grids": grids,
            "allow_mixed": allow_mixed, "runs": entries}


def write(out: Path, records: dict) -> Path:
    path = Path(out) / RECORDS_FILE
    # Python's JSON: a NaN loss a run logged stays NaN, so the figures redraw it the same way
    blob = json.dumps(records, separators=(",", ":")).encode()  # key order kept: it is shown
    store.atomic_write(path, lambda f: f.write(gzip.compress(blob, compresslevel=9, mtime=0)))
    return path


class RecordsError(ValueError):
    """A records file that cannot be read, or a run in it that is not a run record."""


def read(out: Path) -> dict:
    """The records of results/<table>/<scale>/ (`out`), checked: every error names the file,
    and for a bad run its index, row and field."""
    path = Path(out) / RECORDS_FILE
    if not path.exists():
        raise RecordsError(f"no run records at {path}: render-only needs a table rendered by "
                           f"this version of reproduce.py (it writes {RECORDS_FILE})")
    try:
        records = json.loads(gzip.decompress(path.read_bytes()))
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise RecordsError(f"{path} is not a whole gzip file ({e}): truncated or damaged; "
                           f"restore it from git") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecordsError(f"{path} does not hold JSON ({e}); restore it from git") from None
    if not isinstance(records, dict) or records.get("format") != FORMAT:
        found = records.get("format") if isinstance(records, dict) else type(records).__name__
        raise RecordsError(f"{path}: records format {found!r}, this code reads {FORMAT}")
    for key, kind in (("provenance", dict), ("extra", list), ("grids", dict), ("runs", list)):
        if not isinstance(records.get(key), kind):
            raise RecordsError(f"{path}: field {key!r} must be a {kind.__name__}, got "
                               f"{type(records.get(key)).__name__}")
    for i, entry in enumerate(records["runs"]):
        _check_entry(path, i, entry)
    return records


def _check_entry(path: Path, i: int, entry) -> None:
    def bad(field: str, why: str):
        row = entry.get("row") if isinstance(entry, dict) else None
        return RecordsError(f"{path}: run {i} ({row or 'no row'}): {field} {why}")

    if not isinstance(entry, dict):
        raise bad("the record", f"is a {type(entry).__name__}, not an object")
    if not isinstance(entry.get("row"), str):
        raise bad("row", "must be the row's label")
    overrides = entry.get("overrides")
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise bad("overrides", "must be a list of override strings")
    summary = entry.get("summary")
    if summary is not None and not (isinstance(summary, dict) and summary.get("status") in
                                    ("completed", "diverged", "failed")):
        raise bad("summary", "must be null or a summary with a status (completed, diverged, "
                             "failed)")
    metrics = entry.get("metrics")
    if not isinstance(metrics, list):
        raise bad("metrics", "must be a list of metrics rows")
    for j, row in enumerate(metrics):
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise bad(f"metrics[{j}]", "must be an object with an integer step")


def materialize(records: dict, root: Path) -> dict[int, Path]:
    """Write each recorded run as a run dir under `root` (summary.json, metrics.jsonl);
    {run index: its dir}. A run that never wrote a summary gets none."""
    dirs = {}
    for i, entry in enumerate(records["runs"]):
        rdir = Path(root) / f"run{i:04d}"
        rdir.mkdir(parents=True, exist_ok=True)
        if entry["summary"] is not None:
            store.write_json(rdir / "summary.json", entry["summary"])
        (rdir / "metrics.jsonl").write_text(
            "".join(json.dumps(row) + "\n" for row in entry["metrics"]))
        dirs[i] = rdir
    return dirs
