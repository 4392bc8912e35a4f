"""Selection options, shared runners and machine info for the benchmarks in bench/."""

import contextlib
import os
import time

import pytest

import model
from bench import backends, harness, memory, timing


def pytest_addoption(parser):
    group = parser.getgroup("lenet-bench")
    group.addoption("--backends", default=",".join(backends.DEFAULT_CONFIGS),
                    help=f"comma-separated backends; choices: {', '.join(backends.CONFIGS)}")
    group.addoption("--batch-sizes", default=",".join(map(str, harness.BATCH_SIZES)),
                    help="comma-separated positive batch sizes (default: %(default)s)")
    group.addoption("--devices", default=",".join(backends.DEVICES),
                    help=f"comma-separated devices; choices: {', '.join(backends.DEVICES)}")
    group.addoption("--modes", default=",".join(harness.MODES),
                    help=f"comma-separated modes; choices: {', '.join(harness.MODES)}")
    group.addoption("--threads", default=None,
                    help="comma-separated intra-op thread counts; every cell is measured at each, every "
                         "backend alike, ONNX Runtime included (default: 1 and all cores, "
                         f"1,{all_cores()} here)")
    group.addoption("--processes", default=str(PROCESSES),
                    help="worker processes per cell: the first fills the compile caches, each times every "
                         "backend paired with eager, and the interval covers them all (default: %(default)s)")
    group.addoption("--quick", action="store_true",
                    help="a fast look: one process, one thread count (the first of --threads, else 1), "
                         f"{QUICK_PAIRED_SECONDS:g} s of pairing unless --paired-seconds says otherwise")
    group.addoption("--paired-seconds", default=None,
                    help="seconds of paired timing per benchmark, eager's blocks and the backend's "
                         f"together, over all its processes (default: {timing.PAIRED_SECONDS:g})")


PROCESSES = 3  # pyperf's fast mode never uses fewer
QUICK_PAIRED_SECONDS = 1.0


def all_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parse_list(config, option, choices=None, convert=str):
    values = []
    for item in config.getoption(option).split(","):
        try:
            value = convert(item.strip())
            if choices is not None:
                backends.check_choice(option.replace("_", "-").rstrip("s"), value, choices)
            elif value < 1:
                raise ValueError
        except ValueError as error:
            message = str(error) if choices is not None else f"expected positive integers, got {item!r}"
            raise pytest.UsageError(f"--{option.replace('_', '-')}: {message}") from None
        values.append(value)
    return values


@pytest.hookimpl(trylast=True)  # after pytest-benchmark has made its session
def pytest_configure(config):
    selection = {
        "backend": parse_list(config, "backends", backends.CONFIGS),
        "batch_size": parse_list(config, "batch_sizes", convert=int),
        "device": parse_list(config, "devices", backends.DEVICES),
        "mode": parse_list(config, "modes", harness.MODES),
    }
    threads = parse_list(config, "threads", convert=int) if config.getoption("threads") else [1, all_cores()]
    selection["threads"] = list(dict.fromkeys(threads))[:1 if config.getoption("quick") else None]
    config.stash[SELECTION] = selection
    SESSION_START[0] = time.perf_counter()
    processes = parse_list(config, "processes", convert=int)
    if len(processes) != 1:
        raise pytest.UsageError(f"--processes: expected one positive integer, "
                                f"got {config.getoption('processes')!r}")
    config.stash[PROCESS_COUNT] = 1 if config.getoption("quick") else processes[0]
    try:
        default = QUICK_PAIRED_SECONDS if config.getoption("quick") else timing.PAIRED_SECONDS
        config.stash[PAIRED_SECONDS] = float(config.getoption("paired_seconds") or default)
        if not config.stash[PAIRED_SECONDS] > 0:
            raise ValueError
    except ValueError:
        raise pytest.UsageError(f"--paired-seconds: expected a positive number of seconds, "
                                f"got {config.getoption('paired_seconds')!r}") from None
    session = getattr(config, "_benchmarksession", None)
    if session is not None and not session.disabled:
        if not (session.save or session.autosave):  # every timed run is kept in results/
            from pytest_benchmark.utils import get_tag

            session.autosave = get_tag()
        check_writable(session.storage)
        protect_saved_runs(session.storage)


