"""``python scripts/evaluate.py ...``: the installed ``seqae-evaluate`` (seqae/commands/evaluate.py)."""

from seqae.commands.evaluate import main

if __name__ == "__main__":
    main()
