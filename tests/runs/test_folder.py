"""A run folder: its layout in one place, its files whole or absent, one writer at a time."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import time
from pathlib import Path

import pytest

from seqae.errors import RunFolderError
from seqae.runs.folder import (
    LOCK_NAME,
    RunFolder,
    claim_run_folder,
    release_run_folder,
    write_json_atomically,
)


def test_metrics_json_is_replaced_atomically(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_json_atomically(path, {"test/mse": 0.5})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dumps", killed)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomically(path, {"test/mse": 0.25})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"test/mse": 0.5}


def hold_in_another_process(folder: Path, ready: Path, release: Path) -> None:
    """A second process that claims the folder and keeps it until told to let go."""
    claim_run_folder(folder)
    ready.touch()
    while not release.exists():
        time.sleep(0.01)
    os._exit(0)  # no atexit handlers: the lock file stays, as when a run is killed


def test_a_run_folder_has_one_writer_and_a_dead_writers_lock_is_taken_over(tmp_path):
    folder, ready, release = tmp_path / "run", tmp_path / "ready", tmp_path / "release"
    other = multiprocessing.get_context("spawn").Process(
        target=hold_in_another_process, args=(folder, ready, release)
    )
    other.start()
    while not ready.exists():
        time.sleep(0.01)
    with pytest.raises(
        RunFolderError, match=rf"{folder} is in use: host \S+ pid {other.pid} is training in it"
    ):
        claim_run_folder(folder)
    release.touch()
    other.join()
    note = claim_run_folder(folder)
    assert (
        note
        == f"Took over the lock of {folder}: host {socket.gethostname()} pid {other.pid} held it and is gone."
    )
    assert claim_run_folder(folder) is None  # this process holds it already
    assert (folder / LOCK_NAME).read_text().strip() == f"host {socket.gethostname()} pid {os.getpid()}"
    release_run_folder(folder)
    assert not (folder / LOCK_NAME).exists()


def test_a_checkpoint_belongs_to_the_run_whose_checkpoints_folder_holds_it(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert RunFolder.of(run.best_checkpoint) == run == RunFolder.of(run.path)
    assert run.config == run.path / ".hydra" / "config.yaml"
    assert RunFolder.of(tmp_path / "exported.ckpt").path == tmp_path  # a checkpoint moved out of its run
