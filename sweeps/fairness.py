"""The rules for what a table's rows do not own, the same for every row and printed in every
table: weight decay, and the auxiliary Adam of the Muon family.

Weight decay. At the miniature every row, and every auxiliary Adam, runs with one weight decay
within a variant (the scale's `optim.weight_decay=...`, or one `tune` grid that every row
shares). A spec whose rows would run different values is refused, naming each row's. At a
paper scale each row runs its authors' value (the scale's `sources`), and the table prints it.

Auxiliary Adam. Muon and its kin orthogonalize matrices only; embeddings, the head, norms and
biases train with an Adam of their own (`aux_lr`). An AdamW row trains the same tensors at its
tuned lr, so a Muon row whose aux Adam keeps a default lr is compared with a handicap that is the
harness's, not the method's (the audit: smuon_lora's Muon at aux lr 3e-4 scored 0.535, at 1e-2
0.985). Spec key `aux_lr`, per scale or top-level:

    tied              (the miniature's default where the table has an adamw row) the adamw row
                      is tuned first, edge rule included; every Muon-family row then runs its
                      aux Adam at that row's chosen lr, per variant: the tensors a Muon row does
                      not own train as the table's tuned AdamW trains them
    {value, source}   one aux lr for every Muon-family row, with where it comes from; the rows'
                      own settings (config default or overrides) must agree
    sources           (a paper scale's default) each row's own value, from its authors' code

An optimizer whose config derives `aux_lr` from its own lr (Moonlight's RMS-matched Muon) keeps
its method's rule and is named with it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from omegaconf import OmegaConf

from sweeps import compose

REFERENCE = "adamw"  # the row a tied aux lr follows


class FairnessError(ValueError):
    """A spec whose rows break a fair-settings rule; the message names the rows and values."""


@dataclass(frozen=True)
class AuxRule:
    kind: str  # tied | fixed | sources
    value: float | None = None  # fixed
    source: str = ""  # fixed


def _config(optim: str, extra_conf: tuple = ()) -> dict:
    """conf/optim/<optim>.yaml, or a contender's (in `extra_conf`, the table's further config
    folders); {} for a contender whose config reproduce.py has not written yet (its runs cannot
    compose before it is)."""
    version = _config_version(optim, extra_conf)
    return _load(*version) if version else {}


@functools.lru_cache(maxsize=None)
def _load(path: str, mtime_ns: int) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path))


RULED = ("weight_decay", "aux_weight_decay", "aux_lr")  # the keys these rules read


def _effective(optim: str, overrides, extra_conf: tuple = ()) -> dict:
    """The ruled keys the optimizer has, with the run's `optim.<key>=` overrides applied and
    resolved (`${.lr}` included; other keys may interpolate what only a whole run config has).
    Only the overrides the ruled keys can read matter, so runs that differ in seed or in other
    keys share one resolution (a spec load checks every run of every scale)."""
    conf = _config(optim, extra_conf)
    read = set(RULED) | {value[3:-1] for key in RULED
                         if isinstance(value := conf.get(key), str) and value.startswith("${.")}
    mine = tuple(o.removeprefix("optim.") for o in overrides if o.startswith("optim.")
                 and (key := o.split("=", 1)[0].removeprefix("optim.")) in read and key in conf)
    return _resolved(optim, _config_version(optim, extra_conf), mine, tuple(extra_conf))


def _config_version(optim: str, extra_conf: tuple = ()) -> tuple[str, int] | None:
    """(path, mtime) of the optimizer's config: a rewritten file is read again."""
    path = compose.option_file("optim", optim, tuple(extra_conf))
    return (str(path), path.stat().st_mtime_ns) if path.exists() else None


@functools.lru_cache(maxsize=None)
def _resolved(optim: str, version, mine: tuple[str, ...], extra_conf: tuple = ()) -> dict:
    conf = OmegaConf.create(_config(optim, extra_conf))  # `version`: the cache key
    merged = OmegaConf.merge(conf, OmegaConf.from_dotlist(list(mine)))
    return {key: OmegaConf.select(merged, key) for key in RULED if key in merged}


def is_muon_family(optim: str, extra_conf: tuple = ()) -> bool:
    """An optimizer with an auxiliary Adam of its own lr (a number in its config)."""
    value = _config(optim, extra_conf).get("aux_lr")
    return isinstance(value, (int, float))


def method_bound(optim: str, extra_conf: tuple = ()) -> bool:
    """An optimizer whose aux lr its method derives from its lr (`aux_lr: ${.lr}`)."""
    value = _config(optim, extra_conf).get("aux_lr")
    return isinstance(value, str) and value.startswith("${")


def parse_aux_rule(where: str, raw, miniature: bool, optimizers) -> AuxRule:
    """The spec's `aux_lr` rule, or the scale's default."""
    if raw is None:
        if not miniature:
            return AuxRule("sources")
        if REFERENCE in optimizers:
            return AuxRule("tied")
        raise FairnessError(f"{where}: the table runs Muon-family rows without an {REFERENCE} "
                            f"row to tie their auxiliary Adam's lr to; state the rule: "
                            f"aux_lr: {{value: ..., source: ...}}")
    if raw == "tied":
        if REFERENCE not in optimizers:
            raise FairnessError(f"{where}: aux_lr: tied needs an {REFERENCE} row; the table's "
                                f"optimizers are {list(optimizers)}")
        return AuxRule("tied")
    if raw == "sources":
        if miniature:
            raise FairnessError(f"{where}: aux_lr: sources is a paper scale's rule (the "
                                f"authors' values); a miniature ties it or fixes it")
        return AuxRule("sources")
    if isinstance(raw, dict) and set(raw) == {"value", "source"} \
            and isinstance(raw["value"], (int, float)) and str(raw["source"]).strip():
        return AuxRule("fixed", float(raw["value"]), str(raw["source"]).strip())
    raise FairnessError(f"{where}: aux_lr must be 'tied', 'sources' or {{value, source}}, got "
                        f"{raw!r}")


