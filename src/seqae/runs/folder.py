"""A run's folder: where each file a run writes lives, each file written whole or not at all, and one
writer per folder."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqae.errors import RunFolderError


@dataclass(frozen=True)
class RunFolder:
    """The layout of a run folder, in one place (the checkpoint callbacks' ``dirpath`` in
    conf/callbacks/default.yaml is the same ``checkpoints/``)."""

    path: Path

    @classmethod
    def of(cls, path: str | Path) -> RunFolder:
        """The run a path belongs to: the folder itself, or the run of a checkpoint in ``checkpoints/``."""
        path = Path(path)
        if path.suffix == ".ckpt":
            return cls(path.parent.parent if path.parent.name == "checkpoints" else path.parent)
        return cls(path)

    @property
    def config(self) -> Path:  # the composed config Hydra saved
        return self.path / ".hydra" / "config.yaml"

    @property
    def overrides(self) -> Path:  # the command line's overrides Hydra saved
        return self.path / ".hydra" / "overrides.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def metrics(self) -> Path:  # the final metrics of training and testing
        return self.path / "metrics.json"

    @property
    def evaluation(self) -> Path:  # scripts/evaluate.py's results
        return self.path / "eval.json"

    @property
    def log(self) -> Path:
        return self.path / "train.log"

    def earlier_results(self) -> list[Path]:
        """What an earlier run left here (its metrics, its checkpoints): a fresh run must not overwrite it."""
        return [p for p in (self.metrics, self.checkpoints) if p.exists()]


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


# One writer per run folder: the process that trains in it holds <run>/.seqae.lock (flock) for its
# whole life, with its host and pid written inside. The kernel releases a flock when its process
# dies, however it dies, so a lock left by a killed run is free for the next one. Not `filelock`:
# its UnixFileLock opens the file with O_TRUNC to try the lock, so every refused process would
# erase the holder's host and pid, which the refusal names.
LOCK_NAME = ".seqae.lock"
# A folder whose lock an ancestor holds for this process (the ranks seqae starts for a sweep's job).
HELD_BY_PARENT = "SEQAE_RUN_FOLDER_LOCKED"
_held: dict[Path, int] = {}


def claim_run_folder(folder: str | Path) -> str | None:
    """Make this process the only writer of ``folder``, or refuse (``RunFolderError``) naming the
    process that is. Idempotent. Returns a note when it took over the lock of a process that is
    gone, else None. DDP ranks other than 0 write nothing themselves and claim nothing."""
    import fcntl
    import socket

    folder = Path(folder).absolute()
    if folder in _held or os.environ.get(HELD_BY_PARENT) == str(folder) or _secondary_rank():
        return None
    if not _held:  # an exit in an error (a bad override, say) gives the folder back too
        atexit.register(_release_all)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "a process"
        os.close(fd)
        raise RunFolderError(
            f"The run folder {folder} is in use: {holder} is training in it, and a run folder has one "
            f"writer. Wait for that run to end (or stop it), then run this again; or give this run "
            f"a folder of its own."
        ) from None
    previous = os.pread(fd, 200, 0).decode(errors="replace").strip()
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"host {socket.gethostname()} pid {os.getpid()}\n".encode(), 0)
    _held[folder] = fd
    if previous:
        return f"Took over the lock of {folder}: {previous} held it and is gone."
    return None


def _secondary_rank() -> bool:
    return any(os.environ.get(key, "0") != "0" for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def release_run_folder(folder: str | Path) -> None:
    """A finished run gives its folder back: the lock file goes, and the lock with it. A folder
    that held nothing else (the run stopped before Hydra wrote into it) goes too."""
    folder = Path(folder).absolute()
    fd = _held.pop(folder, None)
    if fd is not None:
        (folder / LOCK_NAME).unlink(missing_ok=True)
        os.close(fd)
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty


def _release_all() -> None:
    for folder in list(_held):
        release_run_folder(folder)
