"""Canonical UCR/UEA train/test splits from the wheels that ship them, laid out for ``data=ucr``.

The aeon 1.6.0 wheel on PyPI carries a few archive sets as ``.ts`` files under
``aeon/datasets/data/``; sktime 1.2.0 adds PLAID, and tslearn 0.10.0 has Trace as ``Trace.npz``.
``fetch(names, root)`` downloads those wheels with ``pip download --no-deps`` (nothing is installed)
and writes ``<root>/<Name>/<Name>_TRAIN.* / _TEST.*``, the folder ``data.root`` expects.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from seqae.errors import ConfigError, FetchError

log = logging.getLogger(__name__)

# wheel -> the folder inside it that holds one folder (or file) per data set
WHEELS = {
    "aeon==1.6.0": "aeon/datasets/data/",
    "sktime==1.2.0": "sktime/datasets/data/",
    "tslearn==0.10.0": "tslearn/.cached_datasets/",
}


def download_wheel(requirement: str, cache: Path) -> Path:
    """The wheel of ``requirement`` (e.g. ``aeon==1.6.0``) in ``cache``, downloaded once."""
    name, version = requirement.split("==")
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"{name}-{version}-*.whl"))
    if not found:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            requirement,
            "-d",
            str(cache),
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        found = sorted(cache.glob(f"{name}-{version}-*.whl"))
        if result.returncode != 0 or not found:
            raise FetchError(
                f"Could not download {requirement} with `{' '.join(command)}`: "
                f"{(result.stderr or result.stdout).strip()[-500:]}"
            )
    return found[0]


def shipped_sets(wheel: Path, folder: str) -> dict[str, list[str]]:
    """The data sets in ``folder`` of ``wheel``: name -> the member files (``Trace`` for Trace.npz)."""
    sets: dict[str, list[str]] = {}
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if not member.startswith(folder) or member.endswith("/"):
                continue
            parts = member[len(folder) :].split("/")
            name = parts[0] if len(parts) > 1 else Path(parts[0]).stem
            sets.setdefault(name, []).append(member)
    return sets


def fetch(names: list[str], root: str | Path, cache: str | Path | None = None) -> dict[str, Path]:
    """Write each named set's TRAIN and TEST files to ``<root>/<name>/``; returns name -> folder.

    A set whose folder already holds its files is left as it is. Raises ``ConfigError`` naming the
    sets that none of the wheels ships, with those they do.
    """
    root = Path(root).expanduser()
    cache = Path(cache).expanduser() if cache else root / ".wheels"
    folders, missing = {}, list(names)
    shipped: dict[str, list[str]] = {}
    for requirement, folder in WHEELS.items():
        if not missing:
            break
        wheel = download_wheel(requirement, cache)
        sets = shipped_sets(wheel, folder)
        shipped.update(sets)
        with zipfile.ZipFile(wheel) as archive:
            for name in [n for n in missing if n in sets]:
                target = root / name
                if not _complete(target, name):
                    _extract(archive, sets[name], target, name)
                    log.info("Wrote %s from %s.", target, wheel.name)
                folders[name] = target
                missing.remove(name)
    if missing:
        raise ConfigError(
            f"No wheel in {sorted(WHEELS)} ships {', '.join(missing)}; the ones they ship are "
            f"{', '.join(sorted(shipped))}."
        )
    return folders


def _complete(folder: Path, name: str) -> bool:
    return any(
        (folder / f"{name}_TRAIN.{fmt}").is_file() and (folder / f"{name}_TEST.{fmt}").is_file()
        for fmt in ("ts", "tsv")
    )


def _extract(archive: zipfile.ZipFile, members: list[str], target: Path, name: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for member in members:
        if member.endswith(".npz"):  # tslearn: X_train [N, T, 1], y_train [N], ... -> UCR 2018 .tsv
            with archive.open(member) as file:
                arrays = np.load(file)
                for split in ("train", "test"):
                    _write_tsv(
                        target / f"{name}_{split.upper()}.tsv", arrays[f"X_{split}"], arrays[f"y_{split}"]
                    )
        elif member.endswith((".ts", ".tsv")):
            with archive.open(member) as source, open(target / Path(member).name, "wb") as out:
                shutil.copyfileobj(source, out)


def _write_tsv(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """UCR 2018 layout: one line per series, the label first; univariate only."""
    if x.ndim == 3 and x.shape[-1] != 1:
        raise ConfigError(f"{path}: the .tsv layout holds univariate series, got {x.shape[-1]} channels.")
    rows = x.reshape(len(x), -1)
    lines = [
        "\t".join([str(label), *(repr(float(v)) for v in row)]) for row, label in zip(rows, y, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
