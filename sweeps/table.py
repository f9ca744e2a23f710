"""Paper tables: a spec (conf/table/<name>.yaml) → runs → one job array → a rendered table.

Spec keys:
    name, title, claim            what is reproduced and which claim the table tests
    scales: {tiny: {label, overrides}, paper: {label, overrides, sources}, <paper_x>: ...}
                                  task preset and run length per scale; `tiny` runs on 2 CPU
                                  cores in minutes and is labelled a miniature everywhere; every
                                  other scale is a paper's setting (`paper` always exists; a
                                  paper with several settings adds `paper_<name>` scales) and
                                  names the source of each setting (sweeps/sources.py)
    optimizers: {<optim>: {lr: [...], tune: {<optim key>: [...]}, overrides: [...]}}
                                  every optimizer gets a search space of the SAME size (the
                                  fair-tuning rule: the same tuning budget for each): its lr
                                  grid times the grids of the keys under `tune` (e.g. weight
                                  decay and momentum, where the paper tuned them)
    lr_multipliers: [1, 3, 10]    optional: rows per multiple of each optimizer's lr (each row
                                  then has one lr: the multiple), e.g. S3's spike table
    scales.<s>.per_optimizer: {<optim>: [overrides]}   scale-specific overrides (S3 at T/2)
    scales.<s>.metric: {...}      a scale's own metric (e.g. arith_acc for the tiny LoRA task)
    scales.<s>.paper: {...}       a scale's own paper numbers (the paper reports them per size)
    scales.<s>.optimizers: {<optim>: {lr: [...], tune: ..., overrides: [...]}}
                                  a scale's own search space / overrides per optimizer, replacing
                                  those keys of the top-level entry (two settings of one paper
                                  with different lrs)
    variants: {<label>: [overrides]}   optional extra axis (e.g. lr multipliers, p, α_sign)
    scales.<s>.variants: {...}    a scale's own variants (model sizes that only exist at scale)
    scales.<s>.drop: [<optim>]    optimizers a scale leaves out (a miniature's budget); the
                                  verdict's rows must remain
    seeds: [...]                  also per scale (scales.<s>.seeds): a miniature may use more
    metric: {key: final.val_loss, mode: min, label: ...}   what picks the lr and is reported
    report: [summary keys]        further columns (at the chosen lr)
    ratios: [{key, versus: [optim...], label, speedup: false}]
                                  derived columns: each row's `key` (a report key) divided by the
                                  best (smallest) value among the `versus` rows of the same
                                  variant and lr multiple that finished,
                                  e.g. SMuon's optimizer time over Muon's; `speedup: true`
                                  divides the other way (tokens to target: reference / row)
    paper: {<row>: value}         the paper's numbers, shown beside ours, never mixed in
    figures: [p_per_layer]        further figures (sweeps/render.py FIGURES), e.g. SMuon's p
                                  per layer for tables with SMuon rows
    extend_edges: 2               edge-aware tuning (also per scale): a row whose best lr sits
                                  on an edge of its grid gets one more lr beyond that edge (the
                                  grid's own factor there), runs it, and repeats, at most this
                                  many times; a row that diverged at every lr reaches down
    verdict: {kind, row, than, binomial}   the claim as a comparison (also per scale), decided
                                  by sweeps/verdict.py: kind `better`, `matches_or_beats`,
                                  `matches` (equal within the noise), `sensitivity`
                                  (Wortsman et al. 2023's LR sensitivity) or `average_rank`
                                  (over the variants); `than` one row or several;
                                  `binomial: <summary key of the question count>` adds the
                                  binomial error of an accuracy
    average_rank: true            print each optimizer's rank averaged over the variants

Fair tuning: per optimizer (and variant), the setting (lr, and the `tune` keys) with the best
mean metric over seeds; the table shows mean ± std over seeds at that setting, marks the best
of each set of comparable rows (same variant, lr multiple and ablation), and says whether its
lead over the runner-up exceeds the seed noise (the sum of the two stds).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from sweeps import sources
from tasks.train import store

TABLE_DIR = Path(__file__).resolve().parent.parent / "conf" / "table"
OPTIM_DIR = TABLE_DIR.parent / "optim"
MINIATURE = "tiny"  # every other scale is a paper's setting


def is_paper_scale(scale: str) -> bool:
    return scale != MINIATURE


def available() -> list[str]:
    return sorted(p.stem for p in TABLE_DIR.glob("*.yaml"))


def load_spec(name: str) -> dict:
    path = TABLE_DIR / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"unknown table {name!r}; available: {available()}")
    spec = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    for ratio in spec.get("ratios", []):
        missing = [o for o in ratio["versus"] if o not in spec["optimizers"]]
        if ratio["key"] not in spec.get("report", []) or missing:
            raise ValueError(f"table {name}: ratio {ratio.get('label')!r} needs its key "
                             f"{ratio['key']!r} among report {spec.get('report', [])} and its "
                             f"versus rows among the optimizers (not: {missing})")
    from sweeps.render import FIGURES  # matplotlib is imported by the figures only

    unknown = [f for f in spec.get("figures", []) if f not in FIGURES]
    if unknown:
        raise ValueError(f"table {name}: unknown figures {unknown}; known: {sorted(FIGURES)}")
    if "paper" not in spec["scales"] or MINIATURE not in spec["scales"]:
        raise ValueError(f"table {name}: scales must include {MINIATURE!r} and 'paper', got "
                         f"{list(spec['scales'])}")
    for scale, scale_spec in spec["scales"].items():
        if is_paper_scale(scale):
            sources.validate(name, scale, scale_spec.get("sources"))
    from sweeps import verdict  # it reads table rows: imported here, after this module

    verdict.validate(name, spec)
    for scale in spec["scales"]:
        unknown = sorted(set(spec["scales"][scale].get("optimizers") or {})
                         - set(spec["optimizers"]))
        if unknown:
            raise ValueError(f"table {name}: scales.{scale}.optimizers names {unknown}, not "
                             f"among the table's optimizers {list(spec['optimizers'])}")
        _check_drop(name, spec, scale)
        entries = optimizers(spec, scale)
        for optim, entry in entries.items():
            for key in entry.get("tune") or {}:
                if not _has_key(optim, f"optim.{key}"):
                    raise ValueError(f"table {name}: optimizers.{optim}.tune.{key}: {optim} has "
                                     f"no key {key!r} (conf/optim/{optim}.yaml)")
        grids = {o: budget(v) for o, v in entries.items()}
        if len(set(grids.values())) > 1:
            raise ValueError(f"table {name}, scale {scale}: search spaces differ in size "
                             f"{grids}; the fair-tuning rule gives every optimizer the same "
                             f"budget")
    return spec


def optimizers(spec: dict, scale: str) -> dict:
    """Each optimizer's entry at a scale: the top-level one with the scale's keys on top,
    less the optimizers the scale drops."""
    own = spec["scales"][scale].get("optimizers") or {}
    drop = spec["scales"][scale].get("drop") or []
    return {o: {**entry, **(own.get(o) or {})} for o, entry in spec["optimizers"].items()
            if o not in drop}


def _check_drop(name: str, spec: dict, scale: str) -> None:
    """A scale drops only the table's optimizers, and never one its verdict or ratios need."""
    drop = spec["scales"][scale].get("drop") or []
    unknown = [o for o in drop if o not in spec["optimizers"]]
    if unknown:
        raise ValueError(f"table {name}: scales.{scale}.drop names {unknown}, not among the "
                         f"table's optimizers {list(spec['optimizers'])}")
    from sweeps import verdict

    v = verdict.spec_verdict(spec, scale) or {}
    needed = {label.split(" ")[0] for key in ("row", "than")
              for label in verdict.labels(v, key) if label}
    needed |= {o for ratio in spec.get("ratios", []) for o in ratio["versus"]}
    if needed & set(drop):
        raise ValueError(f"table {name}: scales.{scale}.drop removes {sorted(needed & set(drop))}, "
                         f"which the verdict or a ratio compares against; keep them")


