"""A table's run records: every run it was rendered from, as typed records, committed beside the
table as results/<table>/<scale>/records.json.gz.

A `RunRecord` holds what rendering reads of a run and nothing else: its row, its overrides, its
summary and its metric curves. Records are built once from the run dirs when a table's runs have
ended (`from_run_dirs`, the one place the pipeline reads run dirs); collecting, deciding and
rendering then take records, so `reproduce.py TABLE --render-only` renders straight from the
committed file, on a machine that never ran the table. The gzip stream carries no timestamp,
so the same runs give the same bytes.
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

from tasks.train import store

RECORDS_FILE = "records.json.gz"
FORMAT = 1
STATUSES = ("completed", "diverged", "failed")


class RecordsError(ValueError):
    """A records file that cannot be read, or a run in it that is not a run record."""


def summary_value(summary: dict | None, dotted: str):
    """`summary["a"]["b"]` for "a.b", None where any part is missing."""
    value = summary
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


@dataclass(frozen=True)
class RunRecord:
    """One run of a table: what rendering reads of it."""

    row: str  # the row's label
    overrides: tuple[str, ...]
    summary: dict | None  # summary.json; None for a run that never wrote one
    metrics: tuple[dict, ...]  # metrics.jsonl, one row per log step
    where: str = ""  # the run dir, or the records file and index: what errors name

    @property
    def status(self) -> str | None:
        return (self.summary or {}).get("status")

    def get(self, dotted: str):
        return summary_value(self.summary, dotted)

    def metric(self, key: str) -> float | None:
        """The table's metric of a completed run (None for a run that did not complete). A
        completed run without it is an error naming the run: shown as "–" it would read as a
        diverged seed."""
        if self.status != "completed":
            return None
        return self._number(key, f"a completed run without the table's metric {key!r}",
                            "; was it made by another task or an older version?")

    def divergence_count(self, key: str) -> float:
        """A diverged run's count of events (`key`, e.g. spikes.spike_count) plus one, the
        divergence itself: the run recorded its count up to the step it diverged at."""
        return self._number(key, f"a diverged run without its count {key!r} so far") + 1

    def _number(self, key: str, missing: str, hint: str = "") -> float:
        value = self.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise RecordsError(f"{self.where} ({self.row}, "
                               + " ".join(o for o in self.overrides
                                          if o.startswith(("optim.lr=", "seed=")))
                               + f"): {missing} (got {value!r}){hint}")
        return value

    def loss_curve(self) -> tuple[list[int], list[float]]:
        rows = [x for x in self.metrics if "loss" in x]
        return [x["step"] for x in rows], [x["loss"] for x in rows]

    def to_json(self) -> dict:
        return {"row": self.row, "overrides": list(self.overrides), "summary": self.summary,
                "metrics": list(self.metrics)}


@dataclass(frozen=True)
class Certificate:
    """The runs of one (task, optimizer) of a table, made by code at `made_at` (their records'
    code version), compute the same numbers at `now` (a later version, whose edits changed no
    number): one of them, `row` at `overrides`, was run again at `now` as run `run_key` and
    matched its record bit for bit (sweeps/freshness.py). Written by `reproduce.py --certify`."""

    task: str
    optim: str
    made_at: str
    now: str
    row: str
    overrides: tuple[str, ...]
    run_key: str
    commit: str
    date: str
    # "" when the run matched its record; else what it matched instead: a run of the records'
    # own code made here (a record made on another machine differs from both at rounding)
    basis: str = ""

    def to_json(self) -> dict:
        out = {**vars(self), "overrides": list(self.overrides)}
        if not self.basis:
            del out["basis"]
        return out

    @classmethod
    def from_json(cls, where: str, raw) -> "Certificate":
        fields = ("task", "optim", "made_at", "now", "row", "overrides", "run_key", "commit",
                  "date")
        if isinstance(raw, dict) and "basis" in raw:
            fields += ("basis",)
        if not isinstance(raw, dict) or set(raw) != set(fields) or not all(
                isinstance(raw[f], str) for f in fields if f != "overrides") or not (
                isinstance(raw["overrides"], list)
                and all(isinstance(o, str) for o in raw["overrides"])):
            raise RecordsError(f"{where}: a certificate must hold {list(fields)} (strings, and "
                               f"overrides a list of strings), got {raw!r}")
        return cls(**{**raw, "overrides": tuple(raw["overrides"])})


@dataclass(frozen=True)
class TableRecords:
    """A rendered table's records: its provenance, the extra overrides and final lr grids it
    ran with, and its runs in the order the spec expands them."""

    provenance: dict
    extra: tuple[str, ...]
    grids: dict  # row label → the final lr grid
    allow_mixed: bool
    runs: tuple[RunRecord, ...]
    aux: dict | None = None  # variant → the tied aux lr of the Muon-family rows (fairness.py)
    certificates: tuple[Certificate, ...] = ()  # code versions whose edits changed no number

    def to_json(self) -> dict:
        return {"format": FORMAT, "provenance": self.provenance, "extra": list(self.extra),
                "grids": self.grids, "allow_mixed": self.allow_mixed,
                **({"aux_lr": self.aux} if self.aux else {}),
                **({"certificates": [c.to_json() for c in self.certificates]}
                   if self.certificates else {}),
                "runs": [r.to_json() for r in self.runs]}


def from_run_dirs(runs, run_dirs: dict[int, Path]) -> list[RunRecord]:
    """The records of a table's runs (`runs[i]` ran in `run_dirs[i]`), read from their run
    dirs: summary.json and metrics.jsonl."""
    return [RunRecord(run.row.label, tuple(run.overrides), store.read_summary(run_dirs[i]),
                      tuple(store.MetricsLog(Path(run_dirs[i]) / "metrics.jsonl").read()),
                      str(run_dirs[i])) for i, run in enumerate(runs)]


def write(out: Path, records: TableRecords) -> Path:
    return write_json_gz(Path(out) / RECORDS_FILE, records.to_json())


def write_json_gz(path: Path, data: dict) -> Path:
    """`data` as gzipped JSON with no timestamp (the same data, the same bytes), atomically."""
    # Python's JSON: a NaN loss a run logged stays NaN, so the figures redraw it the same way
    blob = json.dumps(data, separators=(",", ":")).encode()  # key order is shown
    store.atomic_write(path, lambda f: f.write(gzip.compress(blob, compresslevel=9, mtime=0)))
    return path


def read_json_gz(path: Path):
    """What `write_json_gz` wrote; a damaged file is an error naming it."""
    try:
        return json.loads(gzip.decompress(Path(path).read_bytes()))
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise RecordsError(f"{path} is not a whole gzip file ({e}): truncated or damaged; "
                           f"restore it from git") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecordsError(f"{path} does not hold JSON ({e}); restore it from git") from None


def read(out: Path) -> TableRecords:
    """The records of results/<table>/<scale>/ (`out`), checked: every error names the file,
    and for a bad run its index, row and field."""
    path = Path(out) / RECORDS_FILE
    if not path.exists():
        raise RecordsError(f"no run records at {path}: render-only needs a table rendered by "
                           f"this version of reproduce.py (it writes {RECORDS_FILE})")
    data = read_json_gz(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise RecordsError(f"{path}: records format {found!r}, this code reads {FORMAT}")
    for key, kind in (("provenance", dict), ("extra", list), ("grids", dict), ("runs", list)):
        if not isinstance(data.get(key), kind):
            raise RecordsError(f"{path}: field {key!r} must be a {kind.__name__}, got "
                               f"{type(data.get(key)).__name__}")
    aux = data.get("aux_lr") or {}
    if not isinstance(aux, dict) or not all(isinstance(v, (int, float)) for v in aux.values()):
        raise RecordsError(f"{path}: field 'aux_lr' must map each variant to an lr, got {aux!r}")
    runs = tuple(checked_run(path, i, entry) for i, entry in enumerate(data["runs"]))
    certificates = data.get("certificates") or []
    if not isinstance(certificates, list):
        raise RecordsError(f"{path}: field 'certificates' must be a list")
    return TableRecords(data["provenance"], tuple(data["extra"]), data["grids"],
                        bool(data.get("allow_mixed")), runs, aux,
                        tuple(Certificate.from_json(f"{path}: certificates[{i}]", c)
                              for i, c in enumerate(certificates)))


def checked_run(path: Path, i: int, entry) -> RunRecord:
    """Run `i` of the records file `path`, checked field by field."""
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
    if summary is not None and not (isinstance(summary, dict)
                                    and summary.get("status") in STATUSES):
        raise bad("summary", f"must be null or a summary with a status {STATUSES}")
    metrics = entry.get("metrics")
    if not isinstance(metrics, list):
        raise bad("metrics", "must be a list of metrics rows")
    for j, row in enumerate(metrics):
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise bad(f"metrics[{j}]", "must be an object with an integer step")
    return RunRecord(entry["row"], tuple(overrides), summary, tuple(metrics),
                     f"{path}: run {i}")
