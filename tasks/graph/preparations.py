"""`scripts/prepare_data.py graphland NAME --source DIR [--split RL|RH|TH]`: a GraphLand
dataset folder as published on Zenodo, read into the arrays the graph task loads."""

from __future__ import annotations

from pathlib import Path

from tasks.train.preparation import Preparation, PreparationError


def _arguments(parser) -> None:
    parser.add_argument("dataset", nargs="?", help="the dataset (e.g. tolokers-2)")
    parser.add_argument("--source", type=Path, help="the dataset's unzipped folder")
    parser.add_argument("--split", default="RL", help="RL, RH or TH")


def _graphland(args, root: Path) -> str:
    from tasks.graph.data import DATASETS, SPLITS, prepare_graphland

    if args.dataset not in DATASETS:
        raise PreparationError(f"graphland needs a dataset name, one of {list(DATASETS)}; got "
                               f"{args.dataset!r}")
    if args.split not in SPLITS:
        raise PreparationError(f"--split must be one of {list(SPLITS)}, got {args.split!r}")
    if args.source is None or not args.source.is_dir():
        raise PreparationError(f"graphland needs --source DIR, the dataset's unzipped folder "
                               f"(got {args.source})")
    try:
        meta = prepare_graphland(args.source, root / "graphland" / args.dataset, args.split)
    except (FileNotFoundError, ValueError) as e:
        raise PreparationError(str(e)) from None
    return (f"prepared graphland {args.dataset} ({args.split}): {meta['nodes']:,} nodes, "
            f"{meta['edges']:,} edges, {meta['features']} features, {meta['classes']} classes "
            f"under {root / 'graphland' / args.dataset}")


PREPARATIONS = [Preparation("graphland", "a GraphLand dataset folder (--source DIR)",
                            _graphland, _arguments)]
