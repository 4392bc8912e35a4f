"""Benchmark runs: selection errors are one line, saved runs are never overwritten or lost."""

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from bench import backends
from bench.files import file_mode

REPO = Path(__file__).resolve().parents[1]
# one cell, one thread count, one worker: these tests are about the run's files, not its timing
QUICK = ["--backends", "eager", "--batch-sizes", "1", "--devices", "cpu", "--modes", "forward",
         "--threads", "1", "--processes", "1", "-k", "not sgemm", "--paired-seconds=0.2"]


def bench_command(storage, *extra):
    return [sys.executable, "-m", "pytest", "bench", "-q", "-p", "no:cacheprovider", "--benchmark-only",
            f"--benchmark-storage={storage}/benchmarks", *extra]


def saved_runs(storage):
    return sorted(Path(storage).rglob("*.json"))


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--backends", "nope", f"--backends: unknown backend 'nope'; choose from: {', '.join(backends.CONFIGS)}"),
    ("--devices", "tpu", "--devices: unknown device 'tpu'; choose from: cpu, cuda"),
    ("--modes", "infer", "--modes: unknown mode 'infer'; choose from: train, forward"),
    ("--batch-sizes", "0", "--batch-sizes: expected a positive integer, got '0'"),
])
def test_unknown_selection_is_one_line_listing_the_choices(tmp_path, option, value, message):
    done = subprocess.run(bench_command(tmp_path, option, value), cwd=REPO, capture_output=True, text=True)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"ERROR: {message}"), done.stderr


@pytest.mark.parametrize(("text", "options", "expected"), [
    ("1, 64,256", {"convert": "positive"}, [1, 64, 256]),
    ("eager,,cpu ", {"choices": ["eager", "cpu"]}, ["eager", "cpu"]),  # blank items are skipped
    ("1,0", {"convert": "positive"}, "expected a positive integer, got '0'"),
    ("1,x", {"convert": "positive"}, "expected a positive integer, got 'x'"),
    ("eager,nope", {"choices": ["eager"]}, "unknown backend 'nope'; choose from: eager"),
    (" , ", {"choices": ["eager"]}, "empty; choose from: eager"),
    ("", {"convert": "positive"}, "empty list"),
])
def test_one_comma_list_parser_converts_checks_and_names_what_is_wrong(text, options, expected):
    from bench import cli

    if options.get("convert"):
        options = {"convert": cli.positive_integer}
    if isinstance(expected, list):
        assert cli.parse_list(text, "backend", **options) == expected
    else:
        with pytest.raises(ValueError) as error:
            cli.parse_list(text, "backend", **options)
        assert str(error.value) == expected


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
        assert f.stat().st_mode & 0o777 == file_mode()  # not mkstemp's 0600
    assert "Forward pass, cpu" in (tmp_path / "REPORT.md").read_text()  # refreshed after the run


