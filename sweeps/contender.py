"""Your optimizer in a paper's table: `reproduce.py TABLE --contender NAME=SPEC`.

    SPEC = module.Class          any importable torch.optim.Optimizer subclass; its arguments
                                 are the class's defaults (it must have a default lr)
    SPEC = path/to/optim.yaml    an optimizer config as in conf/optim/ (`_target_` and the
                                 arguments to set; `lr_grid: [...]` its own lr grid)

The contender becomes one more row of the table, with the table's rules: the same number of
configurations as the table's rows (an lr grid of that size; the table's lr spacing, centred on
its default lr, unless the yaml gives its own), the same seeds, run length, schedule and edge
rule. Its verdict is the table's claim with the contender in the claimed row's place ("your
optimizer vs S3: ..."); in a table without a claim (quickstart), "better than AdamW". The
committed table is untouched: the contender's table is written under the contender results
root, and the table's own runs are reused where they exist.
Everything is checked before a run dir or a job exists.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

from omegaconf import OmegaConf

from sweeps import yamlfile
from sweeps.spec import OPTIM_DIR, ClaimPart, RowKey, Search, SpecError, Table
from tasks.train import store

NAME = re.compile(r"[a-z][a-z0-9_]*")
# a contender's claim replaces the claimed row by the contender; kinds about one row's own
# behaviour or a ranking become "better than the claimed row"
SAME_KIND = ("better", "matches_or_beats", "matches")
REFERENCE = "adamw"  # what a contender is compared with in a table that states no claim


@dataclass(frozen=True)
class Contender:
    name: str  # its row label and Hydra optim name
    target: str  # module.Class
    arguments: dict  # constructor arguments besides params and lr
    default_lr: float
    lr_grid: tuple[float, ...] | None  # its own grid (a yaml's lr_grid), else the table's rule
    source: str  # what the user gave

    def optim_config(self) -> dict:
        return {"name": self.name, "_target_": self.target, "_partial_": True,
                "lr": self.default_lr, **self.arguments}

    def write_config(self, conf_dir: Path) -> Path:
        """conf_dir/optim/<name>.yaml, which runs compose as `optim=<name>`."""
        path = conf_dir / "optim" / f"{self.name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        store.write_text(path, OmegaConf.to_yaml(OmegaConf.create(self.optim_config())))
        return path


def parse(text: str) -> Contender:
    """`NAME=module.Class` or `NAME=path.yaml`, checked: the class imports, is an Optimizer,
    and takes every argument given."""
    name, sep, source = text.partition("=")
    if not sep or not source:
        raise SpecError(f"--contender must be NAME=module.Class or NAME=path/to/optim.yaml, "
                        f"got {text!r}")
    if not NAME.fullmatch(name):
        raise SpecError(f"--contender name {name!r} must be lower-case letters, digits and _, "
                        f"starting with a letter")
    if (OPTIM_DIR / f"{name}.yaml").exists():
        raise SpecError(f"--contender name {name!r} is already an optimizer of optbench "
                        f"(conf/optim/{name}.yaml); choose another")
    if source.endswith((".yaml", ".yml")):
        return _from_yaml(name, source)
    cls = _import(source, "--contender")
    lr = _default_lr(cls, source)
    return Contender(name, source, {**class_defaults(cls), **run_length(cls, source, {})}, lr,
                     None, source)


# constructor arguments that mean the run's length (Ranger21's num_iterations, ...): given the
# run's steps, as SoftSignum gets `total_steps: ${steps}`
RUN_LENGTH_ARGUMENTS = ("total_steps", "num_iterations", "num_training_steps", "max_steps",
                        "num_steps", "t_total", "total_iterations")


def run_length(cls: type, target: str, given: dict) -> dict:
    """The run's steps for a required run-length argument; a SpecError naming any other
    argument the constructor requires that nobody gives."""
    out = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name in ("self", "params") or param.default is not param.empty \
                or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or name in given:
            continue
        if name in RUN_LENGTH_ARGUMENTS:
            out[name] = "${steps}"
        elif name != "lr":
            raise SpecError(f"--contender: {target} requires the argument {name!r}, which the "
                            f"table cannot know; give it in a yaml contender ({name}: ...)")
    return out


def class_defaults(cls: type) -> dict:
    """The constructor's keyword defaults besides params and lr, as config values (so that
    a table's `optim.weight_decay=0` reaches the contender as it reaches every row); tuples
    become lists, and defaults a config cannot hold (objects, callables) are left to the class."""
    out = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name in ("self", "params", "lr") or param.default is param.empty:
            continue
        value = list(param.default) if isinstance(param.default, tuple) else param.default
        if value is None or isinstance(value, (bool, int, float, str)) or (
                isinstance(value, list) and all(isinstance(v, (int, float)) for v in value)):
            out[name] = value
    return out


def _from_yaml(name: str, source: str) -> Contender:
    path = Path(source).expanduser()
    if not path.is_file():
        raise SpecError(f"--contender {name}: no such file {path}")
    try:
        raw = yamlfile.load(path, f"--contender {name}")
    except yamlfile.YamlError as e:
        raise SpecError(str(e)) from None
    if not isinstance(raw, dict) or "_target_" not in raw:
        raise SpecError(f"--contender {name}: {path} needs `_target_: module.Class`")
    target = raw.pop("_target_")
    raw.pop("_partial_", None)
    raw.pop("name", None)
    cls = _import(target, f"--contender {name} ({path})")
    grid = raw.pop("lr_grid", None)
    if grid is not None and (not isinstance(grid, list) or not grid
                             or not all(_positive(v) for v in grid)):
        raise SpecError(f"--contender {name}: lr_grid must be a list of numbers > 0, got "
                        f"{grid!r}")
    lr = raw.pop("lr", None)
    if lr is None:
        lr = _default_lr(cls, target) if grid is None else math.exp(
            sum(map(math.log, grid)) / len(grid))
    if not _positive(lr):
        raise SpecError(f"--contender {name}: lr must be a number > 0, got {lr!r}")
    accepted = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    unknown = sorted(k for k in raw if k not in accepted and not takes_any)
    if unknown:
        raise SpecError(f"--contender {name}: {target} takes no argument {unknown}; it takes "
                        f"{sorted(k for k in accepted if k not in ('self', 'params'))}")
    return Contender(name, target, {**class_defaults(cls), **run_length(cls, target, raw), **raw},
                     float(lr), tuple(float(v) for v in grid) if grid else None, str(path))


def _import(target: str, what: str) -> type:
    import torch

    module_name, _, class_name = target.rpartition(".")
    if not module_name:
        raise SpecError(f"{what}: {target!r} is not module.Class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise SpecError(f"{what}: cannot import {module_name!r} ({e})") from e
    cls = getattr(module, class_name, None)
    if cls is None:
        raise SpecError(f"{what}: module {module_name!r} has no {class_name!r}")
    if not (inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer)):
        raise SpecError(f"{what}: {target} is not a torch.optim.Optimizer subclass")
    closure = inspect.signature(cls.step).parameters.get("closure")
    if closure is not None and closure.default is closure.empty:
        raise SpecError(f"{what}: {target}.step needs a closure (it evaluates the loss again "
                        f"inside a step, as L-BFGS does); the training loop steps once per "
                        f"batch and gives none, so it cannot run here")
    return cls


def _default_lr(cls: type, target: str) -> float:
    lr = inspect.signature(cls.__init__).parameters.get("lr")
    if lr is None or not _positive(lr.default):
        raise SpecError(f"--contender: {target} has no default lr > 0 to centre a grid on; "
                        f"give a yaml with `lr` or `lr_grid`")
    return float(lr.default)


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) and value > 0


# ---------------------------------------------------------------- the contender's table


def lr_grid(contender: Contender, table: Table) -> tuple[float, ...]:
    """The contender's own grid, or as many lrs as the table's rows have configurations,
    spaced as the table's lr grids are (their median ratio), centred on its default lr. Its
    own grid must be of the table's size: every row gets the same budget."""
    budgets = {search.budget for search in table.optimizers.values()}
    size = max(budgets)
    if contender.lr_grid:
        if len(contender.lr_grid) != size:
            raise SpecError(f"--contender {contender.name}: lr_grid has "
                            f"{len(contender.lr_grid)} lrs, and every row of table "
                            f"{table.name} gets {size} configurations (the fair-tuning rule): "
                            f"give {size} lrs, or no lr_grid for the table's own spacing")
        return tuple(sorted(contender.lr_grid))
    ratios = sorted(b / a for search in table.optimizers.values()
                    for a, b in zip(sorted(search.lr), sorted(search.lr)[1:]))
    step = ratios[len(ratios) // 2] if ratios else math.sqrt(10)
    # three significant digits: the grid is printed and becomes override strings
    return tuple(float(f"{contender.default_lr * step ** (i - (size - 1) / 2):.3g}")
                 for i in range(size))


def with_contender(table: Table, contender: Contender) -> Table:
    """The table with the contender's row and, as its claim, the contender against the rows
    the table's claim names first (the paper's method)."""
    parts = []
    for part in table.claim_parts:
        pairs = tuple(dict.fromkeys(
            (RowKey(contender.name, row.variant, row.multiplier),
             (RowKey(row.optim, row.variant, row.multiplier),))
            for row, _ in part.pairs))
        parts.append(ClaimPart(part.kind if part.kind in SAME_KIND else "better", pairs,
                               part.binomial, part.margin, part.effect, part.metric,
                               f"{contender.name} vs {part.pairs[0][0].base}"))
    if not parts and REFERENCE in table.optimizers:  # no claim (quickstart): against AdamW
        parts.append(ClaimPart("better", tuple(
            (RowKey(contender.name, variant, mult), (RowKey(REFERENCE, variant, mult),))
            for variant in table.variants for mult in (table.lr_multipliers or (None,))),
            label=f"{contender.name} vs {REFERENCE} (the table states no claim; AdamW is "
                  f"the reference)"))
    return replace(table, title=f"{table.title}, with contender {contender.name}",
                   optimizers={**table.optimizers,
                               contender.name: Search(lr_grid(contender, table))},
                   claim_parts=tuple(parts))
