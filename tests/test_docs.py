"""Every command in the README and the docs works as written: each ``python train.py`` / ``seqae-train``
line composes (sweeps at their first value), and each script or installed command answers ``--help``."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from tests.conftest import ROOT, compose_config

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Runs of a documented command that depend on what the reader made first, and where it is checked.
ELSEWHERE = {
    "hydra.searchpath=[file://$PWD/myconf]": "tests/models/test_targets.py runs the docs' own myconf"
}


def bash_lines() -> list[tuple[str, str]]:
    """(page, command) for every command of every ```bash block, continuation lines joined and
    trailing comments dropped."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.split(r"\s+#", line)[0].strip().rstrip("&").strip()
                if line and not line.startswith("#"):
                    found.append((page.name, line))
    return found


def commands(prefix: str) -> list[tuple[str, str]]:
    return [(page, c[c.index(prefix) :]) for page, c in bash_lines() if prefix in c]


def first_values(args: list[str]) -> list[str]:
    """A sweep's overrides at their first value: what its first job composes."""
    parsed = OverridesParser.create().parse_overrides(args)
    return [
        f"{o.get_key_element()}={next(o.sweep_string_iterator())}" if o.is_sweep_override() else arg
        for o, arg in zip(parsed, args, strict=True)
    ]


TRAIN_LINES = commands("python train.py") + commands("seqae-train")


@pytest.mark.parametrize(("page", "line"), TRAIN_LINES, ids=[f"{p}: {c[:60]}" for p, c in TRAIN_LINES])
def test_each_documented_training_command_composes(page, line, tmp_path):
    if reason := next((why for key, why in ELSEWHERE.items() if key in line), None):
        pytest.skip(reason)
    args = [
        a for a in shlex.split(line)[2 if line.startswith("python") else 1 :] if a not in ("-m", "--multirun")
    ]
    for flag in ("--cfg", "--package", "--info"):  # Hydra's own flags and their values: the line asks Hydra
        if flag in args:
            i = args.index(flag)
            del args[i : i + 2]
    args = [a for a in args if not a.startswith("--")]
    # Placeholders (<run>, <partition>) and resume= need what the reader made: they are checked by the
    # CLI tests; every other override must compose exactly as written.
    args = [a for a in args if "<" not in a and not a.startswith(("resume=", "ckpt_path="))]
    cfg = compose_config(first_values(args), tmp_path / "run")
    OmegaConf.to_container(cfg, resolve=True)  # the interpolations too (a launcher's tasks_per_node, ...)


SCRIPTS = sorted(
    {m for _, c in bash_lines() for m in re.findall(r"(?:^|\s)(scripts/\w+\.py|seqae-[a-z-]+)", c)}
)


@pytest.mark.slow
@pytest.mark.parametrize("command", SCRIPTS)
def test_each_documented_script_and_command_answers_help(command):
    argv = (
        [sys.executable, str(ROOT / command)]
        if command.endswith(".py")
        else [str(Path(sys.executable).parent / command)]
    )
    proc = subprocess.run([*argv, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr[-2000:]


def python_snippets() -> list[tuple[str, str]]:
    return [
        (page.name, block)
        for page in PAGES
        for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    ]


SNIPPETS = python_snippets()
# What a snippet reads that the reader made before it, made here the way the page says.
BEFORE = {
    "outputs/train/runs/demo": [
        "hydra.run.dir=outputs/train/runs/demo",
        "trainer.max_steps=20",
        "trainer.val_check_interval=10",
    ],
    "outputs/train/runs/tutorial": [  # docs/tutorial.md's run: univariate series of 128 steps
        "hydra.run.dir=outputs/train/runs/tutorial",
        "data.num_features=1",
        "data.seq_len=128",
        "trainer.max_steps=20",
        "trainer.val_check_interval=10",
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("page", "code"), SNIPPETS, ids=[f"{p}: {c.splitlines()[0][:40]}" for p, c in SNIPPETS]
)
def test_each_documented_python_snippet_runs_as_written(page, code, tmp_path):
    for needed, overrides in BEFORE.items():
        if needed in code:
            proc = subprocess.run(
                [sys.executable, str(ROOT / "train.py"), *overrides],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert proc.returncode == 0, proc.stderr[-2000:]
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