def budget(entry: dict) -> int:
    """Configurations an optimizer's search space holds: its lr grid times its `tune` grids."""
    return len(entry["lr"]) * math.prod(len(v) for v in (entry.get("tune") or {}).values())


def settings(entry: dict) -> list[tuple[tuple[str, object], ...]]:
    """The `tune` grid as a list of ((key, value), ...), one per configuration."""
    tune = entry.get("tune") or {}
    return [tuple(zip(tune, values)) for values in itertools.product(*tune.values())]


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
        """The row without its ablation: what the paper's numbers are keyed by."""
        return self.optim + (f" {self.variant}" if self.variant else "") + (
            f" {self.multiplier:g}×lr" if self.multiplier is not None else "")

    @property
    def label(self) -> str:
        return self.base + (f" [{' '.join(self.ablation)}]" if self.ablation else "")


@dataclass
class Run:
    row: RowKey
    lr: float
    seed: int
    overrides: list[str]
    tuned: tuple = ()  # ((optim key, value), ...) of the `tune` search space

    @property
    def setting(self) -> tuple:
        return (self.lr, self.tuned)

    @property
    def optim(self) -> str:
        return self.row.optim


def expand(spec: dict, scale: str, extra: list[str] = (),
           grids: dict[str, list[float]] | None = None) -> list[Run]:
    """The table's runs. Extra overrides apply to every run; `optim=X` keeps only X's rows, and
    `optim.<key>=...` applies to the optimizers that have that key (an ablation). `grids`
    replaces a row's lr grid (by row label): the grid edge-aware tuning extended."""
    if scale not in spec["scales"]:
        raise ValueError(f"scale must be one of {list(spec['scales'])}, got {scale!r}")
    entries = optimizers(spec, scale)
    only = [o.split("=", 1)[1] for o in extra if o.startswith("optim=")]
    if only and only[0] not in spec["optimizers"]:
        raise ValueError(f"optim={only[0]} is not in table {spec['name']}: "
                         f"{list(spec['optimizers'])}")
    optim_keys = [o for o in extra if o.startswith("optim.")]
    plain = [o for o in extra if not o.startswith(("optim=", "optim."))]
    variants = spec["scales"][scale].get("variants", spec.get("variants")) or {"": []}
    multipliers = spec.get("lr_multipliers") or [None]
    scale_spec = spec["scales"][scale]
    runs = []
    for optim, entry in entries.items():
        if only and optim != only[0]:
            continue
        mine = [o for o in optim_keys if _has_key(optim, o)]
        per_optim = (scale_spec.get("per_optimizer") or {}).get(optim, [])
        for label, variant in variants.items():
            for mult in multipliers:
                row = RowKey(optim, label, mult, tuple(mine))
                lrs = entry["lr"] if mult is None else [entry["lr"][0] * mult]
                if mult is None and grids and row.label in grids:
                    lrs = grids[row.label]
                for lr, tuned in itertools.product(lrs, settings(entry)):
                    for seed in scale_spec.get("seeds", spec["seeds"]):
                        runs.append(Run(row, lr, seed, [
                            *scale_spec["overrides"], f"optim={optim}",
                            *entry.get("overrides", []), *per_optim, *variant,
                            f"optim.lr={lr:g}", *[f"optim.{k}={v}" for k, v in tuned],
                            f"seed={seed}", *plain, *mine], tuned))
    if optim_keys and not any(_has_key(r.optim, o) for r in runs for o in optim_keys):
        raise ValueError(f"no optimizer of table {spec['name']} has {optim_keys}")
    return runs


