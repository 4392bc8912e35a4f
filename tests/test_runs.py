"""Benchmark runs: selection errors are one line, saved runs are never overwritten or lost."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench import backends, harness

REPO = Path(__file__).resolve().parents[1]
QUICK = ["--backends", "eager", "--batch-sizes", "1", "--devices", "cpu", "--modes", "forward",
         "-k", "not sgemm", "--benchmark-max-time=0.05", "--benchmark-min-rounds=5"]


def bench_command(storage, *extra):
    return [sys.executable, "-m", "pytest", "bench", "-q", "-p", "no:cacheprovider", "--benchmark-only",
            f"--benchmark-storage={storage}/benchmarks", *extra]


def saved_runs(storage):
    return sorted(Path(storage).rglob("*.json"))


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--backends", "nope", f"--backends: unknown backend 'nope'; choose from: {', '.join(backends.CONFIGS)}"),
    ("--devices", "tpu", "--devices: unknown device 'tpu'; choose from: cpu, cuda"),
    ("--modes", "infer", "--modes: unknown mode 'infer'; choose from: train, forward"),
    ("--batch-sizes", "0", "--batch-sizes: expected positive integers, got '0'"),
])
def test_unknown_selection_is_one_line_listing_the_choices(tmp_path, option, value, message):
    done = subprocess.run(bench_command(tmp_path, option, value), cwd=REPO, capture_output=True, text=True)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"ERROR: {message}"), done.stderr


def test_unwritable_storage_is_one_line_before_any_benchmark_runs(tmp_path):
    (tmp_path / "benchmarks").write_text("a file where the storage folder should be")
    done = subprocess.run(bench_command(tmp_path, *QUICK), cwd=REPO, capture_output=True, text=True)
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("ERROR: --benchmark-storage: cannot save runs in")
    assert "give a writable folder" in errors[0]


def test_two_runs_at_the_same_moment_both_keep_their_results(tmp_path):
    runs = [subprocess.Popen(bench_command(tmp_path, *QUICK), cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stderr.read()
    files = saved_runs(tmp_path)
    assert len(files) == 2, files
    for f in files:
        assert json.loads(f.read_text())["benchmarks"]
        assert f.stat().st_mode & 0o777 == harness.file_mode()  # not mkstemp's 0600
    assert "Forward pass, cpu" in (tmp_path / "REPORT.md").read_text()  # refreshed after the run


def test_an_interrupted_run_leaves_earlier_results_intact(tmp_path):
    assert subprocess.run(bench_command(tmp_path, *QUICK), cwd=REPO, capture_output=True).returncode == 0
    [earlier] = saved_runs(tmp_path)
    before = earlier.read_bytes()
    run = subprocess.Popen(bench_command(tmp_path, "--devices", "cpu", "--backends", "eager"), cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(6)
    run.send_signal(signal.SIGINT)
    run.wait(timeout=120)
    assert earlier.read_bytes() == before
    for f in saved_runs(tmp_path):  # whatever the interrupted run left is whole JSON
        json.loads(f.read_text())


def test_saving_never_overwrites_a_run_with_the_same_name(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from pytest_benchmark.storage.file import FileStorage

    from bench.conftest import protect_saved_runs

    storage = FileStorage(tmp_path, logger=SimpleNamespace(info=lambda *a, **k: None))
    # two runs ending together both see the same newest number on disk
    monkeypatch.setattr(FileStorage, "_next_num", property(lambda self: "0001"))
    protect_saved_runs(storage)
    storage.save({"run": 1}, "same")
    storage.save({"run": 2}, "same")
    files = saved_runs(tmp_path)
    assert sorted(json.loads(f.read_text())["run"] for f in files) == [1, 2]
    assert [f.name[:5] for f in files] == ["0001_", "0002_"]
    assert sorted(os.listdir(tmp_path)) == sorted(f.name for f in files)  # no temporary file left


class FakeBenchmark:
    """Stands in for pytest-benchmark's fixture: calls the timed callable once."""

    def __init__(self):
        self.group, self.extra_info = None, {}

    def __call__(self, function):
        return function()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_benchmark_reports_non_finite_results(monkeypatch, bad):
    import model
    from bench import test_benchmarks
    from bench.conftest import RunnerCache

    make_batch = model.make_batch

    def poisoned_batch(batch_size, **kwargs):
        x, target = make_batch(batch_size, **kwargs)
        x[0, 0, 0, 0] = bad
        return x, target

    monkeypatch.setattr(model, "make_batch", poisoned_batch)
    with pytest.raises(AssertionError, match="eager produced non-finite values"):
        test_benchmarks.run_benchmark(FakeBenchmark(), RunnerCache(check_agreement=False),
                                      "train", "eager", 2, "cpu")


def test_timed_training_step_updates_the_parameters_every_round(backend):
    from bench import test_benchmarks
    from bench.conftest import RunnerCache

    cache = RunnerCache(check_agreement=False)
    runner = cache.get(backend, "cpu")[0]
    snapshots = []

    class RoundsBenchmark(FakeBenchmark):
        def __call__(self, function):
            for _ in range(3):
                function()
                snapshots.append({k: v.clone() for k, v in runner.parameters().items()})
            return function()

    test_benchmarks.run_benchmark(RoundsBenchmark(), cache, "train", backend, 4, "cpu")
    for before, after in zip(snapshots, snapshots[1:]):
        assert all(not torch.equal(before[k], after[k]) for k in before)
