"""Whether a committed table still describes the code: its records against the current tree.

Each run record holds the run key and code version it was made with. The tree gives each run a
key now, composed from the same overrides (what `reproduce.py --plan` computes):

    fresh       every record's key is the one the tree gives now
    certified   some keys changed, only through the code version (the config is the same), and
                for each such (task, optimizer) one run was made again at the current version
                and matched its record bit for bit (`reproduce.py TABLE --certify`: a
                `Certificate` in the records)
    stale       anything else: a key whose config changed, a code change nobody certified, or
                a spec that no longer expands to the records' runs

A stale table cannot stand in results/: tests/test_freshness.py fails naming it, its rows and
the command that fixes it. A certificate is checked against the records' version and the tree's
version both, so a later edit makes the table stale again until it is certified anew.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from sweeps import confirm, records, sequential, spec
from sweeps.compose import compose_runs
from tasks.train import identity

FRESH, CERTIFIED, STALE = "fresh", "certified", "stale"
CODE_CHANGED, CONFIG_CHANGED = "code changed", "config changed"
# what a bit-for-bit comparison of a re-run with its record leaves out: timing and provenance
TIMING_KEYS = ("tokens_per_s",)
SUMMARY_KEYS = ("status", "steps_done", "tokens_done", "diverged_at", "initial", "final",
                "best", "spikes", "convergence", "evals")


@dataclass(frozen=True)
class RunFreshness:
    index: int  # in the records
    row: str
    task: str
    optim: str
    state: str  # FRESH, CERTIFIED, CODE_CHANGED or CONFIG_CHANGED
    made_at: str  # the record's code version
    now: str  # the code version the tree gives the run now
    key_now: str


@dataclass(frozen=True)
class TableFreshness:
    table: str
    scale: str
    folder: Path
    runs: tuple[RunFreshness, ...]
    problem: str = ""  # why the table is stale whatever its runs' states (the spec changed)

    @property
    def state(self) -> str:
        if self.problem or any(r.state in (CODE_CHANGED, CONFIG_CHANGED) for r in self.runs):
            return STALE
        return CERTIFIED if any(r.state == CERTIFIED for r in self.runs) else FRESH

    @property
    def command(self) -> str:
        """What makes the table fresh or certified again."""
        scale = "" if self.scale == spec.MINIATURE else f" scale={self.scale}"
        base = f"python scripts/reproduce.py {self.table}{scale}"
        if self.problem or any(r.state == CONFIG_CHANGED for r in self.runs):
            return base + "    # re-run: its runs compute something else now"
        return base + " --certify    # one run per (task, optimizer) again, compared bit for bit"

    def stale_pairs(self) -> dict[tuple[str, str], list[RunFreshness]]:
        out: dict[tuple[str, str], list[RunFreshness]] = {}
        for r in self.runs:
            if r.state in (CODE_CHANGED, CONFIG_CHANGED):
                out.setdefault((r.task, r.optim), []).append(r)
        return out

    def describe(self) -> str:
        where = f"{self.table} ({self.folder.name})"
        if self.state != STALE:
            certified = sorted({f"{r.task}/{r.optim}" for r in self.runs
                                if r.state == CERTIFIED})
            return f"{where}: {self.state}" + (f" ({', '.join(certified)} certified)"
                                               if certified else "")
        if self.problem:
            return f"{where}: STALE: {self.problem}. Fix: {self.command}"
        parts = [f"{task}/{optim} {len(rs)} run(s), {rs[0].state} ({rs[0].made_at} → "
                 f"{rs[0].now}; rows {', '.join(sorted({r.row for r in rs}))})"
                 for (task, optim), rs in sorted(self.stale_pairs().items())]
        return f"{where}: STALE: " + "; ".join(parts) + f". Fix: {self.command}"


def committed(results: Path) -> list[Path]:
    """The table folders under `results` with run records."""
    return sorted(p.parent for p in Path(results).glob(f"*/*/{records.RECORDS_FILE}"))


def check(folder: Path, root: Path = identity.PROJECT_ROOT,
          reading: identity.Reading | None = None,
          tables: Path = spec.TABLE_DIR) -> TableFreshness:
    """The freshness of the table in `folder` (results/<table>/<scale>) against the code
    under `root` (a copy, in tests; `reading`: one reading of it that many checks share) and
    the specs in `tables`."""
    folder = Path(folder)
    tabled = records.read(folder)
    name, scale = folder.parent.name, tabled.provenance.get("scale", spec.MINIATURE)
    table = spec.load(name, tables).at(scale)
    runs = table.expand(list(tabled.extra), tabled.grids, tabled.aux or None)
    expanded = [tuple(r.overrides) for r in runs]
    if expanded == [r.overrides for r in tabled.runs]:
        problem = ""
        # stage 2 of a two-stage table (sweeps/sequential.py) and a confirmatory experiment
        # (sweeps/confirm.py) are checked as its other runs are
        later = [x for x in (sequential.read(folder), confirm.read(folder)) if x is not None]
        recorded = list(enumerate([*tabled.runs, *(r for x in later for r in x.runs)]))
    else:
        # a spec that expands otherwise (a row added) makes the table stale; the records' runs
        # it still expands are checked one by one, so that a re-run takes the fresh ones and
        # trains only what the spec added (the others: rows it dropped, a contender's, whose
        # optimizer the config tree may not even have)
        problem = f"conf/table/{name}.yaml no longer expands to the records' runs"
        still = set(expanded)
        recorded = [(i, r) for i, r in enumerate(tabled.runs) if r.overrides in still]
    composed = compose_runs([list(r.overrides) for _, r in recorded], validate_runs=False)
    if reading is None and Path(root) != identity.PROJECT_ROOT:
        reading = identity.Reading(root)
    certified = {(c.task, c.optim, c.made_at, c.now) for c in tabled.certificates}
    versions: dict[tuple, str] = {}
    out = []
    for (i, record), (_, cfg) in zip(recorded, composed):
        targets = (cfg["optim"].get("_target_"), cfg["task"].get("_target_"))
        if targets not in versions:
            versions[targets] = identity.code_version(cfg, root, reading)
        now = versions[targets]
        key_now = identity.run_key(cfg, code=now)
        made_at = str(record.get("code_version"))
        task, optim = str(record.get("task")), str(record.get("optim"))
        if key_now == record.get("run_key"):
            state = FRESH
        elif identity.run_key(cfg, code=made_at) != record.get("run_key"):
            state = CONFIG_CHANGED
        elif (task, optim, made_at, now) in certified:
            state = CERTIFIED
        else:
            state = CODE_CHANGED
        out.append(RunFreshness(i, record.row, task, optim, state, made_at, now, key_now))
    return TableFreshness(name, scale, folder, tuple(out), problem)


def check_all(results: Path, root: Path = identity.PROJECT_ROOT,
              tables: Path = spec.TABLE_DIR) -> list[TableFreshness]:
    reading = None if Path(root) == identity.PROJECT_ROOT else identity.Reading(root)
    return [check(folder, root, reading, tables) for folder in committed(results)]


# ---------------------------------------------------------------- bit for bit


def differences(record: records.RunRecord, summary: dict, metrics: list[dict]) -> str:
    """"" when a re-run (`summary`, `metrics`) computed exactly its record's numbers, else the
    first difference: every metrics row but its timing, and the summary's numbers (status,
    steps, losses, evals, spikes, convergence)."""
    if len(metrics) != len(record.metrics):
        return f"{len(metrics)} metrics rows, the record has {len(record.metrics)}"
    for mine, theirs in zip(metrics, record.metrics):
        for key in sorted((mine.keys() | theirs.keys()) - set(TIMING_KEYS)):
            if not _same(mine.get(key), theirs.get(key)):
                return (f"step {theirs.get('step')}: {key} {mine.get(key)!r}, the record "
                        f"{theirs.get(key)!r}")
    for key in SUMMARY_KEYS:
        if not _same(summary.get(key), record.get(key)):
            return f"summary {key}: {summary.get(key)!r}, the record {record.get(key)!r}"
    return ""


def _same(a, b) -> bool:
    """Equal, bit for bit, a NaN equal to a NaN (and to None: summaries write NaN as null)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if _nan(a) and _nan(b):
        return True
    return type(a) is type(b) and a == b or (
        isinstance(a, (int, float)) and isinstance(b, (int, float))
        and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))
