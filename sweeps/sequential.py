"""More seeds, validly: `reproduce.py TABLE --decide [--budget-min M]`, a two-stage design.

Adding seeds until a test passes inflates its error: every look is another chance to pass. This
design states its error in advance and keeps it. Stage 1 is the committed table (its seeds, its
chosen settings). Stage 2 adds seeds to the compared rows at those chosen settings, as many as
the stage-1 spread says the test needs for 80% power (sweeps/verdict.py), within a compute
budget. Each one-sided test of a comparison is then decided by the inverse-normal combination of
its two stages' p-values, each stage's from its own seeds only (Bauer & Köhne 1994; Lehmacher &
Wassmer 1999):

    z_k = Φ⁻¹(1 − p_k),   z = (z_1 + z_2) / √2   (equal weights, fixed before stage 1)

with α = 0.025 one-sided split as O'Brien & Fleming's two looks do: α₁ = 0.00258 spent at stage
1 (z_1 ≥ c₁ = 2.797 decides there) and the rest at stage 2 (z ≥ c₂ = 1.977, where P(Z₁ < c₁,
Z ≥ c₂) = α − α₁ under the null). A small α₁ matters with several comparisons: a comparison
that goes on has a stage-wise p-value of at least α₁, and Holm's first step needs α/m. As the
combination's weights are fixed, stage 2 may be sized from anything stage 1 showed, the difference
included, and the error stays α (the stage-2 p-value is uniform whatever its size). A comparison
also gets its stage-wise p-value (p = Φ(−z₁) when decided at stage 1, else α₁ + P(Z₁ < c₁,
Z ≥ z)), so the comparisons of a part are Holm-adjusted as in a fixed design.

Once a table has stage 2, its verdict is the design's, for every comparison: stage 1 alone at α
is no longer a result. What the design cannot undo is the choice to run it: a table taken to
stage 2 because its fixed-design verdict (stage 1 at α) was undecided has had two chances, and
its one-sided error is at most 2α = 0.05, not α; the verdict says so.
Where a comparison's per-seed statistic reads more than two cells, stage 2 runs what it reads:
LR sensitivity adds the seeds at every lr of both rows (a seed's sensitivity is over its grid),
an average rank at every ranked row's chosen setting (a seed's ranks are among all the rows).

No library we use has this: statsmodels' power and TOST are fixed-sample, and rliable and AlgoPerf
fix the seed count; the combination test is a few lines of scipy.
"""

from __future__ import annotations

import copy
import functools
import gzip
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from scipy import integrate, optimize
from scipy.special import ndtr
from scipy.stats import norm

from sweeps import records, verdict
from sweeps.collect import Row
from sweeps.spec import ClaimPart, Table
from sweeps.stats import ALPHA, POWER

ADDED_FILE = "sequential.json.gz"  # stage 2's design and run records, beside records.json.gz
MIN_ADDED, MAX_ADDED = 3, 20  # seeds a row at stage 2: a variance needs a few; a cap per call


@dataclass(frozen=True)
class Design:
    """The two-stage inverse-normal combination test at one-sided level `alpha`."""

    alpha: float = ALPHA
    spent: float = float(norm.sf(2.797))  # α₁, spent at stage 1 (O'Brien-Fleming's c₁)

    @property
    def c1(self) -> float:
        return float(norm.isf(self.spent))

    def below(self, z: float) -> float:
        """P(Z₁ < c₁, (Z₁ + Z₂)/√2 < z) under the null: ∫ φ(x) Φ(√2 z − x) dx over x < c₁
        (a deterministic quadrature, so a table renders to the same bytes everywhere)."""
        def integrand(x: float) -> float:  # scipy.special, not scipy.stats: 300× faster a call
            return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi) * ndtr(math.sqrt(2) * z - x)
        value, _ = integrate.quad(integrand, -40.0, self.c1, epsabs=1e-13, epsrel=1e-12)
        return value

    @functools.cached_property  # a root-find over a quadrature: once per design
    def c2(self) -> float:
        return self.z_for(self.alpha)

    def z_for(self, level: float) -> float:
        """The combined z whose stage-wise p-value is `level` (≤ α): c₂ at α itself."""
        return float(optimize.brentq(lambda z: self.below(z) - (1.0 - level), -10.0, 20.0,
                                     xtol=1e-12))

    def p_value(self, p1: float, p2: float | None) -> float:
        """The stage-wise p-value of one one-sided test from its stages' p-values (p2 None:
        no stage 2 ran, and stage 1 alone cannot reject below α₁)."""
        z1 = float(norm.isf(p1))
        if z1 >= self.c1:
            return p1
        if p2 is None:
            return 1.0
        z = (z1 + float(norm.isf(p2))) / math.sqrt(2)
        return min(1.0, max(self.spent, 1.0 - self.below(z)))

    def describe(self) -> str:
        return (f"inverse-normal combination of the two stages' one-sided p-values, equal "
                f"weights; α = {self.alpha:g} one-sided, α₁ = {self.spent:g} spent at stage 1 "
                f"(z₁ ≥ {self.c1:.3f}), the rest at stage 2 (combined z ≥ {self.c2:.3f})")


