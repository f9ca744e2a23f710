"""results/README.md: every rendered table with its scale, verdict, run count and compute time,
written from the tables and run records under results/ (reproduce.py rewrites it after each
table)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

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

| table | scale | verdict | runs | compute (run wall time, summed) |
|---|---|---|---|---|
"""


def entries(results: Path) -> list[tuple[str, str, str, int, float]]:
    """(table, scale folder, verdict, runs, seconds) for each table with run records."""
    out = []
    for path in sorted(Path(results).glob(f"*/*/{RECORDS_FILE}")):
        folder = path.parent
        data = json.loads(gzip.decompress(path.read_bytes()))
        seconds = sum(((e["summary"] or {}).get("wall_time_s") or 0.0) for e in data["runs"])
        md = (folder / "table.md").read_text() if (folder / "table.md").exists() else ""
        verdict = next((line.strip("* ").removeprefix("Verdict: ") for line in md.splitlines()
                        if line.startswith("**Verdict:")), "no table rendered")
        out.append((folder.parent.name, folder.name, verdict.split(" — ")[0],
                    len(data["runs"]), seconds))
    return out


def text(results: Path) -> str:
    lines = [HEADER.format(records=RECORDS_FILE)]
    found = entries(results)
    for name, scale, verdict, runs, seconds in found:
        lines.append(f"| [{name}]({name}/{scale}/table.md) | {scale} | {verdict} | {runs} | "
                     f"{seconds / 60:.1f} min |\n")
    outcomes = [verdict for _, _, verdict, _, _ in found]
    counts = {o: outcomes.count(o) for o in OUTCOMES if outcomes.count(o)}
    lines.append("\nOutcomes: " + ", ".join(f"{n} {o}" for o, n in counts.items()) + ".\n")
    return "".join(lines)


def write(results: Path) -> Path:
    path = Path(results) / "README.md"
    store.write_text(path, text(results))
    return path
