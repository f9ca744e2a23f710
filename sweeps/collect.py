"""From a table's run records to its rows: fair tuning and seed statistics.

Fair tuning: per row (an optimizer in a variant, lr multiple and ablation), the setting (lr, and
the `tune` keys) with the best mean metric over seeds; a setting where any seed diverged or
failed has no mean and is never chosen (unless the metric counts a divergence as one more event:
`Metric.count_divergence`, for an instability count). A row shows mean ± std over seeds at its
setting; the best of each set of comparable rows (same variant, lr multiple and ablation) is
marked, with whether its lead over the runner-up exceeds the seed noise (the sum of the two
stds).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from sweeps.records import RunRecord
from sweeps.spec import RowKey, Run, Table
from sweeps.stats import difference


@dataclass
class Cell:
    """One setting of a row: its runs, one per seed, in the order of the spec's seeds."""

    lr: float
    tuned: tuple  # ((optim key, value), ...)
    seeds: list[int]
    runs: list[RunRecord]
    values: list[float]  # the metric per seed; ±inf where the run diverged (uncounted) or failed

    @property
    def setting(self) -> tuple:
        return (self.lr, self.tuned)

    @property
    def mean(self) -> float | None:
        """The mean over seeds, None when a seed diverged or failed."""
        if all(math.isfinite(v) for v in self.values):
            return statistics.mean(self.values)
        return None

    @property
    def diverged(self) -> int:
        return sum(r.status == "diverged" for r in self.runs)

    @property
    def failed(self) -> int:
        """Runs that raised (or never wrote a summary): no result, unlike a divergence."""
        return sum(r.status not in ("completed", "diverged") for r in self.runs)

    @property
    def errors(self) -> list[str]:
        """The first line of each failed run's error, in seed order."""
        return [str(r.get("error") or "no summary: the run never ended").splitlines()[0]
                for r in self.runs if r.status not in ("completed", "diverged")]

    @property
    def spikes(self) -> int:
        return sum(r.get("spikes.spike_count") or 0 for r in self.runs)

    @property
    def initial(self) -> list[float | None]:
        return [r.get("initial.train_loss") for r in self.runs]


@dataclass
class Row:
    key: RowKey
    cells: dict = field(default_factory=dict)  # (lr, tuned) → Cell, in the order run
    best: tuple | None = None  # the chosen (lr, tuned); None when every setting diverged
    extra: dict = field(default_factory=dict)  # report key → mean at the chosen setting
    per_lr: dict = field(default_factory=dict)  # lr → the best finished setting's mean there

    @property
    def label(self) -> str:
        return self.key.label

    @property
    def chosen(self) -> Cell | None:
        return self.cells[self.best] if self.best is not None else None

    @property
    def best_lr(self) -> float | None:
        return self.best[0] if self.best is not None else None

    @property
    def best_tuned(self) -> tuple:
        return self.best[1] if self.best is not None else ()

    @property
    def values(self) -> list[float]:
        return self.chosen.values if self.chosen else []

    @property
    def mean(self) -> float | None:
        return statistics.mean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        values = self.values
        return statistics.stdev(values) if len(values) > 1 else 0.0 if values else None

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def diverged(self) -> int:
        return sum(cell.diverged for cell in self.cells.values())

    @property
    def failed(self) -> int:
        return sum(cell.failed for cell in self.cells.values())

    @property
    def failed_everywhere(self) -> bool:
        """No setting without a failed run: the row measured nothing about the optimizer (an
        error, not a divergence), and neither the verdict nor the edge rule reads it."""
        return self.best is None and bool(self.cells) and all(
            cell.failed for cell in self.cells.values())

    @property
    def first_error(self) -> str:
        return next((e for cell in self.cells.values() for e in cell.errors), "")

    @property
    def best_runs(self) -> list[RunRecord]:
        return self.chosen.runs if self.chosen else []