@dataclass
class Added:
    """Stage 2 of a table: the seeds it added per row and their run records."""

    seeds: dict[str, list[int]]  # row label → the seeds added at its chosen setting
    runs: tuple[records.RunRecord, ...]
    budget_min: float
    command: str
    design: Design = Design()  # the design stage 2 was planned under, kept with its runs
    grid: tuple[str, ...] = ()  # rows whose seeds ran at every lr (LR sensitivity)

    def to_json(self) -> dict:
        return {"design": {"alpha": self.design.alpha, "alpha1": self.design.spent},
                "command": self.command, "budget_min": self.budget_min, "seeds": self.seeds,
                "grid": list(self.grid), "runs": [r.to_json() for r in self.runs]}


def write(out: Path, added: Added) -> Path:
    path = Path(out) / ADDED_FILE
    blob = json.dumps(added.to_json(), separators=(",", ":")).encode()
    records.store.atomic_write(path, lambda f: f.write(gzip.compress(blob, compresslevel=9,
                                                                     mtime=0)))
    return path


def read(out: Path) -> Added | None:
    path = Path(out) / ADDED_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(gzip.decompress(path.read_bytes()))
        runs = tuple(records.RunRecord(r["row"], tuple(r["overrides"]), r["summary"],
                                       tuple(r["metrics"]), f"{path}: runs[{i}]")
                     for i, r in enumerate(data["runs"]))
        design = Design(float(data["design"]["alpha"]), float(data["design"]["alpha1"]))
        return Added({k: list(v) for k, v in data["seeds"].items()}, runs,
                     float(data["budget_min"]), str(data["command"]), design,
                     tuple(data.get("grid", ())))  # files written before whole-grid stages
    except (OSError, EOFError, ValueError, KeyError, TypeError) as e:
        raise records.RecordsError(f"{path}: not a readable stage-2 record ({e})") from e


# ---------------------------------------------------------------- stage 2: how many seeds


def seed_of(record: records.RunRecord) -> int:
    return int(next(o for o in record.overrides if o.startswith("seed=")).split("=", 1)[1])


def with_seed(overrides: tuple[str, ...], seed: int) -> tuple[str, ...]:
    return tuple(f"seed={seed}" if o.startswith("seed=") else o for o in overrides)


@dataclass
class Plan:
    """What stage 2 runs: per row, the seeds to add at its chosen setting, and why."""

    seeds: dict[str, list[int]]
    minutes: float  # the estimated compute, run wall time summed
    lines: list[str]  # per comparison: stopped at stage 1, or the seeds it asked for
    eligible: int = 0  # comparisons a stage 2 can decide (with a difference to test)
    asked: int = 0  # of those, the ones stage 1 left undecided
    grid: tuple[str, ...] = ()  # rows whose seeds run at every lr (LR sensitivity)


def cells_read(row: Row, whole_grid: bool) -> list:
    """The cells of `row` a stage-2 seed runs at: the chosen one, or (LR sensitivity) the
    first setting at each lr, the ones `verdict.lr_sensitivity` reads."""
    if not whole_grid:
        return [row.chosen]
    first_at: dict[float, object] = {}
    for cell in row.cells.values():
        first_at.setdefault(cell.lr, cell)
    return list(first_at.values())


