"""The structure reads as layers, each with one job: scripts → sweeps → tasks → optim, never
upward; no optimizer file imports another optimizer file (shared machinery has its own
modules); a problem uses only the harness's public modules."""

import ast

from tests.conftest import ROOT


def _optimizer_modules() -> set[str]:
    """The modules of optim/ that define an optimizer of the registry (optim.REGISTRY)."""
    import optim

    return {spec.cls.__module__.split(".")[1] for spec in optim.ours()}


OPTIMIZERS = _optimizer_modules()
HARNESS_PUBLIC = {"tasks.train.base", "tasks.train.checks", "tasks.train.cost",
                  "tasks.train.store", "tasks.train.preparation"}


def imports(path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def ours(path) -> set[str]:
    return {m for m in imports(path) if m.split(".")[0] in {"optim", "tasks", "sweeps",
                                                            "scripts", "tests"}}


def test_packages_import_only_downward():
    allowed = {"optim": {"optim"}, "tasks": {"optim", "tasks"},
               "sweeps": {"optim", "tasks", "sweeps"}}
    for package, may in allowed.items():
        for path in (ROOT / package).rglob("*.py"):
            up = {m for m in ours(path) if m.split(".")[0] not in may}
            assert not up, f"{path.relative_to(ROOT)} imports {sorted(up)}"


def test_no_optimizer_file_imports_another():
    for name in OPTIMIZERS:
        path = ROOT / "optim" / f"{name}.py"
        other = {m for m in ours(path)
                 if m.startswith("optim.") and m.split(".")[1] in OPTIMIZERS - {name}}
        assert not other, f"optim/{name}.py imports {sorted(other)}"


def test_problems_use_only_the_public_harness():
    problems = [p for p in (ROOT / "tasks").rglob("*.py")
                if p.relative_to(ROOT / "tasks").parts[0] not in ("train", "__init__.py")]
    assert len(problems) >= 10
    for path in problems:
        harness = {m for m in ours(path) if m.startswith("tasks.train")}
        private = {m for m in harness
                   if not any(m == h or m.startswith(h + ".") for h in HARNESS_PUBLIC)
                   and m != "tasks.train"}
        assert not private, f"{path.relative_to(ROOT)} uses {sorted(private)}"


def _module_path(module: str):
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def test_problems_import_nothing_of_optim_at_any_depth():
    """A problem (and the harness modules it uses) knows nothing of optimizers: the planner
    owns optimizer-state memory. Else editing any optimizer would change the code version, and
    the run keys, of every run of that problem (tasks/train/identity.py)."""
    problems = [p for p in (ROOT / "tasks").rglob("*.py")
                if p.relative_to(ROOT / "tasks").parts[0] not in ("train", "__init__.py")]
    for path in problems:
        seen, todo = set(), [path]
        while todo:
            current = todo.pop()
            for module in ours(current):
                if module in seen or not module.startswith("tasks"):
                    assert not module.startswith("optim"), (
                        f"{path.relative_to(ROOT)} reaches {module} (through "
                        f"{current.relative_to(ROOT)})")
                    continue
                seen.add(module)
                found = _module_path(module)
                if found is not None and found.name != "__init__.py":
                    todo.append(found)


def _graph(package: str) -> dict[str, set[str]]:
    """{module: the modules of `package` it imports, at any depth of its code}."""
    modules = {f"{package}.{p.stem}": p for p in (ROOT / package).glob("*.py")
               if p.stem != "__init__"}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == package:
                found |= {f"{package}.{a.name}" for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = found & set(modules)
    return graph


def test_sweeps_has_no_import_cycle():
    """Lazy imports inside functions count: a cycle they hide is still a cycle."""
    graph = _graph("sweeps")
    done, path = set(), []

    def visit(module):
        assert module not in path, f"import cycle: {' → '.join(path[path.index(module):])}"
        if module in done:
            return
        path.append(module)
        for dep in graph[module]:
            visit(dep)
        path.pop()
        done.add(module)

    for module in graph:
        visit(module)


# The store, the lease, the atomic IO, the environment record and the run identity: both tasks/
# and sweeps/ build on them, so they import nothing of ours but each other (and no torch).
LEAVES = {"tasks.train.identity", "tasks.train.store", "tasks.train.lease",
          "tasks.train.environment", "tasks.train.errors"}


def test_the_run_store_and_identity_are_leaves():
    for leaf in LEAVES:
        path = ROOT / (leaf.replace(".", "/") + ".py")
        mine = {m for m in ours(path) - {"tasks.train"}
                if not any(m == leaf or m.startswith(leaf + ".") for leaf in LEAVES)}
        assert not mine, f"{leaf} imports {sorted(mine)}"
        assert "torch" not in {m.split(".")[0] for m in imports(path)
                               if not m.startswith("tasks")} or leaf == "tasks.train.environment"
