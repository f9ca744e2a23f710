"""A paper table's spec, conf/table/<name>.yaml, loaded and checked once into typed parts, and
resolved per scale into the `Table` that expanding, collecting, deciding and rendering read.

Spec keys (the YAML file):
    name, title, claim            what is reproduced and which claim the table tests
    scales: {tiny: {...}, paper: {...}, paper_<x>: {...}}
        label, overrides          the task preset and run length at this scale; `tiny` runs on 2
                                  CPU cores and is labelled a miniature everywhere; every other
                                  scale is a paper's setting and names the source of each
                                  setting (`sources:`, sweeps/sources.py)
        regime                    why this setting can show the claim (printed)
        per_optimizer: {<optim>: [overrides]}   scale-specific overrides (S3 at T/2)
        optimizers: {<optim>: {lr, tune, overrides}}   a scale's own search space, replacing
                                  those keys of the top-level entry
        drop: [<optim>]           optimizers a scale leaves out (never those its verdict or
                                  ratios compare)
        seeds, metric, paper, variants, verdict, extend_edges   the scale's own, over the
                                  top-level ones
    optimizers: {<optim>: {lr: [...], tune: {<optim key>: [...]}, overrides: [...]}}
                                  every optimizer gets a search space of the SAME size (the
                                  fair-tuning rule): its lr grid times its `tune` grids
    lr_multipliers: [1, 3, 10]    rows per multiple of each optimizer's first lr (untuned)
    variants: {<label>: [overrides]}   an extra axis (model sizes, p, α_sign, datasets)
    seeds: [...]; metric: {key, mode, label, ceiling, resolution, count_divergence}
    report: [summary keys]
    ratios: [{key, versus: [optim...], label, speedup}]   derived columns (sweeps/collect.py)
    paper: {<row>: value}         the paper's numbers, shown beside ours, never mixed in
    figures: [name]               further figures (sweeps/figures.py FIGURES)
    extend_edges: N               edge-aware tuning (sweeps/edges.py), at most N extensions
    verdict: {kind, row, than, margin, effect, binomial, metric, label}, or a list of them
                                  the claim as comparisons (sweeps/verdict.py); rows are named
                                  by label (`optim`, `optim variant`, `optim 3×lr`), an
                                  optimizer's name in a table with variants meaning its row in
                                  each; `margin` {value, source, relative} is what `matches`
                                  and `matches_or_beats` count as equal; `effect` the smallest
                                  difference a claim is about; `metric` a summary key a part
                                  is decided on (a claim on cost); no verdict: no claim
    untested: "..."               what the claim says that this scale cannot test, and why
    average_rank: true            print each optimizer's rank averaged over the variants
    aux_lr: tied | {value, source} | sources   the Muon family's auxiliary Adam lr rule
                                  (sweeps/fairness.py, which also holds every row of a
                                  miniature to one weight decay)
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import OmegaConf

from sweeps import fairness, sources, yamlfile
from sweeps.compose import option_file
from tasks.train import identity

if TYPE_CHECKING:
    from sweeps.records import RunRecord

TABLE_DIR = Path(__file__).resolve().parent.parent / "conf" / "table"
OPTIM_DIR = TABLE_DIR.parent / "optim"
MINIATURE = "tiny"  # every other scale is a paper's setting
TABLE_NAME = re.compile(r"[a-z0-9][a-z0-9_]*")  # one file and one results folder, nowhere else
VERDICT_KINDS = ("better", "matches_or_beats", "matches", "sensitivity", "average_rank")
FIGURE_NAMES = ("p_per_layer", "update_vs_spikes")  # sweeps/figures.py FIGURES
SPEC_KEYS = ("name", "title", "claim", "scales", "optimizers", "seeds", "metric", "report",
             "paper", "verdict", "figures", "variants", "ratios", "average_rank",
             "lr_multipliers", "extend_edges", "untested", "aux_lr")
SCALE_KEYS = ("label", "overrides", "sources", "regime", "seeds", "extend_edges", "optimizers",
              "variants", "per_optimizer", "drop", "paper", "metric", "verdict", "untested",
              "aux_lr")
CLAIM_KEYS = ("kind", "row", "than", "pairs", "binomial", "margin", "effect", "metric",
              "label")
AMOUNT_KEYS = ("value", "source", "relative")
METRIC_KEYS = ("key", "mode", "label", "ceiling", "resolution", "count_divergence")


class SpecError(ValueError):
    """A table spec that cannot run; the message names the table, the scale and the key."""


def is_paper_scale(scale: str) -> bool:
    return scale != MINIATURE


def available(tables: Path = TABLE_DIR) -> list[str]:
    return sorted(p.stem for p in Path(tables).glob("*.yaml"))


# ---------------------------------------------------------------- the parts


@dataclass(frozen=True)
class RowKey:
    """What a table row is: an optimizer, and which of the spec's variants, lr multiples and
    ablation overrides it runs with."""

    optim: str
    variant: str = ""
    multiplier: float | None = None
    ablation: tuple[str, ...] = ()

    @property
    def base(self) -> str:
        """The row without its ablation: what the paper's numbers and verdicts name."""
        return self.optim + (f" {self.variant}" if self.variant else "") + (
            f" {self.multiplier:g}×lr" if self.multiplier is not None else "")

    @property
    def label(self) -> str:
        return self.base + (f" [{' '.join(self.ablation)}]" if self.ablation else "")