def check(where: str, runs, rule: AuxRule | None, miniature: bool,
          extra_conf: tuple = ()) -> None:
    """Refuse runs that break the rules (FairnessError naming the rows and their values)."""
    by_variant: dict[str, dict[str, set]] = {}
    for run in runs:
        conf = _effective(run.optim, run.overrides, extra_conf)
        decays = by_variant.setdefault(run.row.variant, {})
        if "weight_decay" in conf:
            decays.setdefault(run.row.base, set()).add(float(conf["weight_decay"]))
        if "aux_weight_decay" in conf:
            decays.setdefault(f"{run.row.base} (aux Adam)", set()).add(
                float(conf["aux_weight_decay"]))
        if rule is None or not is_muon_family(run.optim, extra_conf):
            continue
        set_by_row = [o for o in run.overrides if o.startswith("optim.aux_lr=")]
        if rule.kind == "tied" and len(set_by_row) > 1:  # the tie itself is one of them
            raise FairnessError(f"{where}: {run.row.base} sets {set_by_row[0]}, but the table "
                                f"ties the aux lr to the {REFERENCE} row's chosen lr; remove it "
                                f"or state the rule aux_lr: {{value, source}}")
        if rule.kind == "fixed" and float(conf["aux_lr"]) != rule.value:
            raise FairnessError(f"{where}: {run.row.base} runs its auxiliary Adam at lr "
                                f"{conf['aux_lr']}, the table's rule says {rule.value:g}")
    if not miniature:
        return
    for variant, decays in by_variant.items():
        if len({frozenset(vs) for vs in decays.values()}) > 1:  # one value, or one tuned grid
            raise FairnessError(
                f"{where}{' variant ' + variant if variant else ''}: rows run different weight "
                f"decays ({_shown(decays)}); a miniature gives every row and every auxiliary "
                f"Adam one value: set optim.weight_decay=... (and optim.aux_weight_decay=... "
                f"where a Muon-family row runs) in the scale's overrides")


def muon_rows(table) -> list[str]:
    return [o for o in table.optimizers if is_muon_family(o, table.extra_conf)]


def tied_lrs(rows, variants) -> dict[str, float]:
    """Each variant's aux lr: the reference row's chosen lr there (collect's rows)."""
    out = {}
    for variant in variants:
        row = next((r for r in rows if r.key.optim == REFERENCE and r.key.variant == variant
                    and r.key.multiplier is None and not r.key.ablation), None)
        if row is None or row.best_lr is None:
            raise FairnessError(f"the {REFERENCE} row{' ' + variant if variant else ''} has no "
                                f"chosen lr (it diverged at every lr), so the Muon-family rows "
                                f"have no aux lr to tie to")
        out[variant] = row.best_lr
    return out


def _values(runs, key: str, extra_conf: tuple = ()) -> dict[str, set[float]]:
    """optimizer → the values of a ruled key its runs take."""
    out: dict[str, set[float]] = {}
    for run in runs:
        conf = _effective(run.optim, run.overrides, extra_conf)
        if key in conf:
            out.setdefault(run.optim, set()).add(float(conf[key]))
    return out


def _shown(values: dict[str, set[float]]) -> str:
    """"adamw 0.1, signum 0/0.1": each label with its values."""
    return ", ".join(f"{label} {'/'.join(f'{v:g}' for v in sorted(vs))}"
                     for label, vs in values.items())


def shown_tied(aux: dict[str, float]) -> str:
    """The tied aux lr of each variant, "0.01 (graph8); 0.0009 (graph4)"."""
    return "; ".join(f"{v:g}" + (f" ({k})" if k else "") for k, v in aux.items())


def describe(table, runs, aux: dict) -> list[str]:
    """The rules' lines for the table's header."""
    lines = []
    decays = _values(runs, "weight_decay", table.extra_conf)
    shared = {frozenset(vs) for vs in decays.values()}
    if len(shared) == 1:
        values = sorted(shared.pop())
        lines.append(("Weight decay: " + (f"{values[0]:g}" if len(values) == 1 else
                      "tuned over {" + ", ".join(f"{v:g}" for v in values) + "}")
                      + " for every row and every auxiliary Adam (sweeps/fairness.py)."))
    elif decays:
        source = " from its authors' code, as the sources say" if table.is_paper else ""
        lines.append(f"Weight decay: each row's own ({_shown(decays)}){source} "
                     f"(sweeps/fairness.py).")
    family = muon_rows(table)
    bound = [o for o in table.optimizers if method_bound(o, table.extra_conf)]
    rule = table.aux_rule
    if family and rule is not None:
        what = (f"Auxiliary Adam of the Muon-family rows ({', '.join(family)}; it trains what "
                f"they do not orthogonalize: embeddings, head, norms, biases, where those "
                f"train): ")
        if rule.kind == "tied":
            lines.append(what + f"lr tied to the {REFERENCE} row's chosen lr, "
                         f"{shown_tied(aux)}: those tensors train as the table's tuned AdamW "
                         f"trains them.")
        elif rule.kind == "fixed":
            lines.append(what + f"lr {rule.value:g} for every row ({rule.source}).")
        else:
            own = _values([run for run in runs if run.optim in family], "aux_lr",
                          table.extra_conf)
            lines.append(what + f"each row's authors' lr ({_shown(own)}), as the sources say.")
    if bound:
        lines.append(f"Auxiliary Adam of {', '.join(bound)}: at the row's own lr, as its method "
                     f"prescribes (RMS-matched updates).")
    return lines