SELECTION = pytest.StashKey[dict]()
PAIRED_SECONDS = pytest.StashKey[float]()
PROCESS_COUNT = pytest.StashKey[int]()


def check_writable(storage):
    """Fail before the first benchmark, in one line, when the run could not be saved at the end."""
    folder = storage.get("")
    try:
        harness.probe_writable(folder)
    except OSError as error:
        raise pytest.UsageError(f"--benchmark-storage: cannot save runs in {folder} "
                                f"({error.strerror or error}); give a writable folder") from None


def protect_saved_runs(storage):
    """pytest-benchmark numbers a saved run after the newest one on disk and then opens it for
    writing; two runs ending together would pick the same name, and a kill mid-write would
    leave half a file. Write a temporary file, then hard-link it to its final name, which
    fails rather than replace an existing run: on a clash take the next number. A saved run
    is whole or absent, and never overwritten."""
    import tempfile

    from pytest_benchmark.utils import safe_dumps

    def save(output_json, name):
        data = safe_dumps(output_json, ensure_ascii=True, indent=4).encode()
        folder = storage.get("")
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".saving-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, harness.file_mode())  # mkstemp makes 0600; a saved run is an ordinary file
            number = int(storage._next_num)
            while True:
                path = storage.get(f"{number:04d}_{name}_{os.getpid()}.json")
                try:
                    os.link(tmp, path)
                    break
                except FileExistsError:
                    number += 1
        finally:
            os.unlink(tmp)
        storage.logger.info(f"Saved benchmark data in: {path}")
        storage.saved.append(path)

    storage.save = save
    storage.saved = []


def pytest_keyboard_interrupt(excinfo):
    """Ctrl-C: the finished benchmarks are still saved, marked as an interrupted run."""
    INTERRUPTED_RUNS.append(True)


INTERRUPTED_RUNS = []  # pytest_keyboard_interrupt has no config; one pytest session per process
SESSION_START = [time.perf_counter()]  # reset when the session starts (pytest_configure)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Every saved run says whether it ran to the end: an interrupted one is kept, but the report
    and compare leave it out unless it is named."""
    misses = sum((bench.extra_info.get("first_call_cache") or {}).get("misses", 0) for bench in benchmarks)
    output_json["lenet_bench"] = {"interrupted": bool(INTERRUPTED_RUNS), "benchmarks_saved": len(benchmarks),
                                  "session_seconds": round(time.perf_counter() - SESSION_START[0], 1),
                                  "compile_cache_misses": misses}


def pytest_sessionfinish(session, exitstatus):
    """Runs after pytest-benchmark's own hook has saved the run: refresh the report beside it,
    unless the run was interrupted (REPORT.md stays on the last complete run)."""
    storage = getattr(getattr(session.config, "_benchmarksession", None), "storage", None)
    for path in getattr(storage, "saved", []):
        from bench import report

        if INTERRUPTED_RUNS:
            print(f"\nlenet-bench: the run was interrupted; {path} is kept and marked interrupted, "
                  "and results/REPORT.md still shows the last complete run "
                  f"(`python -m bench.report {os.path.basename(str(path))[:4]}` reports this one)")
            continue
        report.main([str(path), "--storage", str(storage.path), "--out", str(storage.path.parent)])


def pytest_generate_tests(metafunc):
    selection = metafunc.config.stash[SELECTION]
    for name in ["threads", "device", "batch_size", "backend"]:  # groups one batch size's backends together
        if name in metafunc.fixturenames:
            ids = [f"{n}thread" + "s" * (n > 1) for n in selection[name]] if name == "threads" else None
            metafunc.parametrize(name, selection[name], ids=ids)


def pytest_collection_modifyitems(config, items):
    modes = config.stash[SELECTION]["mode"]
    items[:] = [item for item in items if getattr(item.function, "mode", None) in (None, *modes)]


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info.update(harness.machine_info())


class Cell:
    """One backend's runner for one device and batch size, and what is known about it before timing."""

    def __init__(self, runner, setup_seconds, held_bytes):
        self.runner, self.setup_seconds = runner, setup_seconds
        self.first_call_seconds = {}  # "train"/"forward" -> seconds of the runner's first such call
        self.first_call_cache = {}  # "train"/"forward" -> {"hits": n, "misses": n} of compile caches
        self.held_bytes = held_bytes  # resident-set growth over creation and each first call (bench.memory)
        self.agreement = {"agreement": "not checked"}
        self.label, self.say = "", lambda text: None  # for progress lines


