"""`python train.py resume=<run folder> [new overrides]`: continue a run in its own folder.

Resuming is a rewrite of the command line before Hydra sees it, so Hydra composes exactly what
the run was started with: the run's saved overrides, then the new ones on top, then
``hydra.run.dir=<run>`` (same folder, same TensorBoard run, same checkpoints) and
``ckpt_path=<run>/checkpoints/last.ckpt``. Hydra writes the resumed config to
``<run>/.hydra/resume-<time>/``, so the run's original ``.hydra/`` is never overwritten.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path

import yaml

from seqae.errors import RunFolderError
from seqae.runs.folder import RunFolder, check_run_folder, claim_run_folder

# Keys a resume sets itself; never carried over from a run's saved overrides.
RESUME_KEYS = ("resume", "ckpt_path", "hydra.run.dir", "hydra.output_subdir")


def key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def value_of(argv: list[str], key: str) -> str | None:
    values = [a.split("=", 1)[1] for a in argv if "=" in a and key_of(a) == key]
    if not values:
        return None
    value = values[-1]
    quoted = len(value) >= 2 and value[0] == value[-1] and value[0] in "'\""
    return value[1:-1] if quoted else value  # Hydra reads key="a b" as a b


def saved_overrides(run: Path) -> list[str]:
    """The overrides the run was last (re)started with."""
    folders = [run / ".hydra", *sorted((run / ".hydra").glob("resume-*"))]
    latest = [f / "overrides.yaml" for f in folders if (f / "overrides.yaml").is_file()][-1]
    return [o for o in yaml.safe_load(latest.read_text()) or [] if key_of(o) not in RESUME_KEYS]


def rewrite_argv(argv: list[str]) -> list[str]:
    """argv with ``resume=<run>`` expanded; otherwise argv unchanged (after a safety check)."""
    args = argv[1:]
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return argv  # a DDP child that Lightning started with the already rewritten command
    run_dir = value_of(args, "resume")
    if run_dir is None or run_dir == "null":
        refuse_earlier_run_folder(args)
        return argv
    run = Path(run_dir).expanduser()
    if "-m" in args or "--multirun" in args:
        sys.exit("resume=<run folder> continues one run; for a killed sweep see skip_finished in the README.")
    if not RunFolder(run).overrides.is_file():
        sys.exit(
            f"resume={run_dir}: {run} is not a seqae run folder (no .hydra/overrides.yaml). "
            f"Expected a folder such as outputs/train/runs/<timestamp>."
        )
    last = RunFolder(run).last_checkpoint
    if not last.is_file():
        sys.exit(
            f"resume={run_dir}: {last} does not exist, so there is nothing to continue from "
            f"(the run stopped before its first epoch ended). Start it again as a fresh run."
        )
    claim_or_exit(run)  # a second resume of the same run stops here
    new = [a for a in args if "=" in a and key_of(a) not in RESUME_KEYS]
    flags = [a for a in args if "=" not in a]
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
    print(
        f"Resuming {run} from {last.name}\n  saved overrides: {saved_overrides(run)}\n  new overrides:   {new}"
    )
    return [
        argv[0],
        *flags,
        *saved_overrides(run),
        *new,
        f"resume={run}",
        f"ckpt_path={last}",
        f"hydra.run.dir={run}",
        f"hydra.output_subdir=.hydra/resume-{stamp}",
    ]


def refuse_earlier_run_folder(args: list[str]) -> None:
    """A fresh run pointed at an earlier run's folder, or at one that cannot be made, stops before
    Hydra writes anything (Hydra would print a traceback for the second)."""
    for key in ("hydra.run.dir", "hydra.sweep.dir"):
        folder = value_of(args, key)
        if folder is not None and "${" not in folder:
            try:
                check_run_folder(folder, key)
            except RunFolderError as e:
                sys.exit(str(e))
    run_dir = value_of(args, "hydra.run.dir")
    if run_dir is None or "-m" in args or "--multirun" in args:
        return
    run = Path(run_dir).expanduser()
    earlier = [p.name for p in RunFolder(run).earlier_results()]
    if earlier and value_of(args, "ckpt_path") in (None, "null") and not restarted_by_slurm():
        sys.exit(
            f"hydra.run.dir={run_dir} already holds an earlier run ({', '.join(earlier)}); refusing to "
            f"overwrite it. Continue it with `python train.py resume={run_dir}`, or drop hydra.run.dir "
            f"to start a fresh run folder."
        )
    if "${" not in run_dir:
        claim_or_exit(run)


def claim_or_exit(run: Path) -> None:
    """Become the run folder's one writer before Hydra writes anything into it, or stop here."""
    try:
        if note := claim_run_folder(run):
            print(note, file=sys.stderr)
    except RunFolderError as e:
        sys.exit(str(e))


def restarted_by_slurm() -> bool:
    """This is a SLURM job that SLURM started again (requeued after preemption, say): it continues
    the run in its folder from ``checkpoints/last.ckpt`` (see seqae/training/preemption.py)."""
    return os.environ.get("SLURM_RESTART_COUNT", "0") not in ("", "0")
