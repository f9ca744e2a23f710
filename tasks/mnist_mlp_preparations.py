"""`scripts/prepare_data.py mnist | fashion-mnist [--source DIR]`: the four IDX files (from a
folder you have, else downloaded) for the SMuon authors' p* study (tasks/mnist_mlp.py)."""

from __future__ import annotations

from pathlib import Path

from tasks.train.preparation import Preparation, PreparationError


def _arguments(parser) -> None:
    parser.add_argument("--source", type=Path, help="a folder of the four IDX files")


def _idx(name: str):
    def run(args, root: Path) -> str:
        from tasks.mnist_mlp import prepare_idx_dataset

        try:
            counts = prepare_idx_dataset(name, root / name, args.source)
        except (FileNotFoundError, ValueError) as e:
            raise PreparationError(str(e)) from None
        return f"prepared {name}: {counts} images under {root / name}"
    return run


PREPARATIONS = [Preparation(name, f"{name} IDX files", _idx(name), _arguments)
                for name in ("mnist", "fashion-mnist")]
