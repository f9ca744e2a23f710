"""Data preparations, one per subcommand of `scripts/prepare_data.py`, each owned by the task
package whose data it prepares: `tasks/<package>/preparations.py` (or `tasks/<task>_
preparations.py` beside a one-module task) holds `PREPARATIONS`, a list of `Preparation`s, and
the script finds them there. Adding a task with data of its own touches its own package only.

The preparations modules are never imported by a task's training code, so their edits leave
every run key as it is (tasks/train/identity.py)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


class PreparationError(ValueError):
    """Bad arguments or missing input for a preparation; the script exits 2 with it."""


@dataclass(frozen=True)
class Preparation:
    name: str  # the subcommand: `prepare_data.py NAME`
    help: str
    # run(args, data_root) → the line to print; PreparationError for bad input
    run: Callable[[argparse.Namespace, Path], str]
    arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None


def is_preparations_module(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return last == "preparations" or last.endswith("_preparations")


def discover(package: str = "tasks") -> list[Preparation]:
    """Every preparation the task packages under `package` declare, in module order; two with
    one name are an error naming both modules."""
    root = importlib.import_module(package)
    found: dict[str, tuple[Preparation, str]] = {}
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if not is_preparations_module(info.name):
            continue
        module = importlib.import_module(info.name)
        for prep in getattr(module, "PREPARATIONS", ()):
            if prep.name in found:
                raise PreparationError(f"preparation {prep.name!r} is declared by both "
                                       f"{found[prep.name][1]} and {info.name}")
            found[prep.name] = (prep, info.name)
    return [prep for prep, _ in found.values()]
