"""Files a run writes: each one whole or not at all, in a folder that can hold them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from seqae.errors import RunFolderError


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write to a temporary file, then rename: a kill mid-write never leaves a truncated file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def check_run_folder(folder: str, key: str) -> None:
    """Refuse, before Hydra tries, a run folder that cannot be made: inside a file, or unwritable."""
    existing = Path(folder).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise RunFolderError(
            f"{key}={folder}: {existing} is a file, so the run folder cannot be made inside it; "
            f"expected a folder path (drop the override to get outputs/<task>/runs/<time>/)."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunFolderError(
            f"{key}={folder}: {existing} is not writable by this user; expected a writable folder."
        )
