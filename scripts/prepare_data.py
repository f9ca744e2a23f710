"""Prepare data once, before training (training jobs never download).

    python scripts/prepare_data.py NAME [ARGS] [--data-root DIR]
    python scripts/prepare_data.py --help           (every NAME, with what it prepares)
    python scripts/prepare_data.py NAME --help      (its arguments)

Each NAME is declared by the task package whose data it prepares, in its `preparations`
module (tasks/train/preparation.py): pystdlib, text, openwebtext, fineweb, c4 and hf
(tasks/nanogpt), cifar10 and cifar100 (tasks/cifar), gsm8k, metamathqa, numina, math, alpaca,
arith and tiny_llama_base (tasks/lora), imagenet and imagenette (tasks/vision), graphland
(tasks/graph), mnist and fashion-mnist (tasks/mnist_mlp). A new task with data of its own adds
its preparations beside it; this script does not change.
`data_root` is `$OPTBENCH_DATA` or `data/`, or `--data-root`.
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tasks.train.preparation import PreparationError, discover  # noqa: E402


def main() -> int:
    preparations = discover()
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-root", default=os.environ.get("OPTBENCH_DATA", "data"))
    sub = parser.add_subparsers(dest="preparation", required=True, metavar="NAME")
    for prep in preparations:
        prep.arguments(sub.add_parser(prep.name, help=prep.help, parents=[common]))
    args = parser.parse_args()
    prep = next(p for p in preparations if p.name == args.preparation)
    try:
        print(prep.run(args, Path(args.data_root).expanduser().absolute()))
    except PreparationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
