"""results/README.md: every rendered table with its scale, verdict, run count and compute time,
written from the tables and run records under results/ (reproduce.py rewrites it after each
table)."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from sweeps import confirm, freshness, sequential, spec
from sweeps.records import RECORDS_FILE
from sweeps.verdict import OUTCOMES
from tasks.train import store

HEADER = """# Results

Every table here was rendered by `python scripts/reproduce.py TABLE [scale=...]` and carries its
run records (`{records}`: each run's overrides, summary and metric curves), from which
`python scripts/reproduce.py TABLE [scale=...] --render-only` renders it again, byte for byte, on
any machine. Each table's header names the command, the commit and the machine it was made on;
its verdict line says whether the paper's claim showed, by the rule in `sweeps/verdict.py`.
A `tiny` scale is a miniature on 2 CPU cores, never the paper's scale. This file is written by
`sweeps/index.py`; benchmarks are in `bench/`. `leaderboard.md` ranks the optimizers across these
tables, from the same records (`python scripts/leaderboard.py`).

Only tables rendered with run records are listed: a table without them cannot be audited, and
is not committed. Every miniature was re-run with its records after the earlier renderings, made
from older specs, were removed at commit d409e3531a40 (they stay in the git history before it).

What a row does not own follows one rule in every table (`sweeps/fairness.py`), printed under
the table's regime: at a miniature every row and every auxiliary Adam runs one weight decay, and
the Muon family's auxiliary Adam (embeddings, head, norms) runs at the AdamW row's chosen lr,
tuned first, or, in a table without an AdamW row, at one stated lr with its source. Every table
these rules or a new regime changed was re-run under them; a table whose regime changed says
why in its header, with the pilot number that chose it.

The code column says whether each table still describes the code (`sweeps/freshness.py`, when
this file was written): `fresh`, every run key is the one the tree gives; `certified`, keys
changed through code edits that `reproduce.py TABLE --certify` showed change no number (one run
per changed task and optimizer, bit for bit); `stale` cannot stay (CI fails on it:
tests/test_freshness.py; `python scripts/freshness.py` says what fixes it).

The seeds column says how the verdict's seeds were chosen: `fixed`, the spec's seeds; `two
stages`, the spec's seeds then those `reproduce.py TABLE --decide` added to the compared rows by
a design with stated error (`sweeps/sequential.py`); `+ confirmatory`, a new experiment on fresh
seeds that `reproduce.py TABLE --confirm` sized from the table and decided the verdict on alone
(`sweeps/confirm.py`). Runs read `table + stage 2 + confirmation`; all of them, and their time,
are counted here.

| table | scale | verdict | seeds | code | runs | compute (run wall time, summed) |
|---|---|---|---|---|---|---|
"""


@dataclass(frozen=True)
class Entry:
    table: str
    scale: str  # the results folder: the scale, with an ablation's hash
    verdict: str
    code: str  # fresh, certified or stale (sweeps/freshness.py)
    runs: int
    seconds: float  # run wall time, summed
    added: int = -1  # runs stage 2 added (sweeps/sequential.py); -1: a fixed design
    confirmed: int = -1  # runs of a confirmatory experiment (sweeps/confirm.py); -1: none


def entries(results: Path, tables: Path = spec.TABLE_DIR) -> list[Entry]:
    """One entry for each table with run records (its spec in `tables`)."""
    out = []
    for folder in freshness.committed(results):
        data = json.loads(gzip.decompress((folder / RECORDS_FILE).read_bytes()))
        seconds = sum(((e["summary"] or {}).get("wall_time_s") or 0.0) for e in data["runs"])
        md = (folder / "table.md").read_text() if (folder / "table.md").exists() else ""
        verdict = next((line.strip("* ").removeprefix("Verdict: ") for line in md.splitlines()
                        if line.startswith("**Verdict:")), "no table rendered")
        stage2, confirmation = sequential.read(folder), confirm.read(folder)
        for later in (stage2, confirmation):
            if later is not None:
                seconds += sum((r.get("wall_time_s") or 0.0) for r in later.runs)
        out.append(Entry(folder.parent.name, folder.name, verdict.split(" — ")[0],
                         freshness.check(folder, tables=tables).state, len(data["runs"]),
                         seconds, len(stage2.runs) if stage2 is not None else -1,
                         len(confirmation.runs) if confirmation is not None else -1))
    return out


def text(results: Path, tables: Path = spec.TABLE_DIR) -> str:
    lines = [HEADER.format(records=RECORDS_FILE)]
    found = entries(results, tables)
    for e in found:
        seeds = ("fixed" if e.added < 0 else "two stages") + \
            (" + confirmatory" if e.confirmed >= 0 else "")
        runs = " + ".join(str(n) for n in (e.runs, e.added, e.confirmed) if n >= 0)
        lines.append(f"| [{e.table}]({e.table}/{e.scale}/table.md) | {e.scale} | {e.verdict} | "
                     f"{seeds} | {e.code} | {runs} | {e.seconds / 60:.1f} min |\n")
    outcomes = [e.verdict for e in found]
    counts = {o: outcomes.count(o) for o in OUTCOMES if outcomes.count(o)}
    lines.append("\nOutcomes: " + ", ".join(f"{n} {o}" for o, n in counts.items()) + ".\n")
    return "".join(lines)


def write(results: Path, tables: Path = spec.TABLE_DIR) -> Path:
    path = Path(results) / "README.md"
    store.write_text(path, text(results, tables))
    return path
