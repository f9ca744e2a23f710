"""A run's identity: its key, its run dir, and the version of the code that computes it.

    run key = hash(resolved config minus what does not change the numbers, code version)
    run dir = <runs_root>/<task>/<optim>/<run key>/

The code version of a run covers exactly the code that can change its numbers: the module of
its optimizer class, the module of its task class and the modules every run executes
(assembly, the training loop, the summary), each with everything it imports from `optim/` and
`tasks/`, less the modules that never change a number (NON_COMPUTING: the store, the lease,
checkpoints, the W&B mirror, validation, planning). Each module counts by its source without
comments, docstrings and blank lines. So a fixed comment, a new task, another optimizer or a
change to the mirror or the renderer leaves every existing key as it was; an edit to the
computing code of a run's optimizer, task or their shared loop changes the keys of exactly the
runs that execute it.

Everything here is read statically (the source files are parsed, never imported), so the sweep
CLI computes keys without importing torch, and this module imports nothing of ours: the store,
the lease, the environment record and this identity are the leaves both `tasks/` and `sweeps/`
build on (tasks/train/__init__.py).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import io
import json
import sysconfig
import tokenize
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CODE_PACKAGES = ("optim", "tasks")  # sweeps/ and scripts/ launch and render; they compute nothing

# What every run executes besides its optimizer and its task.
LOOP_ROOTS = ("tasks.train.assemble", "tasks.train.loop", "tasks.train.summary")
# Modules that read, write, check or plan, and never change a number a run computes. The code
# version does not follow them (nor what they import).
NON_COMPUTING = frozenset({
    "tasks.train.identity", "tasks.train.store", "tasks.train.lease", "tasks.train.checkpoint",
    "tasks.train.environment", "tasks.train.errors", "tasks.train.checks", "tasks.train.config",
    "tasks.train.cost", "tasks.train.runner", "tasks.train.wandb_mirror", "optim.registry",
    "tasks.train.sharding_rules", "tasks.train.parallel", "tasks.train.snapshot",
    "tasks.train.sharded_checkpoint",
})

# Top-level keys that never change the numbers a run computes.
# - launcher/parallel/logger/hydra: where and how it runs (over how many processes, sharded
#   or not) and is mirrored;
# - runs_root/data_root: where files go;
# - sweep: the name used to group runs (W&B group), not part of what is trained;
# - checkpoint_every(_min)/progress: resume is exact, so checkpoint cadence cannot change
#   results;
# - discard_bad_checkpoint: how to handle a damaged checkpoint, not what is trained.
NON_IDENTITY_KEYS = (
    "launcher", "parallel", "logger", "hydra", "runs_root", "data_root", "sweep",
    "checkpoint_every", "checkpoint_every_min", "progress", "discard_bad_checkpoint",
)

# Nested keys added after runs existed, left out of the identity at their default so that the
# keys of those runs stay valid; any other value is part of the identity as usual.
# - optim.fused: one compiled pass instead of foreach ops (same math, rounding aside);
# - precision.compute: what bf16/fp8_emulated matmuls run in.
# - epochs: a run length in epochs (steps are derived from it and are in the identity anyway).
# - schedule.momentum_warmup_*: the Muon family's momentum warm-up, off by default;
# - task.also_eval: further LoRA test sets, none by default.
DEFAULT_ONLY_KEYS = {("optim", "fused"): False, ("precision", "compute"): "bf16",
                     ("schedule", "momentum_warmup_steps"): 0,
                     ("schedule", "momentum_warmup_start"): None, ("task", "also_eval"): []}
DEFAULT_ONLY_TOP_KEYS = {"epochs": None}


def _plain(cfg: DictConfig | dict) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def identity_dict(cfg: DictConfig | dict) -> dict:
    resolved = _plain(cfg)
    identity = {k: v for k, v in resolved.items() if k not in NON_IDENTITY_KEYS}
    for (group, key), default in DEFAULT_ONLY_KEYS.items():
        section = identity.get(group)
        if isinstance(section, dict) and key in section and section[key] == default:
            identity[group] = {k: v for k, v in section.items() if k != key}
    for key, default in DEFAULT_ONLY_TOP_KEYS.items():
        if key in identity and identity[key] == default:
            del identity[key]
    return identity


def run_key(cfg: DictConfig | dict, length: int = 10, code: str | None = None) -> str:
    """The hash of the run's identity and of the code that computes it (`code_version`)."""
    identity = {**identity_dict(cfg), "code_version": code or code_version(cfg)}
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:length]