def plan(table: Table, rows: list[Row], budget_min: float, design: Design = Design(),
         done: frozenset[str] = frozenset()) -> Plan:
    """Stage 2 from stage 1's rows: each comparison not decided at stage 1 asks for the seeds
    that give its combination test 80% conditional power at the difference it must detect
    (`size`); a row gets the most its comparisons ask. The budget (each row's mean run time at
    its chosen setting) funds the cheapest requests first; the first that does not fit gets
    what is left if that is at least MIN_ADDED seeds a row, and a request that cannot get
    MIN_ADDED is not run.

    `done`: rows that already have their stage-2 seeds. A comparison touching one has had its
    stage 2; one whose rows have none (a budget left it unfunded, or the claim grew after
    stage 2) may still get its own, sized from stage 1 alone, on seeds no one has seen."""
    wanted: dict[str, int] = {}
    requests: list[tuple[str, tuple[str, ...], int]] = []
    lines, eligible, asked, grid = [], 0, 0, set()
    by_base = {r.key.base: r for r in rows if not r.key.ablation}
    ranked = tuple(r.label for r in rows if not r.key.ablation and r.chosen is not None)
    for part in table.claim_parts:
        for c in verdict.compare_part(table, part, rows, {}):
            name = f"{c.claimed} vs {c.other}"
            if c.difference is None:
                lines.append(f"{name}: stays as stage 1 decides it (no difference to test: "
                             f"{c.reason or 'a row did not finish'})")
                continue
            eligible += 1
            tests = _aggregate(_raw(part, c.difference, c.size))
            if min(tests.values()) < design.spent / _m(part):
                lines.append(f"{name}: decided at stage 1 (a p-value below α₁/m)")
                continue
            if part.kind == "average_rank":  # a seed's ranks are among every ranked row
                labels = ranked
            else:
                labels = (by_base[c.claimed].label, by_base[c.other].label)
            if done & set(labels):
                lines.append(f"{name}: has had its stage 2")
                continue
            asked += 1
            ask, why = size(part, c, tests, design)
            if part.kind == "sensitivity":
                grid.update(labels)
            where = {"average_rank": f", at each of the {len(labels)} ranked rows' chosen "
                                     f"settings",
                     "sensitivity": ", at every lr of both rows"}.get(part.kind, "")
            lines.append(f"{name}: asks {ask} seeds a row{where} ({why})")
            requests.append((name, labels, ask))
    by_label = {r.label: r for r in rows}
    cost = {label: minutes_a_run(cells_read(by_label[label], label in grid))
            for _, labels, _ in requests for label in labels}
    left = budget_min
    # the cheapest requests first: within a budget, as many comparisons decided as it allows
    for name, pair, ask in sorted(requests, key=lambda r: r[2] * sum(cost[x] for x in r[1])):
        def extra(n: int) -> float:
            return sum(max(0, n - wanted.get(label, 0)) * cost[label] for label in pair)
        n = next((k for k in range(ask, MIN_ADDED - 1, -1) if extra(k) <= left), 0)
        if not n:
            lines.append(f"{name}: not run: its {MIN_ADDED} seeds a row would take "
                         f"{extra(MIN_ADDED):.1f} min, {left:.1f} min of the budget are left")
            continue
        left -= extra(n)
        for label in pair:
            wanted[label] = max(wanted.get(label, 0), n)
        if n < ask:
            lines.append(f"{name}: gets {n} of its {ask} seeds a row (the budget)")
    first = max(table.seeds) + 1
    seeds = {k: list(range(first, first + n)) for k, n in wanted.items()}
    return Plan(seeds, sum(len(s) * cost[k] for k, s in seeds.items()), lines, eligible, asked,
                tuple(label for label in seeds if label in grid))


def size(part: ClaimPart, c: verdict.Comparison, tests: dict[str, float],
         design: Design) -> tuple[int, str]:
    """(seeds, why): the stage-2 size that gives the combination test 80% conditional power,
    given stage 1's z, at the part's Bonferroni level α/m (Holm's strictest step), if the true
    difference is the one the test must detect — the claimed effect for `better`, the
    difference observed for a margin (sweeps/verdict.py) or for a claim that states no effect
    (then for the test it points to: for the claim, or against it) — at the
    stage-1 spread σ: stage 2 must give z₂ ≥ √2·c₂ − z₁, so its paired t-test runs at level
    Φ(−(√2·c₂ − z₁)), and n₂ is the fewest seeds whose power there (statsmodels' noncentral t)
    reaches 80% at Δ/σ, Δ the distance from that difference to the boundary of the test it
    would pass."""
    from statsmodels.stats.power import ttest_power  # 2 s to import: only where asked

    d = c.difference
    sigma = d.se * math.sqrt(d.n)
    observed = d.mean
    if part.margin is not None:
        delta = c.size[0]
        if part.kind == "matches_or_beats":
            boundary, test = -delta, ("for" if observed > -delta else "against")
            gap = abs(observed - boundary)
        elif abs(observed) < delta:  # TOST: the nearer boundary is the harder test
            test, gap = "for", delta - abs(observed)
        else:
            test, gap = "against", abs(observed) - delta
        target = f"the difference observed ({observed:+.3g}), {gap:.3g} from its boundary"
    else:  # no effect stated: the test the difference observed points to, for or against
        test = "for" if c.size is not None or observed >= 0 else "against"
        gap = c.size[0] if c.size is not None else abs(observed)
        target = (f"the claimed effect {c.size[0]:.3g}" if c.size is not None else
                  f"the difference observed ({observed:+.3g}; the claim states no effect)")
    z1 = float(norm.isf(min(max(tests[test], 1e-300), 1.0 - 1e-16)))
    if gap <= 0 or sigma <= 0:
        return MAX_ADDED, f"{target}: no distance to detect; the most a call adds"
    # the combined p must pass Holm's first step at worst: α/m, m the part's comparisons
    level = float(norm.sf(math.sqrt(2) * design.z_for(design.alpha / _m(part)) - z1))
    n = next((k for k in range(MIN_ADDED, 10 * MAX_ADDED) if ttest_power(
        gap / sigma, k, level, alternative="larger") >= POWER), None)
    ask = min(MAX_ADDED, n or MAX_ADDED)
    return ask, (f"80% conditional power at {target} needs "
                 + (f"{n} seeds" if n else f"over {10 * MAX_ADDED} seeds")
                 + f" at the stage-1 spread {sigma:.3g}"
                 + (f"; capped at {MAX_ADDED}" if not n or n > MAX_ADDED else ""))


