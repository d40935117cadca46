"""scripts/docs_figures.py (make docs-figures): the tutorial's pictures come from a real run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_the_tutorial_pictures_are_drawn_from_a_run(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "docs_figures.py"),
            "--out",
            str(tmp_path),
            "--steps",
            "20",
            "--no-screenshot",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "probe accuracy on the test split: " in proc.stdout
    for name in ("tutorial-reconstruction.png", "tutorial-codes.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
