"""Worker processes: the launcher (results as data, a timeout, a one-line failure), the worker's A/A
against an independent eager runner, the session's manager of workers, and the thread axis."""

import os
import subprocess
import sys
import time

import pytest

from bench.launch import process
from bench.measure import timing

FAKE_WORKER = '''
import json, os, sys, time
what, result = sys.argv[1], sys.argv[sys.argv.index("--result") + 1]
if what == "ok":
    with open(result, "w") as f:
        json.dump({"blocks": [1.5, 2.5], "threads": os.environ.get("OMP_NUM_THREADS")}, f)
elif what == "fail":
    print("some progress line", file=sys.stderr)
    print("fake_worker: error: ValueError: the batch pool is empty", file=sys.stderr)
    sys.exit(3)
elif what == "hang":
    time.sleep(60)
'''


@pytest.fixture
def fake_worker(tmp_path, monkeypatch):
    (tmp_path / "fake_worker.py").write_text(FAKE_WORKER)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return "fake_worker"


def test_the_launcher_returns_the_workers_results_as_data(fake_worker):
    data = process.run(fake_worker, ["ok"], threads=3)
    assert data == {"blocks": [1.5, 2.5], "threads": "3"}  # OMP_NUM_THREADS set before the worker starts


def test_a_failing_worker_is_one_line_naming_it_and_its_error(fake_worker):
    with pytest.raises(process.ChildFailed) as failed:
        process.run(fake_worker, ["fail"])
    message = str(failed.value)
    assert "\n" not in message and "exit status 3" in message and "fake_worker fail" in message
    assert message.endswith("fake_worker: error: ValueError: the batch pool is empty")
    with pytest.raises(process.ChildFailed, match="exited 0 but left no readable result"):
        process.run(fake_worker, ["silent"])


def test_a_worker_past_its_timeout_is_killed(fake_worker):
    start = time.perf_counter()
    with pytest.raises(process.ChildFailed, match="gave no result within 1 s and was killed"):
        process.run(fake_worker, ["hang"], timeout=1)
    assert time.perf_counter() - start < 30


def test_a_failed_group_fails_each_of_its_benchmarks_with_the_one_line(monkeypatch):
    from bench.session import Measurements

    calls = []

    def run(module, arguments, threads=None, **options):
        calls.append(arguments)
        raise process.ChildFailed("child `bench.launch.worker` failed (exit status 1): "
                                   "bench.launch.worker: error: boom")

    monkeypatch.setattr(process, "run", run)
    selection = {"backend": ["eager"], "mode": ["train"], "threads": [1], "device": ["cpu"],
                 "batch_size": [4]}
    measurements = Measurements(selection, processes=3, paired_seconds=1.5, progress=lambda text: None,
                                sgemm_size=None)
    for _ in range(2):  # the second benchmark of the group does not start the workers again
        with pytest.raises(process.ChildFailed, match="bench.launch.worker: error: boom"):
            measurements.group(1, "cpu", 4)
    assert len(calls) == 1 and calls[0][calls[0].index("--seconds") + 1] == pytest.approx(0.5)


def test_a_groups_workers_are_spread_over_the_run_one_per_group_each_round(monkeypatch):
    from bench.session import Measurements

    calls = []

    def run(module, arguments, threads=None, **options):
        what = "--batch-size" if "--batch-size" in arguments else "--sgemm"
        calls.append((threads, what, arguments[arguments.index(what) + 1]))
        return {"threads": threads, "device": "cpu", "batch_size": 1, "cells": {}, "schema": 2}

    monkeypatch.setattr(process, "run", run)
    selection = {"backend": ["eager"], "mode": ["train"], "threads": [1, 2], "device": ["cpu"],
                 "batch_size": [1, 64]}
    lines = []
    measurements = Measurements(selection, processes=3, paired_seconds=1.5, progress=lines.append)
    assert len(measurements.group(2, "cpu", 64)) == 3
    groups = 2 * (2 + 1)  # two thread counts, two batch sizes and an sgemm each
    assert len(calls) == 3 * groups
    for round_calls in (calls[i * groups:(i + 1) * groups] for i in range(3)):
        assert sorted(round_calls) == sorted(calls[:groups])  # every group once per round
    total = 3 * groups
    assert lines[-1].startswith(f"run: {total}/{total} workers done") and "about 0 s left" in lines[-1]
    rounds = [entry["round"] for entry in measurements.worker_log()]
    assert rounds == [r for r in range(3) for _ in range(groups)]