@dataclass(frozen=True)
class Metric:
    key: str  # a summary key, e.g. final.val_loss
    mode: str = "min"  # min | max
    label: str = ""
    ceiling: float | None = None  # the best value the metric can take (1 for an accuracy)
    resolution: float | None = None  # its step (1/N for an accuracy over N items)
    # An instability count (loss spikes): a diverged run scores its count so far plus one, the
    # divergence being an event it did not survive, so the seed stays in the test rather than
    # taking the whole setting (and with a one-point grid the row) out of it
    count_divergence: bool = False

    def of(self, record: RunRecord) -> float | None:
        """A run's value of this metric; None for a run that has none (diverged, failed)."""
        if self.count_divergence and record.status == "diverged":
            return record.divergence_count(self.key)
        return record.metric(self.key)

    @property
    def name(self) -> str:
        return self.label or self.key


@dataclass(frozen=True)
class Search:
    """One optimizer's search space: an lr grid times the grids of its `tune` keys."""

    lr: tuple[float, ...]
    tune: tuple[tuple[str, tuple], ...] = ()
    overrides: tuple[str, ...] = ()

    @property
    def budget(self) -> int:
        return len(self.lr) * math.prod(len(values) for _, values in self.tune)

    def settings(self) -> list[tuple[tuple[str, object], ...]]:
        """The `tune` grid, one ((key, value), ...) per configuration."""
        keys = [k for k, _ in self.tune]
        return [tuple(zip(keys, values))
                for values in itertools.product(*(v for _, v in self.tune))]

    def grids(self) -> dict[str, tuple]:
        return {"lr": self.lr, **dict(self.tune)}


@dataclass(frozen=True)
class Ratio:
    key: str  # a report key
    versus: tuple[str, ...]  # optimizers whose best finished value is the reference
    label: str
    speedup: bool = False  # reference / row instead of row / reference


@dataclass(frozen=True)
class Amount:
    """A margin or an effect size in the metric's units, or (relative) as a share of the other
    row's mean; with where it comes from (the paper's own gap, or a stated practical
    difference)."""

    value: float
    source: str
    relative: bool = False

    def of(self, reference: float) -> float:
        return self.value * abs(reference) if self.relative else self.value

    def describe(self, reference: float) -> str:
        amount = f"{self.of(reference):.3g}"
        share = f" ({100 * self.value:.3g}% of {reference:.4g})" if self.relative else ""
        return f"{amount}{share}; {self.source}"


