"""The installed commands: ``seqae-train``, ``seqae-encode``, ``seqae-evaluate`` and
``seqae-benchmark-codes`` (``[project.scripts]`` in pyproject.toml). Each is a module here; the
repository's ``train.py`` and ``scripts/*.py`` call the same ``main``."""