def _has_key(optim: str, override: str) -> bool:
    key = override.split("=", 1)[0].removeprefix("optim.").lstrip("+")
    cfg = OmegaConf.load(OPTIM_DIR / f"{optim}.yaml")
    return key in cfg


def _get(summary: dict, dotted: str):
    value = summary
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def completed_metric(summary: dict, metric: str, where) -> float | None:
    """The table's metric of a completed run (None for a run that did not complete). A
    completed run without it is an error naming the run: shown as "–" it would read as a
    diverged seed."""
    if summary.get("status") != "completed":
        return None
    value = _get(summary, metric)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"{where}: a completed run without the table's metric {metric!r} "
                         f"(got {value!r}); was it made by another task or an older version?")
    return value


@dataclass
class Row:
    key: RowKey
    best_lr: float | None
    mean: float | None
    std: float | None
    n: int
    diverged: int
    extra: dict
    per_lr: dict  # lr → mean metric, the best over its `tune` settings (None: a seed diverged)
    best_runs: list  # run dirs at the chosen setting
    best_tuned: tuple = ()  # the chosen `tune` values, ((key, value), ...)
    per_setting: dict | None = None  # (lr, tuned) → mean metric
    values_at: dict | None = None  # (lr, tuned) → per-seed metric (±inf: diverged or failed)
    initial_at: dict | None = None  # (lr, tuned) → per-seed initial train loss
    spikes_at: dict | None = None  # (lr, tuned) → spike events summed over seeds
    diverged_at: dict | None = None  # (lr, tuned) → seeds that diverged
    dirs_at: dict | None = None  # (lr, tuned) → run dirs, one per seed

    @property
    def label(self) -> str:
        return self.key.label


