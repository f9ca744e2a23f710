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


def read(out: Path) -> dict:
    path = Path(out) / RECORDS_FILE
    if not path.exists():
        raise ValueError(f"no run records at {path}: render-only needs a table rendered by "
                         f"this version of reproduce.py (it writes {RECORDS_FILE})")
    records = json.loads(gzip.decompress(path.read_bytes()))
    if records.get("format") != FORMAT:
        raise ValueError(f"{path}: records format {records.get('format')!r}, this code reads "
                         f"{FORMAT}")
    return records


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