@dataclass(frozen=True)
class ClaimPart:
    """One part of a table's claim as comparisons: each of `pairs` is (the claimed row, the
    rows it is compared with); a label that names an optimizer of a table with variants stands
    for its row in each variant, compared with the other rows of the same variant.

    `margin` (δ) is what `matches` and `matches_or_beats` need; `effect` is the smallest
    difference the claim is about (for the power of `better`, `sensitivity`, `average_rank`);
    `metric` a summary key the part is decided on instead of the table's (at each row's chosen
    setting), e.g. the optimizer's step time for a claim on cost."""

    kind: str
    pairs: tuple[tuple[RowKey, tuple[RowKey, ...]], ...]
    binomial: str | None = None  # summary key of the question count of an accuracy
    margin: Amount | None = None
    effect: Amount | None = None
    metric: Metric | None = None
    label: str = ""

    @property
    def rows(self) -> set[RowKey]:
        return {key for row, than in self.pairs for key in (row, *than)}


@dataclass(frozen=True)
class Run:
    row: RowKey
    lr: float
    seed: int
    overrides: tuple[str, ...]
    tuned: tuple = ()  # ((optim key, value), ...) of the `tune` search space

    @property
    def setting(self) -> tuple:
        return (self.lr, self.tuned)

    @property
    def optim(self) -> str:
        return self.row.optim


