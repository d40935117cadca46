"""frozen_imports: the GC is paused for the imports, back on after, and only new imports are frozen."""

from __future__ import annotations

import gc
import importlib
import sys
import weakref

import pytest

from seqae.startup import frozen_imports


@pytest.fixture(autouse=True)
def restore_gc():
    yield
    gc.unfreeze()
    gc.enable()


@pytest.fixture
def fresh_module(tmp_path, monkeypatch):
    """The name of a module not imported yet, which records whether the GC was on and makes a cycle."""
    name = f"seqae_test_fresh_{tmp_path.name}"
    (tmp_path / f"{name}.py").write_text(
        "import gc\nGC_ON_AT_IMPORT = gc.isenabled()\nCYCLE = []\nCYCLE.append(CYCLE)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def is_frozen(obj: object) -> bool:
    # gc.get_objects() lists the three generations, not the permanent one that gc.freeze() fills.
    return gc.is_tracked(obj) and not any(o is obj for o in gc.get_objects())


def test_imports_run_with_the_gc_paused_and_are_frozen_after(fresh_module):
    with frozen_imports():
        module = importlib.import_module(fresh_module)
    assert module.GC_ON_AT_IMPORT is False
    assert gc.isenabled()
    assert is_frozen(module.CYCLE)


def test_a_block_that_imports_nothing_new_freezes_nothing():
    # A multirun's second job: its imports are loaded already, and the first job's garbage must stay
    # collectable rather than be frozen for the life of the process.
    class Garbage:
        pass

    garbage = Garbage()
    garbage.self = garbage
    alive = weakref.ref(garbage)
    del garbage
    with frozen_imports():
        import seqae.startup  # noqa: F401  (already loaded)
    assert gc.isenabled()
    gc.collect()
    assert alive() is None


def test_the_gc_is_back_on_after_a_failed_import(tmp_path, monkeypatch):
    (tmp_path / "seqae_test_broken.py").write_text("raise ImportError('broken on purpose')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="broken on purpose"), frozen_imports():
        importlib.import_module("seqae_test_broken")
    assert gc.isenabled()


def test_a_gc_the_caller_turned_off_stays_off(fresh_module):
    gc.disable()
    with frozen_imports():
        module = importlib.import_module(fresh_module)
    assert not gc.isenabled()
    assert not is_frozen(module.CYCLE)
