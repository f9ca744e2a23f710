"""A table's verdict on its claim: reproduced, not reproduced or inconclusive, by one declared
rule, with the numbers it was decided on.

The spec states the claim as a comparison of rows (`verdict: {kind, row, than}`, by the rows'
labels without ablation; `than` may list several rows, and the claim must hold against each):
- `better`: `row`'s metric beats `than`'s (the table's metric and its mode);
- `matches_or_beats`: `row`'s metric is not worse than `than`'s beyond the noise (the papers'
  "matches or beats": a difference within the noise counts as matching);
- `matches`: `row`'s metric is within the noise of `than`'s, either way (a flatness claim,
  "results are almost unchanged"): reproduced when |d| ≤ 2·se, not reproduced when a
  difference beyond the noise shows; the numbers say how fine that noise is;
- `average_rank`: `row`'s rank among the optimizers, averaged over the table's variants (e.g.
  one variant per dataset, as GraphLand reports), is below `than`'s: ranks per seed, then the
  rule below over seeds;
- `sensitivity`: `row`'s LR sensitivity is below `than`'s. LR sensitivity as Wortsman et al.
  2023 ("Small-scale proxies for large-scale Transformer training instabilities", §3.1) define
  it: the mean over the lr grid of min(ℓ(η), ℓ₀) − min_η ℓ(η), with ℓ₀ the loss at
  initialization (a diverged run counts as ℓ₀), per seed, over the lrs both rows ran.

Rule: d = how much `row` is better than `than` (positive: the claimed direction), se the
standard error of that difference over seeds (sqrt(s₁²/n₁ + s₂²/n₂); for accuracies the
binomial error p(1−p)/(questions·seeds) of each row is added). Reproduced when d > 2·se (for
`matches_or_beats`: d ≥ −2·se; for `matches`: |d| ≤ 2·se), not reproduced when d < −2·se (for
`matches`: |d| > 2·se), inconclusive in between or when either row has fewer than MIN_SEEDS
seeds. Against several rows: not reproduced if against any, reproduced if against all,
inconclusive otherwise.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from sweeps.collect import Row
from sweeps.spec import Table

MIN_SEEDS = 3
Z = 2.0


@dataclass
class Verdict:
    result: str  # reproduced | not reproduced | inconclusive
    text: str  # the numbers it rests on

    @property
    def line(self) -> str:
        return f"Verdict: {self.result} — {self.text}"


def decide(table: Table, rows: list[Row]) -> Verdict:
    v = table.verdict
    if v is None:
        return Verdict("inconclusive", "the spec states no comparison to decide its claim by")
    if v.kind == "average_rank":
        row, than = v.pairs[0]
        return _average_rank(table, row.optim, [k.optim for k in than], rows)
    by_key = {r.key: r for r in rows if not r.key.ablation}
    verdicts = []
    for row, than in v.pairs:
        for other in than:
            a, b = by_key.get(row), by_key.get(other)
            if a is None or b is None:
                verdicts.append(Verdict("inconclusive", f"rows {row.base!r} and {other.base!r} "
                                                        f"did not both run"))
            elif v.kind == "sensitivity":
                verdicts.append(_sensitivity(a, b))
            else:
                verdicts.append(_better(table, a, b))
    return _combine(verdicts)


def _combine(verdicts: list[Verdict]) -> Verdict:
    """The claim against several rows: not reproduced if against any, reproduced if against
    all, inconclusive otherwise."""
    results = {x.result for x in verdicts}
    result = ("not reproduced" if "not reproduced" in results else
              "reproduced" if results == {"reproduced"} else "inconclusive")
    return Verdict(result, " | ".join(x.text for x in verdicts))


def _better(table: Table, a: Row, b: Row) -> Verdict:
    mode, name, kind = table.metric.mode, table.metric.name, table.verdict.kind
    if a.mean is None or b.mean is None:
        failed = [r.label for r in (a, b) if r.mean is None]
        result = "not reproduced" if a.mean is None and b.mean is not None else "inconclusive"
        return Verdict(result, f"{', '.join(failed)} diverged at every setting")
    d = (b.mean - a.mean) if mode == "min" else (a.mean - b.mean)
    var = (a.std or 0.0) ** 2 / a.n + (b.std or 0.0) ** 2 / b.n
    if table.verdict.binomial:
        for r in (a, b):
            questions = _mean_of(r, table.verdict.binomial)
            if questions:
                var += r.mean * (1.0 - r.mean) / (questions * r.n)
    numbers = (f"{name}: {a.label} {a.mean:.4g}, {b.label} {b.mean:.4g} "
               f"(n = {a.n}, {b.n} seeds); {a.label} better by {d:.4g}")
    return _rule(d, math.sqrt(var), min(a.n, b.n), numbers, kind)


def _sensitivity(a: Row, b: Row) -> Verdict:
    lrs = sorted({c.lr for c in a.cells.values()} & {c.lr for c in b.cells.values()})
    sa, sb = lr_sensitivity(a, lrs), lr_sensitivity(b, lrs)
    if not sa or not sb:
        return Verdict("inconclusive", "no lr both rows ran at")
    ma, mb = statistics.mean(sa), statistics.mean(sb)
    var = sum(statistics.variance(s) / len(s) if len(s) > 1 else 0.0 for s in (sa, sb))
    return _rule(mb - ma, math.sqrt(var), min(len(sa), len(sb)),
                 f"LR sensitivity over {len(lrs)} lrs ({lrs[0]:g}–{lrs[-1]:g}): "
                 f"{a.label} {ma:.4g}, {b.label} {mb:.4g} (n = {len(sa)}, {len(sb)} seeds); "
                 f"{a.label} lower by {mb - ma:.4g}")


def ranks(values: dict[str, float], mode: str) -> dict[str, float]:
    """Rank 1 for the best value; ties share their mean rank; a missing value ranks last."""
    sign = 1.0 if mode == "min" else -1.0
    keyed = {k: sign * v if v is not None and math.isfinite(v) else math.inf
             for k, v in values.items()}
    ordered = sorted(keyed.values())
    return {k: statistics.mean(i + 1 for i, x in enumerate(ordered) if x == v)
            for k, v in keyed.items()}


def average_ranks(rows: list[Row], mode: str, seed: int | None = None) -> dict[str, float]:
    """Each optimizer's rank within each variant (by its mean at the chosen setting, or by one
    seed's value there), averaged over the variants."""
    per_optim: dict[str, list[float]] = {}
    for variant in dict.fromkeys(r.key.variant for r in rows if not r.key.ablation):
        mine = [r for r in rows if r.key.variant == variant and not r.key.ablation]
        if seed is None:
            values = {r.key.optim: r.mean for r in mine}
        else:
            values = {r.key.optim: _seed_value(r, seed) for r in mine}
        for optim, rank in ranks(values, mode).items():
            per_optim.setdefault(optim, []).append(rank)
    return {optim: statistics.mean(rs) for optim, rs in per_optim.items()}


