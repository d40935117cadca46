"""One table of a sweep: ``python scripts/summarize.py outputs/train/multiruns/<id>``.

Prints every job's overrides, val/loss_best, test and eval metrics as Markdown, best first by the
sweep's ``optimized_metric``, and writes the table to ``<sweep>/summary.csv`` and ``summary.md``.
"""

import argparse
import sys

from seqae.evaluation.summary import summarize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep", help="a multirun folder: outputs/<task>/multiruns/<id>")
    parser.add_argument(
        "--sort", metavar="METRIC", help="sort by this metric (default: the sweep's optimized_metric)"
    )
    parser.add_argument(
        "--max", action="store_true", help="higher is better (default: the sweeper's direction, else lower)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; do not write summary.csv/.md")
    args = parser.parse_args(argv)
    try:
        table = summarize(args.sweep, args.sort, True if args.max else None, write=not args.no_write)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table)
    if not args.no_write:
        print(f"Written: {args.sweep.rstrip('/')}/summary.csv and summary.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