def collect(table: Table, runs: list[Run], records: list[RunRecord]) -> list[Row]:
    """The table's rows from its runs (`records[i]` is the record of `runs[i]`)."""
    if len(runs) != len(records):
        raise ValueError(f"{len(records)} records for {len(runs)} runs")
    mode = table.metric.mode
    worst = math.inf if mode == "min" else -math.inf
    rows: dict[RowKey, Row] = {}
    for run, record in zip(runs, records):
        row = rows.setdefault(run.row, Row(run.row))
        cell = row.cells.get(run.setting)
        if cell is None:
            cell = row.cells[run.setting] = Cell(run.lr, run.tuned, [], [], [])
        value = table.metric.of(record)
        cell.seeds.append(run.seed)
        cell.runs.append(record)
        cell.values.append(value if value is not None else worst)
    pick = min if mode == "min" else max
    for row in rows.values():
        finished = [s for s, cell in row.cells.items() if cell.mean is not None]
        row.best = pick(finished, key=lambda s: row.cells[s].mean) if finished else None
        for lr in dict.fromkeys(cell.lr for cell in row.cells.values()):
            at_lr = [c.mean for c in row.cells.values() if c.lr == lr and c.mean is not None]
            row.per_lr[lr] = pick(at_lr) if at_lr else None
        for col in table.report if row.best is not None else ():
            xs = [r.get(col) for r in row.best_runs]
            xs = [x for x in xs if isinstance(x, (int, float))]
            row.extra[col] = statistics.mean(xs) if xs else None
    return list(rows.values())


def comparable(row: Row) -> tuple:
    """Rows are compared only within the same variant, lr multiple and ablation."""
    return (row.key.variant, row.key.multiplier, row.key.ablation)


def ratio_columns(table: Table, rows: list[Row]) -> dict[str, dict[str, float | None]]:
    """{column label: {row label: value}} for the spec's `ratios`. The reference is the best
    (smallest) value of `key` among the `versus` rows that finished at their chosen lr, so a
    diverged baseline or one that never reached a target is not the reference."""
    columns = {}
    for ratio in table.ratios:
        values = {}
        for r in rows:
            refs = [o.extra.get(ratio.key) for o in rows
                    if o.key.optim in ratio.versus and comparable(o) == comparable(r)]
            refs = [x for x in refs if isinstance(x, (int, float)) and x > 0]
            ref = min(refs) if refs else None
            x = r.extra.get(ratio.key)
            if ref is None or not isinstance(x, (int, float)) or x <= 0:
                values[r.label] = None
            else:
                values[r.label] = ref / x if ratio.speedup else x / ref
        columns[ratio.label] = values
    return columns


def ranking(table: Table, rows: list[Row]) -> list[tuple[str | None, str]]:
    """For each set of comparable rows: (best row label, its lead over the runner-up with the
    lead's 95% t interval, paired by seed where the rows share them: sweeps/stats.py)."""
    mode = table.metric.mode
    out = []
    for group in dict.fromkeys(comparable(r) for r in rows):
        scored = sorted((r for r in rows if comparable(r) == group and r.mean is not None),
                        key=lambda r: r.mean if mode == "min" else -r.mean)
        if not scored:
            out.append((None, "no finished row"))
        elif len(scored) == 1:
            out.append((scored[0].label, "only row"))
        elif scored[0].n < 2 or scored[1].n < 2:
            out.append((scored[0].label, f"lead {abs(scored[0].mean - scored[1].mean):.4g} over "
                                         f"{scored[1].label}; one seed, noise unknown"))
        else:
            a, b = scored[0], scored[1]
            d = difference(a.values, b.values, a.chosen.seeds, b.chosen.seeds, mode)
            lo, hi = d.interval
            beyond = "beyond the noise" if lo > 0 else "within the noise"
            out.append((a.label, f"lead {d.mean:.4g} over {b.label}, 95% CI [{lo:+.4g}, "
                                 f"{hi:+.4g}] ({'paired by seed' if d.paired else 'Welch'}): "
                                 f"{beyond}"))
    return out


def code_versions(records: list[RunRecord], allow_mixed: bool, certificates=()) -> str:
    """The runs' code versions as one line ("<version> (<n> runs), ..."). Runs of the same
    optimizer and task execute the same code, so several versions among them mean some were
    made by other code: an error, unless `allow_mixed` (the table then lists them), or unless
    a certificate (sweeps/freshness.py) shows the older version computes what the newer does."""
    versions = [str(r.get("code_version")) for r in records]
    line = ", ".join(f"{v} ({versions.count(v)} runs)" for v in sorted(set(versions)))
    same = {(c.task, c.optim, c.made_at): c.now for c in certificates}
    groups: dict[tuple, set] = {}
    for record, version in zip(records, versions):
        pair = (record.get("task"), record.get("optim"))
        groups.setdefault(pair, set()).add(same.get((*pair, version), version))
    mixed = {f"{task}/{optim}": sorted(v) for (task, optim), v in groups.items() if len(v) > 1}
    if mixed and not allow_mixed:
        raise ValueError(f"the table's runs were made by different optimizer/task code: {line} "
                         f"(mixed within {mixed}). Re-run the stale ones (their keys changed "
                         f"with the code), or pass --allow-mixed to render them together, said "
                         f"so in the table")
    return line
