"""Files a run writes are whole or absent, never truncated."""

from __future__ import annotations

import json

import pytest

from seqae.files import write_json_atomically


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