@dataclass(frozen=True)
class Table:
    """A table spec at one scale: everything expanding, collecting, deciding and rendering
    read, each key already resolved against the scale's own."""

    name: str
    title: str
    claim: str
    scale: str
    scale_label: str
    overrides: tuple[str, ...]
    per_optimizer: dict  # optim → overrides
    optimizers: dict  # optim → Search, less the dropped ones
    variants: dict  # label → overrides ({"": ()} without variants)
    lr_multipliers: tuple[float, ...]
    seeds: tuple[int, ...]
    metric: Metric
    report: tuple[str, ...]
    ratios: tuple[Ratio, ...]
    paper: dict  # row base label → the paper's number
    figures: tuple[str, ...]
    extend_edges: int
    claim_parts: tuple[ClaimPart, ...]  # the claim as comparisons; () for no claim
    untested: str  # what the claim says that this scale cannot test, and why
    regime: str
    average_rank: bool
    sources: dict  # scale → its sources block (every paper scale's, for a miniature's footer)
    aux_rule: fairness.AuxRule | None = None  # None: no Muon-family rows
    # config folders searched after conf/ when its runs compose (a contender's optimizer)
    extra_conf: tuple[Path, ...] = ()

    @property
    def tied(self) -> bool:
        return self.aux_rule is not None and self.aux_rule.kind == "tied"

    def placeholder_aux(self) -> dict[str, float]:
        """A tied aux lr for planning and checking, before the adamw row has chosen one."""
        return {variant: 0.0 for variant in self.variants}

    @property
    def is_paper(self) -> bool:
        return is_paper_scale(self.scale)

    def row_keys(self, ablation: tuple[str, ...] = ()) -> list[RowKey]:
        """Every row the table has at this scale, in order."""
        return [RowKey(optim, variant, mult, ablation) for optim in self.optimizers
                for variant in self.variants for mult in (self.lr_multipliers or (None,))]

    def expand(self, extra: list[str] = (), grids: dict[str, list[float]] | None = None,
               aux: dict[str, float] | None = None) -> list[Run]:
        """The table's runs. Extra overrides apply to every run; `optim=X` keeps only X's rows,
        and `optim.<key>=...` applies to the optimizers that have that key (an ablation).
        `grids` replaces a row's lr grid (by row label): the grid edge-aware tuning widened.
        `aux`: variant → the aux lr a tied table's Muon-family rows run with (the adamw row's
        chosen lr; sweeps/fairness.py); a tied table's Muon rows cannot expand without it."""
        only = [o.split("=", 1)[1] for o in extra if o.startswith("optim=")]
        if only and only[0] not in self.optimizers:
            raise SpecError(f"optim={only[0]} is not in table {self.name}: "
                            f"{list(self.optimizers)}")
        optim_keys = [o for o in extra if o.startswith("optim.")]
        plain = [o for o in extra if not o.startswith(("optim=", "optim."))]
        runs = []
        for optim, search in self.optimizers.items():
            if only and optim != only[0]:
                continue
            mine = tuple(o for o in optim_keys if has_key(optim, o, self.extra_conf))
            tied = self.tied and fairness.is_muon_family(optim, self.extra_conf)
            # paper-scale runs are long enough to amortize a compile: the compiled kernels by
            # default where the optimizer has them (a run without a compiler falls back, with
            # a notice: tasks/train/assemble.py); `optim.fused=false` overrides it
            compiled = ("optim.fused=true",) if self.is_paper and \
                has_key(optim, "fused", self.extra_conf) else ()
            shared = self.shared_overrides(optim)
            if tied and aux is None:
                raise SpecError(f"table {self.name}: {optim}'s aux lr is tied to the "
                                f"{fairness.REFERENCE} row's chosen lr; tune that row first "
                                f"(reproduce.py does) and pass it as `aux`")
            for label, variant in self.variants.items():
                tie = (f"optim.aux_lr={aux[label]:g}",) if tied else ()
                for mult in self.lr_multipliers or (None,):
                    row = RowKey(optim, label, mult, mine)
                    lrs = search.lr if mult is None else (search.lr[0] * mult,)
                    if mult is None and grids and row.label in grids:
                        lrs = grids[row.label]
                    for lr, tuned in itertools.product(lrs, search.settings()):
                        for seed in self.seeds:
                            runs.append(Run(row, lr, seed, (
                                *shared, f"optim={optim}", *compiled, *search.overrides,
                                *self.per_optimizer.get(optim, ()), *variant, *tie,
                                f"optim.lr={lr:g}", *[f"optim.{k}={v}" for k, v in tuned],
                                f"seed={seed}", *plain, *mine), tuned))
        if optim_keys and not any(has_key(r.optim, o, self.extra_conf) for r in runs
                                  for o in optim_keys):
            raise SpecError(f"no optimizer of table {self.name} has {optim_keys}")
        return runs

    def shared_overrides(self, optim: str) -> tuple[str, ...]:
        """The scale's overrides as `optim` takes them: an `optim.<key>=` override applies to
        the optimizers that have the key, as an ablation does (`aux_weight_decay` to the rows
        with an auxiliary Adam). The weight decay is the exception, a rule for every row
        (sweeps/fairness.py): an optimizer without the argument (a contender) may leave out a
        decay of 0, with nothing to apply, and is refused any other, which it would not get."""
        out = []
        for o in self.overrides:
            if not o.startswith("optim.") or has_key(optim, o, self.extra_conf):
                out.append(o)
                continue
            key, value = o.split("=", 1)
            if key == "optim.weight_decay" and \
                    value.strip().lower() not in ("0", "0.0", "false", "null", "none"):
                raise SpecError(f"table {self.name}: {optim} takes no weight_decay, and the "
                                f"table decays every row ({o}); {optim} would not get what "
                                f"every other row gets. Give a contender that takes "
                                f"weight_decay (or a table that sets it to 0)")
        return tuple(out)

    def spec_grids(self, runs: list[Run]) -> dict[str, list[float]]:
        """Each tuned row's lr grid as the spec gives it, ascending (rows at fixed lr multiples
        are not tuned)."""
        return {r.row.label: sorted(self.optimizers[r.optim].lr) for r in runs
                if r.row.multiplier is None}

    def sweep_name(self, extra: list[str]) -> tuple[str, list[str]]:
        """(sweep name, ablation overrides): an ablation (overrides that change what is
        computed, not where it runs or logs) gets its own sweep name and results folder."""
        ablation = sorted(o for o in extra if _override_key(o) not in identity.NON_IDENTITY_KEYS)
        suffix = ("-" + hashlib.sha1(" ".join(ablation).encode()).hexdigest()[:6]
                  if ablation else "")
        return f"table-{self.name}-{self.scale}{suffix}", ablation

    def folder(self, extra: list[str]) -> str:
        """results/<table>/<this folder>: the scale, with the ablation's hash if any."""
        name, _ = self.sweep_name(extra)
        suffix = name.removeprefix(f"table-{self.name}-{self.scale}").lstrip("-")
        return self.scale + (f"-{suffix}" if suffix else "")


