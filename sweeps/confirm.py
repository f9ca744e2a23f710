"""A confirmatory experiment: `reproduce.py TABLE --confirm [--budget-min M]`.

A table whose claim its seeds left undecided (and its stage 2, sweeps/sequential.py, where it
had one) has spent them: more seeds for the same test would be one more look at it. What a
statistician does next is a new experiment, sized from the old one and decided on its own data
alone. This module runs it:

- the rows each comparison of the claim compares, at the setting the table chose for them (on
  its own seeds: the choice is independent of the new ones);
- fresh seeds, ones no run of the table has used;
- as many as give each comparison 90% power at Holm's strictest level α/m (m comparisons in
  its part of the claim), at the difference the test must detect (sweeps/verdict.py `target`:
  the claimed effect, or the difference the table observed) and the table's spread;
- all of it within the budget, or nothing: a smaller experiment would lack the power it was
  sized for, so it is refused before anything runs.

The table's verdict is then the experiment's, a fixed design over the fresh seeds alone, with
the table's own reading printed as its pilot and superseded. The table's rows (every setting,
every seed) are shown as they were: the pilot shows, the confirmation decides.

What the design cannot undo is that the claim was looked at before: each look (the pilot's
fixed design, its stage 2, this experiment) is a chance at α to read "reproduced" when the
claim is false, so the header states the bound L·α over the L looks. The power is computed at
the pilot's difference, which is optimistic where the pilot was run on because it looked good.
LR sensitivity and average-rank claims read a whole grid per seed, not a chosen setting: they
are refused (`--decide` handles them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sweeps import records, sequential, verdict
from sweeps.collect import Row
from sweeps.spec import Table
from sweeps.stats import ALPHA

CONFIRM_FILE = "confirm.json.gz"  # the experiment's plan and run records, beside records.json.gz
POWER = 0.9  # a confirmation is run to decide: sized above the 80% a pilot's reading asks
MIN_SEEDS, MAX_SEEDS = 3, 200


@dataclass
class Confirmation:
    """The confirmatory experiment of a table: its fresh seeds per row and their runs."""

    seeds: dict[str, list[int]]  # row label → fresh seeds at its chosen setting
    runs: tuple[records.RunRecord, ...]
    budget_min: float
    command: str
    sizing: tuple[str, ...]  # per comparison: the seeds it asked for, and why

    def to_json(self) -> dict:
        return {"command": self.command, "budget_min": self.budget_min, "seeds": self.seeds,
                "power": POWER, "sizing": list(self.sizing),
                "runs": [r.to_json() for r in self.runs]}


def write(out: Path, confirmation: Confirmation) -> Path:
    return records.write_json_gz(Path(out) / CONFIRM_FILE, confirmation.to_json())


def read(out: Path) -> Confirmation | None:
    path = Path(out) / CONFIRM_FILE
    if not path.exists():
        return None
    data = records.read_json_gz(path)
    try:
        runs = tuple(records.checked_run(path, i, r) for i, r in enumerate(data["runs"]))
        return Confirmation({str(k): [int(s) for s in v] for k, v in data["seeds"].items()},
                            runs, float(data["budget_min"]), str(data["command"]),
                            tuple(str(x) for x in data["sizing"]))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise records.RecordsError(f"{path}: not a readable confirmation record ({e!r})") from e


@dataclass
class Plan:
    """What the confirmation runs: per row, the fresh seeds at its chosen setting."""

    seeds: dict[str, list[int]]
    minutes: float  # the estimated compute, run wall time summed
    sizing: list[str]


def pilot(table: Table, rows: list[Row], added: sequential.Added | None) -> list[Row]:
    """What the confirmation is sized from: everything the table ran at its chosen settings,
    stage 2's seeds with the table's where it had a stage 2 (`rows`: the table's)."""
    return sequential.merged(rows, added, table)[1] if added is not None else rows


def used_seeds(tabled: records.TableRecords, added: sequential.Added | None) -> set[int]:
    """Every seed a run of the table (or of its stage 2) used."""
    runs = [*tabled.runs, *(added.runs if added is not None else ())]
    return {sequential.seed_of(r) for r in runs}


def plan(table: Table, rows: list[Row], used: set[int], budget_min: float) -> Plan:
    """Seeds for every compared row: the most its comparisons ask (`sizing` says why), after
    every seed in `used`. Refused, naming why, where a comparison has no difference to confirm,
    would need more than MAX_SEEDS, or the whole does not fit `budget_min`."""
    wanted: dict[str, int] = {}
    sizing: list[str] = []
    by_base = {r.key.base: r for r in rows if not r.key.ablation}
    for part in table.claim_parts:
        if part.kind in ("sensitivity", "average_rank"):
            raise ValueError(f"table {table.name}: a {part.kind} claim reads every lr of a "
                             f"seed, not a chosen setting; --confirm cannot run it (--decide "
                             f"can)")
        comparisons = verdict.compare_part(table, part, rows, {})
        level = ALPHA / max(1, len(comparisons))
        for c in comparisons:
            name = f"{c.claimed} vs {c.other}"
            if c.difference is None:
                raise ValueError(f"table {table.name}: {name} has no difference to confirm "
                                 f"({c.reason or 'a row did not finish'})")
            aim = verdict.target(part, c, level, level)
            n = c.difference.seeds_needed(aim.power, MAX_SEEDS, POWER)
            if n is None:
                raise ValueError(f"table {table.name}: {name} would need more than {MAX_SEEDS} "
                                 f"seeds a row for {100 * POWER:.0f}% power at {aim.what}; "
                                 f"no confirmation of this size can decide it")
            n = max(MIN_SEEDS, n)
            sizing.append(f"{name}: {n} seeds a row, {100 * POWER:.0f}% power at {aim.what} "
                          f"at the level {level:.3g} (α/{len(comparisons)}) and the pilot's "
                          f"spread {c.difference.spread:.3g}")
            for label in (by_base[c.claimed].label, by_base[c.other].label):
                wanted[label] = max(wanted.get(label, 0), n)
    first = max(used) + 1
    seeds = {label: list(range(first, first + n)) for label, n in wanted.items()}
    by_label = {r.label: r for r in rows}
    minutes = sum(len(s) * sequential.minutes_a_run([by_label[label].chosen])
                  for label, s in seeds.items())
    if minutes > budget_min:
        raise ValueError(
            f"table {table.name}: the confirmation needs about {minutes:.1f} min of run time "
            f"({', '.join(f'{k} {len(v)} seeds' for k, v in seeds.items())}), over "
            f"--budget-min {budget_min:g}; nothing ran. A smaller one would lack the power it "
            f"is sized for: give the budget, or leave the table as it reads")
    return Plan(seeds, minutes, sizing)


def looks(added: sequential.Added | None) -> int:
    """How many times the claim has been decided, this experiment included: the pilot's fixed
    design, its stage 2 where it had one, and this."""
    return 2 + (added is not None)


def decide(table: Table, rows: list[Row], confirmation: Confirmation, grids: dict,
           pilot: verdict.Verdict, added: sequential.Added | None) -> verdict.Verdict:
    """The confirmation's verdict: the compared rows at their chosen settings, over the fresh
    seeds alone (`rows` are the table's, its pilot)."""
    fresh, _ = sequential.merged(rows, sequential.Added(confirmation.seeds, confirmation.runs,
                                                        confirmation.budget_min,
                                                        confirmation.command), table)
    result = verdict.decide(table, fresh, grids)
    seeds = sorted({s for v in confirmation.seeds.values() for s in v})
    minutes = sum((r.get("wall_time_s") or 0.0) for r in confirmation.runs) / 60.0
    commits = sequential.commits_of(confirmation.runs)
    n = looks(added)
    head = (f"Confirmatory experiment (sweeps/confirm.py, `{confirmation.command}`): fresh seeds "
            f"{seeds[0]}–{seeds[-1]} at each compared row's chosen setting ("
            + "; ".join(f"{k}: {len(v)}" for k, v in confirmation.seeds.items())
            + f"), {len(confirmation.runs)} runs made at commit {commits or '-'}, "
              f"{minutes:.1f} min of run time against a budget of {confirmation.budget_min:g} "
              f"min; sized from the pilot (" + "; ".join(confirmation.sizing) + "); decided "
              "on these seeds alone, as a fixed design. Pilot: the table's seeds"
            + (" and its stage 2" if added is not None else "")
            + f", which chose each row's setting and sized this experiment, read: "
              f"{pilot.result} (superseded). The claim has been looked at {n} times, each at a "
              f"one-sided α = {ALPHA:g}: the chance that any of them reads reproduced when it "
              f"is false is at most {n}α = {n * ALPHA:g}")
    return verdict.Verdict(result.result, result.text, [head, *result.details])