def for_scale(spec: dict, scale: str) -> dict:
    """The spec with the scale's own metric and paper numbers, where it names them."""
    own = spec["scales"][scale]
    return {**spec, "metric": own.get("metric", spec["metric"]),
            "paper": own.get("paper", spec.get("paper") or {}),
            "optimizers": optimizers(spec, scale)}


def collect(spec: dict, runs: list[Run], run_dirs: dict[int, Path]) -> list[Row]:
    """Fair tuning and seed statistics from the run dirs' summaries."""
    metric, mode = spec["metric"]["key"], spec["metric"].get("mode", "min")
    worst = math.inf if mode == "min" else -math.inf
    rows = []
    for key in dict.fromkeys(r.row for r in runs):
        mine = [(i, r) for i, r in enumerate(runs) if r.row == key]
        per_setting, values_at, dirs_at, diverged_at = {}, {}, {}, {}
        initial_at, spikes_at = {}, {}
        for setting in dict.fromkeys(r.setting for _, r in mine):
            vals, dirs, div, initial, spikes = [], [], 0, [], 0
            for i, r in mine:
                if r.setting != setting:
                    continue
                summary = store.read_summary(run_dirs[i]) or {}
                dirs.append(run_dirs[i])
                value = completed_metric(summary, metric, run_dirs[i])
                div += summary.get("status") == "diverged"
                vals.append(value if value is not None else worst)
                initial.append(_get(summary, "initial.train_loss"))
                spikes += _get(summary, "spikes.spike_count") or 0
            finite = [v for v in vals if math.isfinite(v)]
            per_setting[setting] = statistics.mean(finite) if len(finite) == len(vals) else None
            values_at[setting], dirs_at[setting], diverged_at[setting] = vals, dirs, div
            initial_at[setting], spikes_at[setting] = initial, spikes
        candidates = [s for s in per_setting if per_setting[s] is not None]
        pick = min if mode == "min" else max
        best = pick(candidates, key=per_setting.__getitem__) if candidates else None
        per_lr = {}  # the metric-vs-lr view: the best finished setting at each lr
        for lr in dict.fromkeys(x for x, _ in per_setting):
            at_lr = [v for (x, _), v in per_setting.items() if x == lr and v is not None]
            per_lr[lr] = pick(at_lr) if at_lr else None
        vals = values_at[best] if best is not None else []
        extra = {}
        if best is not None:
            for col in spec.get("report", []):
                xs = [_get(store.read_summary(d) or {}, col) for d in dirs_at[best]]
                xs = [x for x in xs if isinstance(x, (int, float))]
                extra[col] = statistics.mean(xs) if xs else None
        rows.append(Row(key, best[0] if best else None,
                        statistics.mean(vals) if vals else None,
                        statistics.stdev(vals) if len(vals) > 1 else 0.0 if vals else None,
                        len(vals), sum(diverged_at.values()), extra, per_lr,
                        dirs_at.get(best, []), best[1] if best else (), per_setting,
                        values_at, initial_at, spikes_at, diverged_at, dirs_at))
    return rows


