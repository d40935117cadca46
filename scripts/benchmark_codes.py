"""``python scripts/benchmark_codes.py ...``: the installed ``seqae-benchmark-codes`` (seqae/commands/benchmark_codes.py)."""

import sys

from seqae.commands.benchmark_codes import main

if __name__ == "__main__":
    sys.exit(main())