def _compile_cache_counts(runner):
    """Inductor's FX graph cache and AOTInductor's library cache, hits and misses so far."""
    import torch

    inductor = torch._dynamo.utils.counters["inductor"]
    info = getattr(runner, "info", {})
    return (inductor["fxgraph_cache_hit"] + info.get("library_hit", 0),
            inductor["fxgraph_cache_miss"] + info.get("library_miss", 0))


class FirstCalls:
    """Wraps a runner to time its first train_step and first forward, and the compile-cache hits and
    misses during them: whoever calls first (the agreement check, or the warm-up before timing)."""

    def __init__(self, cell):
        self._cell = cell
        runner = cell.runner
        self.parameters, self.gradients = runner.parameters, runner.gradients
        self.train_step = self._first("train", runner.train_step)
        self.forward = self._first("forward", runner.forward)

    def _first(self, mode, method):
        def call(*args):
            cell = self._cell
            if mode in cell.first_call_seconds:
                return method(*args)
            hits, misses = _compile_cache_counts(cell.runner)
            resident = memory.resident_bytes()
            start = time.perf_counter()
            result = method(*args)
            cell.first_call_seconds[mode] = time.perf_counter() - start
            cell.held_bytes = _add_growth(cell.held_bytes, resident)
            new_hits, new_misses = _compile_cache_counts(cell.runner)
            cell.first_call_cache[mode] = {"hits": new_hits - hits, "misses": new_misses - misses}
            cached = (f", compile cache: {new_misses - misses} built, {new_hits - hits} loaded"
                      if new_hits - hits or new_misses - misses else "")
            cell.say(f"{cell.label}: first {mode} call {cell.first_call_seconds[mode]:.1f} s{cached}")
            return result
        return call


def _add_growth(total, before):
    """total + (resident set now - before), None when either cannot be read."""
    after = memory.resident_bytes()
    return None if None in (total, before, after) else total + after - before


class RunnerCache:
    """One runner per backend, device and batch size, made the first time a benchmark of that
    device and batch size runs. Its creation, first calls (compilation) and its agreement check
    happen then, outside every timed region. The agreement check trains the very runners that are
    timed, at the batch size they are timed at, beside the float64 reference: its verdict travels
    with their timings, and a FAIL fails their benchmarks (bench/test_benchmarks.py)."""

    def __init__(self, check_agreement, selected=None, say=print):
        self.check_agreement = check_agreement
        self.selected = selected or list(backends.DEFAULT_CONFIGS)
        self.say = say
        self.cells = {}  # (backend, device, batch_size) -> Cell
        self.pools = {}  # (device, batch_size) -> the batches every runner cycles through

    def pool(self, device, batch_size):
        key = (device, batch_size)
        if key not in self.pools:
            self.pools[key] = model.make_batch_pool(batch_size, device=device)
        return self.pools[key]

    def get(self, backend, device, batch_size):
        """The Cell of `backend` (skipped with its reason where it cannot run)."""
        reason = backends.unavailable(backend, device)
        if reason:
            pytest.skip(f"{backend} on {device}: {reason}")
        if (backend, device, batch_size) not in self.cells:
            self._prepare(device, batch_size, [backend])
        return self.cells[(backend, device, batch_size)]

    def _create(self, backend, device, batch_size):
        resident = memory.resident_bytes()
        start = time.perf_counter()
        runner = backends.create(backend, model.make_net(seed=AGREEMENT_SEED).state_dict(), device=device)
        cell = Cell(runner, time.perf_counter() - start, _add_growth(0, resident))
        cell.label, cell.say = f"{device} batch {batch_size}: {backend}", self.say
        self.cells[(backend, device, batch_size)] = cell
        self.say(f"{device} batch {batch_size}: {backend} created in {cell.setup_seconds:.1f} s")
        return cell

    def _prepare(self, device, batch_size, wanted):
        """Create the runners of every selected backend (or just `wanted`) at this device and batch
        size and, when timing, check them all in one lockstep run against float64."""
        names = [name for name in dict.fromkeys([*self.selected, *wanted])
                 if not backends.unavailable(name, device) and (name, device, batch_size) not in self.cells]
        if not self.check_agreement:
            names = [name for name in names if name in wanted]
        cells = {name: self._create(name, device, batch_size) for name in names}
        if not self.check_agreement or not cells:
            return
        from bench import agreement

        self.say(f"{device} batch {batch_size}: checking {', '.join(cells)} against float64 eager "
                 f"for {agreement.DEFAULT_STEPS} steps (the first steps compile)")
        start = time.perf_counter()
        extra = {name: (lambda state, dev, dtype, c=cell: FirstCalls(c)) for name, cell in cells.items()}
        for result in agreement.check([], device=device, steps=agreement.DEFAULT_STEPS, batch_size=batch_size,
                                      seed=AGREEMENT_SEED, extra=extra):
            cell = cells[result.backend]
            cell.agreement = {"agreement": agreement.status(result),
                              "agreement_max_abs_error": result.max_abs_error,
                              "agreement_worst_rmse_ratio": result.worst_rmse_ratio,
                              "agreement_worst_max_ratio": result.worst_max_ratio,
                              "agreement_steps": agreement.DEFAULT_STEPS,
                              "agreement_batch_size": batch_size}
        verdicts = ", ".join(f"{name} {cell.agreement['agreement']}" for name, cell in cells.items())
        self.say(f"{device} batch {batch_size}: agreement checked in {time.perf_counter() - start:.1f} s: "
                 f"{verdicts}")