def has_key(optim: str, override: str, extra_conf: tuple[Path, ...] = ()) -> bool:
    """Whether conf/optim/<optim>.yaml (or a contender's, in `extra_conf`) has the key an
    `optim.<key>=...` override sets."""
    key = override.split("=", 1)[0].removeprefix("optim.").lstrip("+")
    path = option_file("optim", optim, extra_conf)
    if not path.exists():  # a contender's config not written here (a table rebuilt from its
        return True        # records): its runs are not composed, only counted
    return key in OmegaConf.load(path)


def _override_key(override: str) -> str:
    """The top-level config key an override sets (`+a.b=1` → `a`)."""
    return override.split("=", 1)[0].lstrip("+~").split(".", 1)[0]


# ---------------------------------------------------------------- loading and checking


@dataclass(frozen=True)
class TableSpec:
    """A table spec as loaded: the raw scales are resolved by `at(scale)`."""

    name: str
    raw: dict  # the YAML, resolved; read only here
    tables: Path = TABLE_DIR  # the folder it was read from

    @property
    def scales(self) -> list[str]:
        return list(self.raw["scales"])

    def at(self, scale: str) -> Table:
        if scale not in self.raw["scales"]:
            raise SpecError(f"scale must be one of {self.scales}, got {scale!r}")
        return _resolve(self.name, self.raw, scale)


def load(name: str, tables: Path = TABLE_DIR) -> TableSpec:
    """<tables>/<name>.yaml (conf/table/ unless a test says otherwise), checked at every scale
    (each resolves, its rows are the table's, every optimizer gets the same budget); SpecError
    naming what is wrong."""
    if not isinstance(name, str) or not TABLE_NAME.fullmatch(name):
        raise SpecError(f"a table name is letters, digits and _ (it names conf/table/<name>.yaml "
                        f"and results/<name>/), got {name!r}; available: {available(tables)}")
    path = Path(tables) / f"{name}.yaml"
    if not path.exists():
        raise SpecError(f"unknown table {name!r}; available: {available(tables)}")
    try:
        raw = yamlfile.load(path, f"table {name}")
    except yamlfile.YamlError as e:
        raise SpecError(str(e)) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("scales"), dict):
        raise SpecError(f"table {name}: {path} must be a map with `scales:` (see "
                        f"conf/table/quickstart.yaml)")
    _check_keys(f"table {name}", raw, SPEC_KEYS)
    if raw.get("name") != name:
        raise SpecError(f"table {name}: `name` must be {name!r} (the file's name), got "
                        f"{raw.get('name')!r}")
    if "paper" not in raw["scales"] or MINIATURE not in raw["scales"]:
        raise SpecError(f"table {name}: scales must include {MINIATURE!r} and 'paper', got "
                        f"{list(raw['scales'])}")
    spec = TableSpec(name, raw, Path(tables))
    for scale in spec.scales:
        _check_keys(f"table {name}, scale {scale}", raw["scales"][scale], SCALE_KEYS)
        if is_paper_scale(scale):
            try:
                sources.validate(name, scale, raw["scales"][scale].get("sources"))
            except ValueError as e:
                raise SpecError(str(e)) from None
        spec.at(scale)  # every check of a resolved scale
    return spec


def _check_keys(where: str, section: dict, allowed) -> None:
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise SpecError(f"{where}: unknown keys {unknown}; a spec has {sorted(allowed)}")


