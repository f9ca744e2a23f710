"""A leaderboard across the rendered tables, from their run records alone.

    python scripts/leaderboard.py [--results results] [--contenders DIR ...] [--out results]

Writes <out>/leaderboard.md and <out>/leaderboard.png (sweeps/leaderboard.py: each optimizer's
metric against each problem's best, Dolan–Moré performance profiles and AlgoPerf's score over
them, steps to target against AdamW, spikes, tables entered). `--contenders` adds the rows of
your optimizers from their results roots (`reproduce.py TABLE --contender ... --results DIR`).
It reads nothing but records.json.gz files, so it renders the same bytes on any machine.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweeps.leaderboard import write  # noqa: E402
from sweeps.records import RecordsError  # noqa: E402
from sweeps.spec import SpecError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="results", help="the committed tables")
    parser.add_argument("--contenders", nargs="*", default=[],
                        help="contender results roots (reproduce.py --contender --results)")
    parser.add_argument("--out", default=None, help="default: --results")
    args = parser.parse_args()
    roots = [Path(p) for p in [args.results, *args.contenders]]
    missing = [str(p) for p in roots if not p.is_dir()]
    if missing:
        parser.error(f"no such folder: {missing}")
    try:
        md, png = write(roots[0], Path(args.out or args.results), roots[1:])
    except (RecordsError, SpecError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {md} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