# The agreement check starts every runner from make_net(AGREEMENT_SEED), as its reference does.
AGREEMENT_SEED = 0


def progress(config):
    """A function that prints one line to the terminal while tests run, past pytest's capture."""
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")

    def say(text):
        if terminal is None:
            return
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            terminal.write_line(f"lenet-bench: {text}")
    return say


@pytest.fixture(scope="session")
def runner_cache(request):
    config = request.config
    # Checked with --benchmark-disable too (the README's test command): 20 steps per batch size, a few
    # seconds beside the compilation the runners need anyway.
    return RunnerCache(check_agreement=True, selected=config.stash[SELECTION]["backend"],
                       say=progress(config))


class Measurements:
    """The timed run's manager: for each (threads, device, batch size) group, the first time one of
    its benchmarks asks, it starts the worker processes (bench/worker.py through bench/launch.py)
    one after another, each holding eager and every selected backend, and keeps what they return.
    A worker that fails fails that group's benchmarks with its one-line message."""

    def __init__(self, selection, processes, paired_seconds, say=print):
        self.selection, self.processes, self.say = selection, processes, say
        self.seconds = paired_seconds / processes  # --paired-seconds is per benchmark, all processes together
        self.groups = {}  # key -> list of the workers' data, or the WorkerFailed that stopped them

    def _collect(self, key, arguments, threads, label):
        from bench import launch

        if key not in self.groups:
            results = []
            try:
                for i in range(self.processes):
                    start = time.perf_counter()
                    results.append(launch.run("bench.worker", arguments, threads=threads))
                    seconds = time.perf_counter() - start
                    self.say(f"{label}: worker {i + 1}/{self.processes} done in {seconds:.1f} s")
                self.groups[key] = results
            except launch.WorkerFailed as error:
                self.groups[key] = error
        if isinstance(self.groups[key], Exception):
            pytest.fail(str(self.groups[key]), pytrace=False)
        return self.groups[key]

    def group(self, threads, device, batch_size):
        """Every worker's data for this group: [{"cells": {backend: {...}}}, ...]."""
        names = [name for name in self.selection["backend"] if not backends.unavailable(name, device)]
        arguments = ["--threads", threads, "--device", device, "--batch-size", batch_size,
                     "--backends", ",".join(names), "--modes", ",".join(self.selection["mode"]),
                     "--seconds", self.seconds]
        return self._collect((threads, device, batch_size), arguments, threads,
                             f"{threads} thread(s), {device} batch {batch_size}")

    def sgemm(self, threads, device, size):
        arguments = ["--threads", threads, "--device", device, "--sgemm", size, "--seconds", self.seconds]
        return self._collect((threads, device, "sgemm", size), arguments, threads,
                             f"{threads} thread(s), {device} sgemm {size}")


@pytest.fixture(scope="session")
def measurements(request):
    config = request.config
    return Measurements(config.stash[SELECTION], config.stash[PROCESS_COUNT], config.stash[PAIRED_SECONDS],
                        say=progress(config))