def _aggregate(raw: dict[str, list[float]]) -> dict[str, float]:
    return {"for": max(raw["for"]), "against": min(raw["against"]),
            "short": raw["short"][0] if raw["short"] else 1.0}


def _m(part: ClaimPart) -> int:
    return max(1, sum(len(than) for _, than in part.pairs))


def minutes_a_run(cells: list) -> float:
    """Minutes for one seed at `cells`: each cell's mean run time, summed."""
    total = 0.0
    for cell in cells:
        times = [t for r in cell.runs if isinstance(t := r.get("wall_time_s"), (int, float))]
        total += statistics.mean(times) / 60.0 if times else 1.0
    return total


# ---------------------------------------------------------------- the combined verdict


def _raw(part: ClaimPart, d, size) -> dict[str, list[float]]:
    """The raw one-sided p-values of a comparison's tests, as sweeps/verdict.py defines them:
    `for` (all must reject: max), `against` (either: min), `short` (below the claimed
    effect)."""
    if part.margin is not None and size is not None:
        delta = size[0]
        if part.kind == "matches_or_beats":
            return {"for": [d.p_above(-delta)], "against": [d.p_below(-delta)], "short": []}
        return {"for": [d.p_above(-delta), d.p_below(delta)],
                "against": [d.p_above(delta), d.p_below(-delta)], "short": []}
    short = [d.p_below(size[0])] if (part.effect is not None and size is not None) else []
    return {"for": [d.p_above(0.0)], "against": [d.p_below(0.0)], "short": short}


def merged(rows: list[Row], added: Added, table: Table) -> tuple[list[Row], list[Row]]:
    """(stage 2 alone, both stages): rows whose cells hold only the added seeds, and rows whose
    cells hold the table's seeds and the added ones. An added run goes to the cell it repeats
    (its optimizer overrides are that cell's); the chosen setting stays stage 1's."""
    by_row: dict[str, list[records.RunRecord]] = {}
    for record in sorted(added.runs, key=seed_of):
        by_row.setdefault(record.row, []).append(record)
    mode = table.metric.mode
    worst = math.inf if mode == "min" else -math.inf
    alone, both = [], []
    for row in rows:
        extra = by_row.get(row.label, [])
        if row.best is None or not extra:
            continue
        second, union = Row(row.key, best=row.best), copy.copy(row)
        union.cells = dict(row.cells)
        by_cell: dict[tuple | None, list[records.RunRecord]] = {}
        for record in extra:
            by_cell.setdefault(_cell_of(row, record), []).append(record)
        if None in by_cell:  # counted nowhere, it would vanish from the verdict unsaid
            stray = by_cell[None]
            raise records.RecordsError(f"{stray[0].where}: a stage-2 run of {row.label} that "
                                       f"repeats none of its settings ({len(stray)} such runs)")
        for setting, cell in row.cells.items():
            mine = by_cell.get(setting)
            if not mine:
                continue
            values = [v if (v := table.metric.of(r)) is not None else worst
                      for r in mine]
            later = copy.copy(cell)
            later.seeds, later.runs, later.values = [seed_of(r) for r in mine], mine, values
            second.cells[setting] = later
            joined = copy.copy(cell)
            joined.seeds = [*cell.seeds, *later.seeds]
            joined.runs, joined.values = [*cell.runs, *mine], [*cell.values, *values]
            union.cells[setting] = joined
        if row.best in second.cells:
            alone.append(second)
            both.append(union)
    kept = {r.key for r in both}
    return alone, [*both, *(r for r in rows if r.key not in kept)]