def run_dir(cfg: DictConfig | dict, key: str | None = None) -> Path:
    root = Path(cfg["runs_root"]).expanduser().absolute()
    return root / str(cfg["task"]["name"]) / str(cfg["optim"]["name"]) / (key or run_key(cfg))


# ---------------------------------------------------------------- the code a run executes


def code_version(cfg: DictConfig | dict, root: Path = PROJECT_ROOT,
                 project: "_Project | None" = None) -> str:
    """A 12-hex hash of the computing code the run `cfg` executes (see the module doc). The
    project's own code is read once per process and (optimizer, task); another root is read
    afresh every time (tests edit copies of the code), or once per `project`, a reading of it
    (`Reading(root)`) that many versions share."""
    cfg = _plain(cfg)
    targets = (_target(cfg["optim"]), _target(cfg["task"]))
    if Path(root) == PROJECT_ROOT and project is None:
        return _project_version(*targets)
    return _version(Path(root), *targets, project)


def _target(section: dict) -> str | None:
    return section.get("_target_") if isinstance(section, dict) else None


@functools.lru_cache(maxsize=256)
def _project_version(optim_target: str | None, task_target: str | None) -> str:
    return _version(PROJECT_ROOT, optim_target, task_target)


def _version(root: Path, optim_target: str | None, task_target: str | None,
             project: "_Project | None" = None) -> str:
    digest = hashlib.sha1()
    for name, text in sorted(code_sources(root, optim_target, task_target, project).items()):
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()[:12]


def code_modules(cfg: DictConfig | dict, root: Path = PROJECT_ROOT) -> list[str]:
    """The modules whose code counts for the run `cfg` (sorted): what `code_version` hashes."""
    cfg = _plain(cfg)
    return sorted(code_sources(root, _target(cfg["optim"]), _target(cfg["task"])))


def code_sources(root: Path, optim_target: str | None, task_target: str | None,
                 project: "_Project | None" = None) -> dict[str, str]:
    """{module: its source without comments and docstrings} for everything the run executes;
    `project`: a reading of the code under `root` to reuse (it caches what it parsed)."""
    project = project or _Project(root)
    roots = list(LOOP_ROOTS)
    outside = {}
    for target in (optim_target, task_target):
        if not target:
            continue
        module = project.defining_module(target)
        if module is not None:
            roots.append(module)
        else:  # a class from another package (torch's AdamW, a user's optimizer)
            outside.update(_outside_source(target))
    return {**project.closure(roots), **outside}


def _outside_source(target: str) -> dict[str, str]:
    """A target outside the project: its module's source when it is the user's own file; a
    library's class is identified by the library version the environment records instead."""
    module = target.rpartition(".")[0]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return {}
    origin = spec.origin if spec else None
    libraries = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    if not origin or not origin.endswith(".py") or any(origin.startswith(p) for p in libraries):
        return {}
    return {module: stripped_source(Path(origin).read_text())}