def _resolve(name: str, raw: dict, scale: str) -> Table:
    own = raw["scales"][scale]
    where = f"table {name}, scale {scale}"

    def pick(key, default=None):
        return own[key] if key in own else raw.get(key, default)

    unknown = sorted(set(own.get("optimizers") or {}) - set(raw["optimizers"]))
    if unknown:
        raise SpecError(f"table {name}: scales.{scale}.optimizers names {unknown}, not among "
                        f"the table's optimizers {list(raw['optimizers'])}")
    drop = tuple(own.get("drop") or ())
    if sorted(set(drop) - set(raw["optimizers"])):
        raise SpecError(f"table {name}: scales.{scale}.drop names "
                        f"{sorted(set(drop) - set(raw['optimizers']))}, not among the table's "
                        f"optimizers {list(raw['optimizers'])}")
    optimizers = {}
    for optim, entry in raw["optimizers"].items():
        if optim in drop:
            continue
        entry = {**entry, **((own.get("optimizers") or {}).get(optim) or {})}
        for key in entry.get("tune") or {}:
            if not has_key(optim, f"optim.{key}"):
                raise SpecError(f"table {name}: optimizers.{optim}.tune.{key}: {optim} has no "
                                f"key {key!r} (conf/optim/{optim}.yaml)")
        optimizers[optim] = Search(tuple(entry["lr"]),
                                   tuple((k, tuple(v)) for k, v in (entry.get("tune") or {})
                                         .items()),
                                   tuple(entry.get("overrides") or ()))
    budgets = {o: s.budget for o, s in optimizers.items()}
    if len(set(budgets.values())) > 1:
        raise SpecError(f"{where}: search spaces differ in size {budgets}; the fair-tuning "
                        f"rule gives every optimizer the same budget")
    metric = _metric(f"{where}: metric", pick("metric"))
    ratios = tuple(Ratio(r["key"], tuple(r["versus"]), r.get("label", f"{r['key']} ratio"),
                         bool(r.get("speedup"))) for r in raw.get("ratios") or ())
    for ratio in ratios:
        missing = [o for o in ratio.versus if o not in raw["optimizers"]]
        if ratio.key not in (raw.get("report") or []) or missing:
            raise SpecError(f"table {name}: ratio {ratio.label!r} needs its key {ratio.key!r} "
                            f"among report {raw.get('report', [])} and its versus rows among "
                            f"the optimizers (not: {missing})")
    figures = tuple(raw.get("figures") or ())
    if set(figures) - set(FIGURE_NAMES):
        raise SpecError(f"table {name}: unknown figures {sorted(set(figures) - set(FIGURE_NAMES))}"
                        f"; known: {sorted(FIGURE_NAMES)}")
    variants = {label: tuple(ov) for label, ov in (pick("variants") or {"": []}).items()}
    table = Table(
        name=name, title=raw["title"], claim=raw["claim"], scale=scale,
        scale_label=own["label"], overrides=tuple(own["overrides"]),
        per_optimizer={o: tuple(v) for o, v in (own.get("per_optimizer") or {}).items()},
        optimizers=optimizers, variants=variants,
        lr_multipliers=tuple(raw.get("lr_multipliers") or ()),
        seeds=tuple(pick("seeds")), metric=metric,
        report=tuple(raw.get("report") or ()), ratios=ratios, paper=dict(pick("paper") or {}),
        figures=figures, extend_edges=int(pick("extend_edges", 0)), claim_parts=(),
        untested=str(pick("untested", "") or ""), regime=own.get("regime") or "",
        average_rank=bool(raw.get("average_rank")),
        sources={s: raw["scales"][s].get("sources") or {} for s in raw["scales"]})
    if any(fairness.is_muon_family(o) for o in optimizers):
        try:
            rule = fairness.parse_aux_rule(where, pick("aux_lr"), not table.is_paper, optimizers)
        except fairness.FairnessError as e:
            raise SpecError(str(e)) from None
        if rule.kind == "tied" and table.lr_multipliers:
            raise SpecError(f"{where}: aux_lr: tied needs a tuned {fairness.REFERENCE} row; this "
                            f"table runs fixed lr multiples")
        table = replace(table, aux_rule=rule)
    elif pick("aux_lr") is not None:
        raise SpecError(f"{where}: aux_lr is a rule for Muon-family rows; the table has none "
                        f"({list(optimizers)})")
    try:
        fairness.check(where, table.expand(aux=table.placeholder_aux()), table.aux_rule,
                       not table.is_paper)
    except fairness.FairnessError as e:
        raise SpecError(str(e)) from None
    raw_verdict = pick("verdict")
    parts = raw_verdict if isinstance(raw_verdict, list) else [raw_verdict] if raw_verdict else []
    return replace(table, claim_parts=tuple(_claim_part(name, table, part, drop)
                                            for part in parts))