def test_an_interrupted_run_is_kept_marked_and_left_out_of_the_report(tmp_path):
    assert subprocess.run(bench_command(tmp_path, *QUICK), cwd=REPO, capture_output=True).returncode == 0
    [earlier] = saved_runs(tmp_path)
    before, report_before = earlier.read_bytes(), (tmp_path / "REPORT.md").read_text()
    assert "interrupted" not in report_before and not json.loads(before)["lenet_bench"]["interrupted"]
    # hold_plugin keeps the run waiting before its second benchmark: the interrupt reaches a run
    # that is still going, with one benchmark done, however fast the machine.
    from hold_plugin import HOLDING

    path = os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    # Ctrl-C's default action in the run, even where this process was started with SIGINT ignored (as
    # a shell does for a command it starts in the background): Python keeps an inherited SIG_IGN.
    run = subprocess.Popen(bench_command(tmp_path, *QUICK, "--modes", "train,forward", "-p", "hold_plugin"),
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    for line in run.stdout:
        lines.append(line)
        if HOLDING in line:
            break
    else:
        pytest.fail(f"the run ended before it was held: {''.join(lines)}")
    output = "".join(lines) + interrupt(run)
    assert earlier.read_bytes() == before
    partial = [f for f in saved_runs(tmp_path) if f != earlier]
    assert len(partial) == 1, output
    data = json.loads(partial[0].read_text())
    assert data["lenet_bench"]["interrupted"] and data["benchmarks"]
    assert "was interrupted" in output
    assert (tmp_path / "REPORT.md").read_text() == report_before  # still the last complete run
    from bench.reporting import compare, report
    from bench.runs import load

    assert load.require_runs(str(tmp_path / "benchmarks"))[-1]["path"] == str(earlier)
    named = load.find_run(partial[0].name[:4], str(tmp_path / "benchmarks"))
    assert named["interrupted"]
    out = tmp_path / "partial"
    assert report.main([str(partial[0]), "--out", str(out)]) == 0
    assert "This run was interrupted" in (out / "REPORT.md").read_text()
    # one complete run: nothing to compare it with
    assert compare.main(["--storage", str(tmp_path / "benchmarks")]) == 2


def interrupt(run, patience=60):
    """Ctrl-C, as a person would: again if the first one was lost (Python drops a KeyboardInterrupt
    that lands inside a destructor, and the run then goes on), but only after `patience` seconds: an
    interrupted run still saves what finished, which on a loaded machine takes a while, and a second
    Ctrl-C in the middle of it would stop the saving. Returns the run's output."""
    output = []
    reader = threading.Thread(target=lambda: output.extend(run.stdout))
    reader.start()
    for _ in range(3):
        run.send_signal(signal.SIGINT)
        try:
            run.wait(timeout=patience)
            break
        except subprocess.TimeoutExpired:
            continue
    else:
        run.kill()
        output.append(f"\n[the run did not end after 3 interrupts {patience} s apart; killed]")
    reader.join(timeout=60)
    return "".join(output)


def test_saving_never_overwrites_a_run_with_the_same_name(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from pytest_benchmark.storage.file import FileStorage

    from bench.runs.store import protect_saved_runs

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


def test_pytest_benchmark_storage_still_has_what_the_suite_replaces():
    """bench/runs/store.py replaces FileStorage.save(output_json, save) and reads _next_num (no
    public way exists): a pytest-benchmark release that renames either fails here."""
    import inspect

    from pytest_benchmark.storage.file import FileStorage

    assert list(inspect.signature(FileStorage.save).parameters) == ["self", "output_json", "save"]
    assert isinstance(FileStorage._next_num, property)


class FakeBenchmark:
    """Stands in for pytest-benchmark's fixture under --benchmark-disable: calls the timed callable once."""

    def __init__(self):
        self.group, self.extra_info, self.disabled = None, {}, True

    def __call__(self, function):
        return function()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_benchmark_reports_non_finite_results(monkeypatch, bad):
    import model
    from bench import test_benchmarks
    from bench.session import RunnerCache

    make_batch = model.make_batch

    def poisoned_batch(batch_size, **kwargs):
        x, target = make_batch(batch_size, **kwargs)
        x[0, 0, 0, 0] = bad
        return x, target

    monkeypatch.setattr(model, "make_batch", poisoned_batch)
    with pytest.raises(AssertionError, match="eager produced non-finite values"):
        test_benchmarks.run_benchmark(FakeBenchmark(), RunnerCache(check_agreement=False),
                                      "train", "eager", 2, "cpu")


def test_benchmark_of_a_disagreeing_runner_fails_after_its_timings(monkeypatch):
    """The session checks the very runner it times; a FAIL fails the benchmark once its timings are taken."""
    import model
    from bench import test_benchmarks
    from bench.backends import eager
    from bench.session import RunnerCache

    class LearningRateOff(eager.Runner):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.optimizer.param_groups[0]["lr"] = model.LEARNING_RATE * 1.01

    real = backends.create  # "torchscript" made wrong; the float64 reference and the yardsticks not
    monkeypatch.setattr(backends, "create", lambda name, *args, **kwargs: (
        LearningRateOff(*args, **kwargs) if name == "torchscript" else real(name, *args, **kwargs)))

    class CountingBenchmark(FakeBenchmark):
        calls = 0

        def __call__(self, function):
            self.calls += 1
            return function()

    benchmark = CountingBenchmark()
    cache = RunnerCache(check_agreement=True, selected=["torchscript"], progress=lambda text: None)
    failed = "torchscript on cpu at batch 2: agreement with float64 FAIL"
    with pytest.raises(pytest.fail.Exception, match=failed):
        test_benchmarks.run_benchmark(benchmark, cache, "train", "torchscript", 2, "cpu")
    assert benchmark.calls == 1 and benchmark.extra_info["agreement"] == "FAIL"  # timed, then marked


def test_timed_training_step_updates_the_parameters_every_round(backend):
    from bench import test_benchmarks
    from bench.measure import timing
    from bench.session import RunnerCache

    cache = RunnerCache(check_agreement=False)
    runner = cache.get(backend, "cpu", 4).runner
    snapshots, batches = [], []
    train_step = runner.train_step

    def spy(x, target):
        batches.append(x)
        return train_step(x, target)

    runner.train_step = spy

    class RoundsBenchmark(FakeBenchmark):
        def __call__(self, function):
            for _ in range(3):
                function()
                snapshots.append({k: v.clone() for k, v in runner.parameters().items()})
            return function()

    test_benchmarks.run_benchmark(RoundsBenchmark(), cache, "train", backend, 4, "cpu")
    for before, after in zip(snapshots, snapshots[1:]):
        assert all(not torch.equal(before[k], after[k]) for k in before)
    timed = batches[timing.WARMUP_CALLS:]
    assert len({x.data_ptr() for x in timed}) == len(timed)  # a new batch every round


def test_batch_1_training_keeps_changing_the_parameters_over_many_rounds():
    """On one fixed sample the Net fits it in a few hundred batch-1 steps and then barely moves;
    on the pool a round still changes a good share of them after thousands of rounds (at batch 1
    a ReLU unit that one sample leaves inactive gets no gradient, so never all of them)."""

    import model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of tiny steps: two threads only wait on each other
    try:
        changed_on_pool, changed_on_one = fraction_changed(model.make_batch_pool(1))
    finally:
        torch.set_num_threads(threads)
    assert changed_on_pool > 0.05
    assert changed_on_one < 0.01  # the fault this guards against is real


def fraction_changed(pool):
    import itertools

    import model

    runner = backends.create("eager", model.make_net().state_dict())
    assert len(pool) == model.POOL_SAMPLES
    batches = itertools.cycle(pool)
    for _ in range(3000):
        runner.train_step(*next(batches))
    before = torch.cat([p.flatten().clone() for p in runner.parameters().values()])
    runner.train_step(*next(batches))
    after = torch.cat([p.flatten() for p in runner.parameters().values()])
    on_pool = (before != after).float().mean().item()

    fixed = backends.create("eager", model.make_net().state_dict())  # the old way: one batch
    x, target = pool[0]
    for _ in range(1000):
        fixed.train_step(x, target)
    before = torch.cat([p.flatten().clone() for p in fixed.parameters().values()])
    fixed.train_step(x, target)
    after = torch.cat([p.flatten() for p in fixed.parameters().values()])
    return on_pool, (before != after).float().mean().item()


@pytest.mark.parametrize("recompiles", [False, True])
def test_a_recompile_inside_the_timed_rounds_fails_the_benchmark(recompiles):
    """A runner whose compiled step recompiles after its warm-up (here: a guard on a Python int that
    changes every call) must fail rather than have its compilations timed; one that does not, passes."""
    from bench import test_benchmarks
    from bench.measure import timing
    from bench.session import RunnerCache

    cache = RunnerCache(check_agreement=False)
    runner = cache.get("eager", "cpu", 2).runner
    calls = []

    @torch.compile(backend="eager", dynamic=False)  # no Inductor: the guard is what matters here
    def scaled_sum(x, scale):
        return x.sum() * scale

    def train_step(x, target):
        calls.append(x)
        return scaled_sum(x, len(calls) if recompiles else 1)

    runner.train_step = train_step

    class RoundsBenchmark(FakeBenchmark):
        def __call__(self, function):
            return [function() for _ in range(3)][-1]

    if recompiles:
        with pytest.raises(RuntimeError, match="fail_on_recompile"):
            test_benchmarks.run_benchmark(RoundsBenchmark(), cache, "train", "eager", 2, "cpu")
        assert len(calls) == timing.WARMUP_CALLS + 1  # warm-up compiled freely; round 1 failed
    else:
        test_benchmarks.run_benchmark(RoundsBenchmark(), cache, "train", "eager", 2, "cpu")
        assert len(calls) == timing.WARMUP_CALLS + 3


def test_the_store_numbers_each_save_and_writes_it_whole(tmp_path):
    """pytest-benchmark's save and bench.ddp's save_run both go through save_numbered."""
    from bench.runs.store import save_numbered

    folder = tmp_path / "runs"
    text = json.dumps({"benchmarks": [{"name": "x" * 100_000}]})
    first = save_numbered(str(folder), "same", text)
    second = save_numbered(str(folder), "same", text)
    assert [os.path.basename(p) for p in (first, second)] == ["0001_same.json", "0002_same.json"]
    for path in (first, second):
        assert Path(path).read_text() == text  # the whole document
        assert os.stat(path).st_mode & 0o777 == file_mode()
    # a first number already taken moves on to the next free one, never onto an existing run
    third = save_numbered(str(folder), "same", "{}", first_number=1)
    assert os.path.basename(third) == "0003_same.json" and Path(first).read_text() == text
    assert sorted(os.listdir(folder)) == ["0001_same.json", "0002_same.json", "0003_same.json"]
