"""``python scripts/encode.py ...``: the installed ``seqae-encode`` (seqae/commands/encode.py)."""

from seqae.commands.encode import main

if __name__ == "__main__":
    main()