def _metric(where: str, raw: dict) -> Metric:
    _check_keys(where, raw, METRIC_KEYS)
    if raw.get("mode", "min") not in ("min", "max"):
        raise SpecError(f"{where}.mode must be min or max, got {raw.get('mode')!r}")
    resolution = raw.get("resolution")
    if resolution is not None and (not isinstance(resolution, (int, float)) or resolution <= 0):
        raise SpecError(f"{where}.resolution must be the metric's step, a number > 0 (1/N for "
                        f"an accuracy over N items), got {resolution!r}")
    count_divergence = raw.get("count_divergence", False)
    if not isinstance(count_divergence, bool):
        raise SpecError(f"{where}.count_divergence must be true or false, got "
                        f"{count_divergence!r}")
    if count_divergence and raw.get("mode", "min") != "min":
        raise SpecError(f"{where}.count_divergence is for a count of events, which is minimized "
                        f"(mode: min); got mode {raw.get('mode')!r}")
    return Metric(raw["key"], raw.get("mode", "min"), raw.get("label", ""), raw.get("ceiling"),
                  resolution, count_divergence)


def _amount(where: str, raw) -> Amount | None:
    if raw is None:
        return None
    _check_keys(where, raw, AMOUNT_KEYS)
    value, source = raw.get("value"), str(raw.get("source") or "").strip()
    if not isinstance(value, (int, float)) or value <= 0 or not source:
        raise SpecError(f"{where} needs a value > 0 and its source (the paper's own gap, or a "
                        f"stated practical difference), got {raw!r}")
    return Amount(float(value), source, bool(raw.get("relative")))


def _claim_part(name: str, table: Table, raw: dict, drop: tuple[str, ...]) -> ClaimPart:
    """One part of the claim, each row label resolved to one of the table's rows here."""
    where = f"table {name}, scale {table.scale}: verdict"
    _check_keys(where, raw, CLAIM_KEYS)
    kind = raw.get("kind", "better")
    if kind not in VERDICT_KINDS:
        raise SpecError(f"table {name}: verdict.kind must be one of {list(VERDICT_KINDS)}, got "
                        f"{kind!r}")
    margin, effect = _amount(f"{where}.margin", raw.get("margin")), \
        _amount(f"{where}.effect", raw.get("effect"))
    if kind in ("matches", "matches_or_beats") and margin is None:
        raise SpecError(f"{where}: a `{kind}` claim needs its margin δ "
                        f"(margin: {{value, source, relative}}): what counts as equal")
    if kind not in ("matches", "matches_or_beats") and margin is not None:
        raise SpecError(f"{where}: a margin is for `matches` and `matches_or_beats`; a `{kind}` "
                        f"claim states its effect size (effect: ...)")
    rows = {key.base: key for key in table.row_keys()}
    optimizers = set(table.optimizers)
    if kind == "average_rank":  # ranks average over the variants: it names optimizers
        rows = {optim: RowKey(optim) for optim in optimizers}
    dropped = {RowKey(o, v, m).base: o for o in drop for v in ("", *table.variants)
               for m in (table.lr_multipliers or (None,))}  # named, to say they were dropped
    # a ratio takes the best of its `versus` rows that ran: a scale may drop some, not all
    needed = {o for ratio in table.ratios if set(ratio.versus) <= set(drop)
              for o in ratio.versus}

    def resolve(key: str, label) -> list[RowKey]:
        """One row, or (an optimizer's name in a table with variants) one row per variant."""
        if label in rows:
            return [rows[label]]
        if label in optimizers:
            return [RowKey(label, variant) for variant in table.variants]
        if label in dropped:
            needed.add(dropped[label])
            return [RowKey(dropped[label])]
        raise SpecError(f"table {name}: verdict.{key} must name rows of the table (one of "
                        f"{sorted(rows)}) or its optimizers, got {label!r}")

    pairs = []
    if "pairs" in raw:  # several claimed rows, each against its own: one Holm family
        listed = raw["pairs"]
        if "row" in raw or "than" in raw or kind == "average_rank" or not isinstance(
                listed, list) or not listed or not all(
                isinstance(p, list) and len(p) == 2 for p in listed):
            raise SpecError(f"{where}.pairs: a list of [claimed row, other row] pairs, in place "
                            f"of row and than (not for average_rank), got {listed!r}")
        for claimed_label, other_label in listed:
            mine, theirs = resolve("pairs", claimed_label), resolve("pairs", other_label)
            if len(mine) != 1 or len(theirs) != 1:
                raise SpecError(f"{where}.pairs: name one row each, got {claimed_label!r} vs "
                                f"{other_label!r}")
            pairs.append((mine[0], (theirs[0],)))
    else:
        than = raw.get("than")
        claimed = resolve("row", raw.get("row"))
        others = [resolve("than", label) for label in (than if isinstance(than, list)
                                                         else [than])]
        for row in claimed:  # within a variant: the others' rows of the same variant
            pairs.append((row, tuple(next((k for k in keys if k.variant == row.variant),
                                          keys[0]) if len(keys) > 1 else keys[0]
                                     for keys in others)))
    if needed & set(drop):
        raise SpecError(f"table {name}: scales.{table.scale}.drop removes "
                        f"{sorted(needed & set(drop))}, which the verdict or a ratio compares "
                        f"against; keep them")
    metric = _metric(f"{where}.metric", raw["metric"]) if raw.get("metric") else None
    return ClaimPart(kind, tuple(pairs), raw.get("binomial"), margin, effect, metric,
                     str(raw.get("label") or ""))