def _optim_overrides(record: records.RunRecord) -> tuple[str, ...]:
    return tuple(sorted(o for o in record.overrides if o.startswith("optim")))


def _cell_of(row: Row, record: records.RunRecord) -> tuple:
    """The setting of `row` that an added run repeats: the cell whose runs have its optimizer
    overrides (lr and tuned values); the chosen one for a run that names none."""
    mine = _optim_overrides(record)
    if not mine:
        return row.best
    return next((setting for setting, cell in row.cells.items()
                 if cell.runs and _optim_overrides(cell.runs[0]) == mine), None)


def _where(added: Added) -> str:
    """Where stage 2's seeds ran: the chosen settings, every lr (LR sensitivity), or both."""
    grid = f"every lr of {' and '.join(added.grid)} (their LR sensitivity is compared)"
    if not added.grid:
        return "at each compared row's chosen setting"
    if set(added.seeds) <= set(added.grid):
        return f"at {grid}"
    return f"at each compared row's chosen setting, and at {grid}"


def commits_of(runs) -> str:
    """The commits `runs` were made at, in order, short (a dirty tree's marked)."""
    return ", ".join(dict.fromkeys(str(r.get("git_commit"))[:12] + (
        "-dirty" if str(r.get("git_commit")).endswith("-dirty") else "") for r in runs))


def decide(table: Table, rows: list[Row], added: Added, grids: dict) -> verdict.Verdict:
    """The table's verdict under the two-stage design its stage 2 ran under: `rows` are stage
    1's."""
    design = added.design
    second, both = merged(rows, added, table)

    def stages(part: ClaimPart, comparisons: list[verdict.Comparison]) -> None:
        first = {(c.claimed, c.other): c for c in verdict.compare_part(table, part, rows, {})}
        later = {(c.claimed, c.other): c for c in verdict.compare_part(table, part, second,
                                                                        {})}
        for c in comparisons:
            one, two = first.get((c.claimed, c.other)), later.get((c.claimed, c.other))
            if one is None or one.difference is None:
                continue  # nothing to combine: decided (or not) by what ran
            p1 = _raw(part, one.difference, one.size)
            p2 = _raw(part, two.difference, two.size) if two is not None and \
                two.difference is not None else None
            combined = {test: [design.p_value(a, p2[test][i] if p2 else None)
                               for i, a in enumerate(ps)] for test, ps in p1.items()}
            c.p_for, c.p_against, c.p_short = _aggregate(combined).values()
            c.unfunded = p2 is None
            if c.unfunded:  # stage 1 alone decides it: its d is stage 1's, paired by seed, not
                # one row's stage-2 seeds (another comparison's) against the other's stage 1
                c.difference, c.means, c.size = one.difference, one.means, one.size
                c.minutes_a_seed = one.minutes_a_seed
            n2 = two.difference.n if p2 else 0
            c.stages = (f"stage 1 {one.difference.n} seeds d {one.difference.mean:+.3g}, "
                        f"stage 2 {n2} seeds" + (f" d {two.difference.mean:+.3g}" if p2 else "")
                        + f"; combined p {min(1.0, c.p_for):.3g} for, "
                          f"{min(1.0, c.p_against):.3g} against")

    result = verdict.decide(table, both, grids, stages)
    fixed = verdict.decide(table, rows, grids)
    added_seeds = sorted({s for seeds in added.seeds.values() for s in seeds})
    minutes = sum((r.get("wall_time_s") or 0.0) for r in added.runs) / 60.0
    commits = commits_of(added.runs)
    head = (f"Two stages (sweeps/sequential.py, `{added.command}`): stage 1 the table's seeds "
            f"({', '.join(map(str, table.seeds))}); stage 2 seeds "
            f"{added_seeds[0] if added_seeds else '-'}–{added_seeds[-1] if added_seeds else '-'} "
            + _where(added) + " ("
            + "; ".join(f"{k}: {len(v)}" for k, v in added.seeds.items())
            + f"), {len(added.runs)} runs made at commit {commits or '-'}, {minutes:.1f} min "
              f"of run time within a budget of "
              f"{added.budget_min:g} min; {design.describe()}. Stage 1 alone, as a fixed "
              f"design, read: {fixed.result} (superseded: not a result once stage 2 exists"
            + ("; as stage 2 was run after that fixed-design reading, the error of this "
               "verdict is at most 2α = 0.05 one-sided, not α)" if fixed.result in
               verdict.UNDECIDED else ")"))
    return verdict.Verdict(result.result, result.text, [head, *result.details])