def _seed_value(row: Row, seed: int) -> float | None:
    values = row.values
    return values[seed] if seed < len(values) else None


def _average_rank(table: Table, row: str, others: list[str], rows: list[Row]) -> Verdict:
    mode = table.metric.mode
    seeds = min((r.n for r in rows if r.mean is not None), default=0)
    per_seed = [average_ranks(rows, mode, k) for k in range(seeds)]
    overall = average_ranks(rows, mode)
    verdicts = []
    for other in others:
        a = [x[row] for x in per_seed if row in x and other in x]
        b = [x[other] for x in per_seed if row in x and other in x]
        if not a:
            verdicts.append(Verdict("inconclusive", f"{row} and {other} did not both run"))
            continue
        diffs = [y - x for x, y in zip(a, b)]  # paired by seed: how much lower row's rank is
        se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
        verdicts.append(_rule(statistics.mean(diffs), se, len(diffs),
                              f"average rank over variants: {row} {overall.get(row, 0):.3g}, "
                              f"{other} {overall.get(other, 0):.3g} (per seed: {row} lower "
                              f"by {statistics.mean(diffs):.3g} on average, n = {len(diffs)})"))
    return _combine(verdicts)


def lr_sensitivity(row: Row, lrs: list[float]) -> list[float]:
    """Per seed: mean over `lrs` of min(ℓ(η), ℓ₀) − min_η ℓ(η), at the untuned setting of each
    lr (the first `tune` setting), for a metric that is minimized."""
    cells = {lr: next(c for c in row.cells.values() if c.lr == lr) for lr in lrs}
    seeds = min(len(c.values) for c in cells.values())
    out = []
    for k in range(seeds):
        capped = []
        for cell in cells.values():
            value, start = cell.values[k], cell.initial[k]
            start = start if start is not None and math.isfinite(start) else math.inf
            capped.append(min(value, start))
        if not all(math.isfinite(x) for x in capped):
            continue
        best = min(capped)
        out.append(statistics.mean(x - best for x in capped))
    return out


def _rule(d: float, se: float, seeds: int, numbers: str, kind: str = "better") -> Verdict:
    text = f"{numbers}; 2·se = {Z * se:.3g}"
    if seeds < MIN_SEEDS:
        return Verdict("inconclusive", f"{text}; fewer than {MIN_SEEDS} seeds")
    if kind == "matches":  # a claim of no difference fails when one shows beyond the noise
        if abs(d) <= Z * se:
            return Verdict("reproduced", f"{text}; equal within the noise")
        return Verdict("not reproduced", f"{text}; a difference beyond the noise")
    if d > Z * se:
        return Verdict("reproduced", text)
    if kind == "matches_or_beats" and d >= -Z * se:
        return Verdict("reproduced", f"{text}; matches within the noise")
    if d < -Z * se:
        return Verdict("not reproduced", f"{text}; the difference goes the other way")
    return Verdict("inconclusive", f"{text}; the difference is within the noise")


def _mean_of(row: Row, key: str) -> float | None:
    """The mean of a summary key over the row's runs at its chosen setting."""
    xs = [r.get(key) for r in row.best_runs]
    xs = [x for x in xs if isinstance(x, (int, float))]
    return statistics.mean(xs) if xs else None