# ---------------------------------------------------------------- where the runs go


def launcher_overrides(scale: str, extra: list[str]) -> tuple[list[str], list[str]]:
    """(overrides with the launcher and resources the scale defaults to, notes for the user).

    Tiny tables run in this process (`launcher=debug`): one command, one table. Paper-scale
    runs are GPT-2 and 7B models: they go to SLURM unless another launcher is named, and
    whichever SLURM or local launcher runs them, each task gets a GPU (and, on SLURM, 8 CPUs)
    unless the command says otherwise: what a run needs belongs to the scale, not to whether
    `launcher=` was typed. Training a paper scale on CPUs is asked for with `device=cpu`; a
    launcher.gpus_per_node=0 without it is refused (the jobs would train on CPUs unasked).
    """
    def given(key: str) -> str | None:
        return next((o.split("=", 1)[1] for o in extra if o.startswith(f"{key}=")), None)

    launcher = given("launcher")
    if not is_paper_scale(scale):
        return ([*extra, "launcher=debug"] if launcher is None else list(extra)), []
    added = ["launcher=slurm"] if launcher is None else []
    name = launcher or "slurm"
    if name == "debug":  # in this process, on this machine's devices: as typed
        return list(extra), []
    on_cpu = given("device") == "cpu"
    gpus, gres = given("launcher.gpus_per_node"), given("launcher.gres")
    if gpus is not None and gpus.strip() in ("0", "null") and not on_cpu and not gres:
        raise SpecError(f"scale={scale} with launcher.gpus_per_node={gpus}: every job would "
                        f"train on CPUs. Give device=cpu if that is what you want, or "
                        f"launcher.gpus_per_node=N (a GPU per task by default)")
    if gpus is None and gres is None and not on_cpu:
        added.append(f"launcher.gpus_per_node={given('launcher.tasks_per_node') or 1}")
    if name == "slurm" and given("launcher.cpus_per_task") is None:
        # a GPU's task tokenizes, builds batches and hashes noise on its host: one core
        # (slurm.yaml's default, for CPU tests) starves it [assumption: 8, a usual GPU share]
        added.append("launcher.cpus_per_task=8")
    notes = []
    if added:
        notes.append(f"paper scale: {' '.join(added)} (this scale's default; give them to "
                     f"choose others)")
    if on_cpu:
        notes.append("paper scale on CPUs, as asked (device=cpu): no GPU is requested")
    return [*extra, *added], notes


def launcher_warnings(scale: str, launcher: dict) -> list[str]:
    """Loud warnings for a paper-scale launch whose jobs would get no GPU."""
    if is_paper_scale(scale) and launcher.get("name") in ("slurm", "local") \
            and not launcher.get("gpus_per_node"):
        return [f"WARNING: paper scale with launcher={launcher['name']} and "
                f"launcher.gpus_per_node=0: every job gets no GPU and trains on CPUs. Add "
                f"launcher.gpus_per_node=1 (one GPU per task) unless that is what you want."]
    return []
