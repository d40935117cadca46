"""scripts/benchmark.py at its tiny size: it runs every section and writes the JSON it promises.

No timing thresholds: the numbers depend on the machine and on whoever else is using it.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from tests.conftest import ROOT, run_cli


@pytest.mark.slow
def test_quick_benchmark_writes_every_section(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_cli("--quick", "--threads", "1", "--out", str(out), script="scripts/benchmark.py")
    assert proc.returncode == 0, proc.stderr[-3000:]

    results = json.loads(out.read_text())
    assert {"command", "machine", "fit", "encode", "scaling", "startup", "markdown"} <= set(results)
    fit = results["fit"]["tiny"]
    for side in ("seqae", "plain"):
        assert fit[side]["steps_per_s"] > 0 and fit[side]["sequences_per_s"] > 0
    assert fit["ratio"] > 0 and fit["ratio_best_epochs"] > 0 and fit["threads"] == 1
    assert results["encode"]["tiny"]["ratio"] > 0
    assert fit["process_ratios"] == [fit["ratio"]]  # --quick: one process, this one
    assert {"base", "seq x2", "batch x2", "hidden x2"} == {r["config"] for r in results["scaling"]}
    startup = results["startup"]
    assert startup["to_first_step_s"] > 0
    assert {"compose config", "build data", "build model"} <= set(startup["breakdown_s"])
    # the printed table is the one in the JSON
    assert results["markdown"] in proc.stdout and "| fit |" in results["markdown"]


@pytest.mark.slow
def test_comparisons_in_several_processes_give_the_median_and_every_process_ratio(tmp_path):
    out = tmp_path / "bench.json"
    args = ("--quick", "--processes", "3", "--rounds", "1", "--only", "fit,encode", "--threads", "1")
    proc = run_cli(*args, "--out", str(out), script="scripts/benchmark.py")
    assert proc.returncode == 0, proc.stderr[-3000:]

    results = json.loads(out.read_text())
    for section in ("fit", "encode"):
        row, runs = results[section]["tiny"], results[section]["tiny"]["processes"]
        assert len(runs) == 3 and row["process_ratios"] == [r["ratio"] for r in runs]
        assert row["ratio"] == sorted(row["process_ratios"])[1]
        assert row["rounds"] == sum(r["rounds"] for r in runs)
        assert ", ".join(f"{r:.3f}" for r in row["process_ratios"]) in results["markdown"]
    fit = results["fit"]["tiny"]
    assert fit["seqae"]["steps_per_s"] == sorted(r["seqae"]["steps_per_s"] for r in fit["processes"])[1]
    assert fit["epoch_pairs"] == sum(r["epoch_pairs"] for r in fit["processes"]) > 0
    assert "scaling" not in results and proc.stderr.count("fit tiny round 1/1") == 3


def load_benchmark():
    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sizes", "huge"], "--sizes: unknown size(s) ['huge']; choose from ['realistic', 'seed', 'tiny']"),
        (["--only", "fit,speed"], "--only: unknown section(s) ['speed']"),
        (["--rounds", "0"], "--rounds must be at least 1, got 0"),
        (["--processes", "0"], "--processes must be at least 1, got 0"),
    ],
)
def test_bad_options_are_refused_naming_the_option_and_the_choices(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_benchmark().parse_args(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_fit_rates_leave_out_the_warm_up_epoch_and_count_epoch_ends_only_with_epoch_ends():
    bench = load_benchmark()
    stamps = bench.Stamps()
    # epoch 0 (warm-up): 10 steps; epoch 1: 10 steps in 2 s, then 3 s of validation etc.;
    # epoch 2: 10 steps in 1 s, then 1 s. (The other side runs between one cycle's end and the next start.)
    for epoch, start, train_s, cycle_s, steps_at in (
        (0, 0.0, 5.0, 6.0, 10),
        (1, 10.0, 2.0, 5.0, 20),
        (2, 20.0, 1.0, 2.0, 30),
    ):
        stamps.starts[epoch] = (start, start)
        stamps.ends[epoch] = (start + train_s, start + train_s)
        stamps.cycle_ends[epoch] = (start + cycle_s, start + cycle_s)
        stamps.steps[epoch], stamps.sequences[epoch] = steps_at, 4 * steps_at
    rates = stamps.rates()
    assert rates["steps_per_s"] == pytest.approx(20 / 3)  # 20 steps in 2 s + 1 s of training
    assert rates["steps_per_s_with_epoch_ends"] == pytest.approx(20 / 7)  # 5 s + 2 s, not 10.0 to 22.0
    assert rates["steps_per_s_best_epoch"] == pytest.approx(10.0)  # epoch 2
    assert rates["sequences_per_s"] == pytest.approx(80 / 3)
    assert stamps.epoch_rates(1)["steps_per_s"] == pytest.approx(5.0)
    assert stamps.epoch_rates(1)["steps_per_s_with_epoch_ends"] == pytest.approx(2.0)


def test_median_interval_brackets_the_median_and_narrows_with_more_pairs():
    bench = load_benchmark()
    few, many = [0.9, 1.0, 1.1, 0.95, 1.05], [0.9, 1.0, 1.1, 0.95, 1.05] * 20
    lo, hi = bench.median_interval(few)
    assert (lo, hi) == (0.9, 1.1)  # five values: the interval is (nearly) their whole range
    lo_many, hi_many = bench.median_interval(many)
    assert lo_many <= 1.0 <= hi_many and hi_many - lo_many < hi - lo
    assert bench.median_interval([0.97]) == (0.97, 0.97)


def test_a_fit_round_without_a_timed_epoch_is_refused():
    stamps = load_benchmark().Stamps()
    stamps.starts[0], stamps.ends[0], stamps.steps[0], stamps.sequences[0] = (0, 0), (1, 1), 4, 16
    with pytest.raises(ValueError, match="at least 2 epochs"):
        stamps.rates()


def test_at_stack_depth_returns_the_result_from_that_many_levels_deeper():
    import traceback

    at_stack_depth = load_benchmark().at_stack_depth
    frames = {depth: at_stack_depth(depth, lambda: len(traceback.extract_stack())) for depth in (0, 5)}
    assert frames[5] - frames[0] == 5 * 2  # each level: at_stack_depth and the lambda map calls