def ratio_columns(spec: dict, rows: list[Row]) -> dict[str, dict[str, float | None]]:
    """{column label: {row label: value}} for the spec's `ratios`. The reference is the best
    (smallest) value of `key` among the `versus` rows that finished at their chosen lr, so a
    diverged baseline or one that never reached a target is not the reference."""
    columns = {}
    for ratio in spec.get("ratios", []):
        key = ratio["key"]
        values = {}
        for r in rows:
            refs = [o.extra.get(key) for o in rows
                    if o.key.optim in ratio["versus"] and comparable(o) == comparable(r)]
            refs = [x for x in refs if isinstance(x, (int, float)) and x > 0]
            ref = min(refs) if refs else None
            x = r.extra.get(key)
            if ref is None or not isinstance(x, (int, float)) or x <= 0:
                values[r.label] = None
            else:
                values[r.label] = ref / x if ratio.get("speedup") else x / ref
        columns[ratio.get("label", f"{key} ratio")] = values
    return columns


def comparable(row: Row) -> tuple:
    """Rows are compared only within the same variant, lr multiple and ablation."""
    return (row.key.variant, row.key.multiplier, row.key.ablation)


def ranking(spec: dict, rows: list[Row]) -> list[tuple[str | None, str]]:
    """For each set of comparable rows: (best row label, whether its lead over the runner-up
    exceeds the seed noise)."""
    mode = spec["metric"].get("mode", "min")
    out = []
    for group in dict.fromkeys(comparable(r) for r in rows):
        scored = sorted((r for r in rows if comparable(r) == group and r.mean is not None),
                        key=lambda r: r.mean if mode == "min" else -r.mean)
        if not scored:
            out.append((None, "no finished row"))
        elif len(scored) == 1:
            out.append((scored[0].label, "only row"))
        else:
            a, b = scored[0], scored[1]
            gap, noise = abs(a.mean - b.mean), (a.std or 0.0) + (b.std or 0.0)
            if a.n < 2:
                out.append((a.label, f"lead {gap:.4g} over {b.label}; one seed, noise unknown"))
            else:
                verdict = "exceeds" if gap > noise else "within"
                out.append((a.label, f"lead {gap:.4g} over {b.label} {verdict} seed noise "
                                     f"({noise:.4g})"))
    return out


def sweep_name(spec: dict, scale: str, extra: list[str]) -> tuple[str, list[str]]:
    """(sweep name, ablation overrides): an ablation (overrides that change what is computed,
    not where it runs or logs) gets its own sweep name and results folder."""
    ablation = sorted(o for o in extra if _override_key(o) not in store.NON_IDENTITY_KEYS)
    suffix = ("-" + hashlib.sha1(" ".join(ablation).encode()).hexdigest()[:6]
              if ablation else "")
    return f"table-{spec['name']}-{scale}{suffix}", ablation


def _override_key(override: str) -> str:
    """The top-level config key an override sets (`+a.b=1` → `a`)."""
    return override.split("=", 1)[0].lstrip("+~").split(".", 1)[0]


def launcher_overrides(scale: str, extra: list[str]) -> tuple[list[str], list[str]]:
    """(overrides with the launcher the scale defaults to, notes for the user).

    Tiny tables run in this process (`launcher=debug`): one command, one table. Paper-scale
    runs are GPT-2 and 7B models: without an explicit launcher they go to SLURM with one GPU
    per task, never into the process of whoever typed the command.
    """
    if any(o.startswith("launcher=") for o in extra):
        return list(extra), []
    if not is_paper_scale(scale):
        return [*extra, "launcher=debug"], []
    added = ["launcher=slurm"]
    if not any(o.startswith("launcher.gpus_per_node=") for o in extra):
        added.append("launcher.gpus_per_node=1")
    return [*extra, *added], [f"paper scale: {' '.join(added)} (the default at this scale; "
                              f"give launcher=... to choose another)"]


def launcher_warnings(scale: str, launcher: dict) -> list[str]:
    """Loud warnings for a paper-scale launch whose jobs would get no GPU."""
    if is_paper_scale(scale) and launcher.get("name") in ("slurm", "local") \
            and not launcher.get("gpus_per_node"):
        return [f"WARNING: paper scale with launcher={launcher['name']} and "
                f"launcher.gpus_per_node=0: every job gets no GPU and trains on CPUs. Add "
                f"launcher.gpus_per_node=1 (one GPU per task) unless that is what you want."]
    return []