class _Project:
    """The modules of CODE_PACKAGES under `root`, read statically (each file once)."""

    def __init__(self, root: Path):
        self.root = root
        self._trees: dict[str, ast.Module] = {}  # parsed once per reading of the code
        self._stripped: dict[str, str] = {}
        self._imports: dict[str, set[str]] = {}

    def path(self, module: str) -> Path | None:
        """The file of a project module (a package's __init__.py), None if it is not ours."""
        if module.split(".")[0] not in CODE_PACKAGES:
            return None
        base = self.root.joinpath(*module.split("."))
        if base.with_suffix(".py").is_file():
            return base.with_suffix(".py")
        if (base / "__init__.py").is_file():
            return base / "__init__.py"
        return None

    def is_package(self, module: str) -> bool:
        path = self.path(module)
        return path is not None and path.name == "__init__.py"

    def tree(self, module: str) -> ast.Module:
        if module not in self._trees:
            self._trees[module] = ast.parse(self.path(module).read_text())
        return self._trees[module]

    def defining_module(self, target: str) -> str | None:
        """The module that defines `target` (`optim.S3` → `optim.s3`, through the package's
        re-export), None outside the project."""
        module, _, name = target.rpartition(".")
        if self.path(module) is None:
            return None
        return self._resolve_name(module, name)

    def _resolve_name(self, module: str, name: str, depth: int = 0) -> str:
        """Where `name`, imported from `module`, is defined: a submodule, a re-export of a
        package's __init__ followed to its source, or `module` itself."""
        if self.path(f"{module}.{name}") is not None:
            return f"{module}.{name}"
        if not self.is_package(module) or depth > 5:
            return module
        for node in self.tree(module).body:
            if isinstance(node, ast.ImportFrom) and any(a.asname == name or
                                                        (a.asname is None and a.name == name)
                                                        for a in node.names):
                source = self._absolute(module, node)
                if source and self.path(source) is not None:
                    original = next(a.name for a in node.names if (a.asname or a.name) == name)
                    return self._resolve_name(source, original, depth + 1)
        return module

    def _absolute(self, module: str, node: ast.ImportFrom) -> str | None:
        if not node.level:
            return node.module
        package = module if self.is_package(module) else module.rpartition(".")[0]
        parts = package.split(".")
        base = parts[: len(parts) - node.level + 1]
        return ".".join(base + ([node.module] if node.module else []))

    def imports(self, module: str) -> set[str]:
        """The project modules `module` imports (at any depth of its code: lazy imports too)."""
        if module not in self._imports:
            self._imports[module] = self._find_imports(module)
        return self._imports[module]

    def _find_imports(self, module: str) -> set[str]:
        found = set()
        for node in ast.walk(self.tree(module)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if self.path(alias.name) is not None:
                        found.add(alias.name)
            elif isinstance(node, ast.ImportFrom):
                source = self._absolute(module, node)
                if source is None or self.path(source) is None:
                    continue
                for alias in node.names:
                    found.add(self._resolve_name(source, alias.name))
        return found

    def closure(self, roots: list[str]) -> dict[str, str]:
        """{module: stripped source} of the roots and what they import, transitively; package
        __init__ files count only as re-exports (followed, not hashed), NON_COMPUTING modules
        not at all."""
        seen, todo, out = set(), list(roots), {}
        while todo:
            module = todo.pop()
            if module in seen or module in NON_COMPUTING or self.path(module) is None:
                continue
            seen.add(module)
            if not self.is_package(module):
                out[module] = self.stripped(module)
            todo.extend(self.imports(module))
        return out

    def stripped(self, module: str) -> str:
        if module not in self._stripped:
            self._stripped[module] = stripped_source(self.path(module).read_text())
        return self._stripped[module]


def stripped_source(text: str) -> str:
    """`text` without comments, docstrings, trailing spaces and blank lines: edits to those
    never change what the code computes."""
    lines = text.splitlines()
    cut = []  # (first line, first column, last line, end column), 1-based lines
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                cut.append((first.lineno, first.col_offset, first.end_lineno,
                            first.end_col_offset))
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            cut.append((token.start[0], token.start[1], token.end[0], token.end[1]))
    for first, col, last, end_col in sorted(cut, reverse=True):  # bottom up: columns hold
        head, tail = lines[first - 1][:col], lines[last - 1][end_col:]
        lines[first - 1:last] = [head + tail]
    return "\n".join(line.rstrip() for line in lines if line.strip())


Reading = _Project  # one reading of the code under a root, shared by many code versions
