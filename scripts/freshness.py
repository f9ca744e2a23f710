"""Is every committed table still made by this code? `python scripts/freshness.py [TABLE ...]`

For each table under results/ (or the ones named): fresh (every run key is the one this tree
gives), certified (keys changed through code edits that `reproduce.py TABLE --certify` showed
change no number) or stale, with the (task, optimizer) pairs and rows that changed and the
command that fixes it (sweeps/freshness.py). Exit code 1 when a table is stale.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweeps import freshness  # noqa: E402
from sweeps.reproduce import RESULTS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tables", nargs="*", help="table names (default: every committed one)")
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args()
    folders = [f for f in freshness.committed(Path(args.results))
               if not args.tables or f.parent.name in args.tables]
    unknown = sorted(set(args.tables) - {f.parent.name for f in folders})
    if unknown:
        print(f"error: no committed table {unknown} under {args.results}", file=sys.stderr)
        return 2
    states = [freshness.check(f) for f in folders]
    for state in states:
        print(state.describe())
    stale = [s for s in states if s.state == freshness.STALE]
    print(f"\n{len(states)} table(s): " + ", ".join(
        f"{sum(s.state == k for s in states)} {k}" for k in (freshness.FRESH, freshness.CERTIFIED,
                                                            freshness.STALE)))
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
