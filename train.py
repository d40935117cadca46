"""Train a sequence autoencoder: ``python train.py encoder=stacked readout=cell``.

The same as the installed ``seqae-train`` (seqae/commands/train.py); configs live in
``src/seqae/conf/``.
"""

from seqae.commands.train import main

if __name__ == "__main__":
    main()