def test_a_worker_times_every_backend_and_returns_data():
    data = process.run("bench.launch.worker", ["--threads", 1, "--batch-size", 2, "--backends", "eager",
                                       "--modes", "train", "--seconds", 0.2], threads=1)
    assert data["threads"] == 1 and data["batch_size"] == 2
    eager = data["cells"]["eager"]
    assert eager["agreement"]["agreement"] == "pass" and eager["first_call_seconds"]["train"] > 0
    blocks = eager["modes"]["train"]
    assert blocks["finite"] and blocks["block_calls"] >= timing.MIN_BLOCK_CALLS
    assert len(blocks["call_times"]) == blocks["block_calls"] * len(blocks["call_blocks"])
    assert len(blocks["baseline_blocks"]) == len(blocks["call_blocks"]) >= timing.MIN_PAIRS


def test_the_a_a_pairs_eager_with_an_independent_runner_and_can_fail(monkeypatch):
    """Eager's row pairs it with a second eager runner: its own weights, its own place in the batch
    pool. Made 5 ms slower per step (several times the step itself, so a loaded machine cannot hide
    it), that second runner moves the A/A off 1, beyond its interval."""
    import model
    from bench import backends
    from bench.launch import worker

    made = []

    def slowed_second_eager(device):
        runner = real(device)
        step, runner.seen = runner.train_step, []

        def slow_step(x, target):
            runner.seen.append(x)
            time.sleep(5e-3)
            return step(x, target)
        runner.train_step = slow_step
        made.append(runner)
        return runner

    real, create, others = worker.second_eager, backends.create, []
    monkeypatch.setattr(worker, "second_eager", slowed_second_eager)
    monkeypatch.setattr(backends, "create", lambda *args, **kwargs: others.append(create(*args, **kwargs))
                        or others[-1])
    cells = worker.measure_cells(["eager"], ["train"], "cpu", 1, 0.6, progress=lambda text: None)
    twin = made[0]
    shared = {p.data_ptr() for runner in others if runner is not twin for p in runner.parameters().values()}
    assert not shared & {p.data_ptr() for p in twin.parameters().values()}  # its own weights
    pool = model.make_batch_pool(1)
    assert twin.seen[0].equal(pool[int(len(pool) * worker.TWIN_OFFSET)][0])
    info = timing.summarize([cells["eager"].modes["train"].blocks()])
    assert info["speedup_low"] > 1.0  # the slowed twin makes eager read faster than itself: the A/A fails


def collect(*options):
    selection = ["--backends", "eager", "--batch-sizes", "1", "--devices", "cpu", "--modes", "train"]
    done = subprocess.run([sys.executable, "-m", "pytest", "bench/test_benchmarks.py", "--collect-only",
                           "-q", *selection, *options], capture_output=True, text=True, cwd=process.REPO,
                          env={**os.environ, "PYTHONPATH": process.REPO})
    assert done.returncode == 0, done.stdout + done.stderr
    return [line.split("::")[1] for line in done.stdout.splitlines() if "::" in line]


def test_threads_are_an_axis_of_every_cell():
    from bench.session import all_cores

    assert collect("--threads", "2,1,2") == ["test_train_step[2threads-cpu-1-eager]",
                                             "test_train_step[1thread-cpu-1-eager]",
                                             "test_sgemm[2threads-cpu-1024]", "test_sgemm[1thread-cpu-1024]"]
    default = collect()
    counts = [1] + ([all_cores()] if all_cores() > 1 else [])
    assert [name for name in default if name.startswith("test_train")] == [
        f"test_train_step[{n}thread{'s' * (n > 1)}-cpu-1-eager]" for n in counts]
    assert collect("--quick") == ["test_train_step[1thread-cpu-1-eager]", "test_sgemm[1thread-cpu-1024]"]
