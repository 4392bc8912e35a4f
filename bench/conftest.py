"""The pytest suite's options and hooks: what to run (selection options, parsed with bench/cli.py),
how saved runs are marked (interrupted, duration), the report refreshed after a saved run, and the
session fixtures. The run's state lives in bench/session.py, saving runs in bench/runs/store.py."""

import contextlib
import os
import time

import pytest

from bench import backends, cli, files
from bench.measure import machine, timing
from bench.runs.store import protect_saved_runs
from bench.session import BATCH_SIZES, MODES, Measurements, RunnerCache, all_cores


def pytest_addoption(parser):
    group = parser.getgroup("lenet-bench")
    group.addoption("--backends", default=",".join(backends.DEFAULT_CONFIGS),
                    help="comma-separated backends, or 'all' (default: %(default)s); choices: "
                         f"{', '.join(backends.CONFIGS)}")
    group.addoption("--batch-sizes", default=",".join(map(str, BATCH_SIZES)),
                    help="comma-separated positive batch sizes (default: %(default)s)")
    group.addoption("--devices", default=",".join(backends.DEVICES),
                    help=f"comma-separated devices; choices: {', '.join(backends.DEVICES)}")
    group.addoption("--modes", default=",".join(MODES),
                    help=f"comma-separated modes; choices: {', '.join(MODES)}")
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
    group.addoption("--inherit-environ", default="",
                    help="comma-separated environment variables the worker processes get besides the few "
                         "they need (bench/launch/process.py PASSED), e.g. OMP_PROC_BIND")
    group.addoption("--paired-seconds", default=None,
                    help="seconds of paired timing per benchmark, eager's blocks and the backend's "
                         f"together, over all its processes (default: {timing.PAIRED_SECONDS:g})")


PROCESSES = 3  # the fewest a Student t interval over processes is worth having (docs/method.md)
QUICK_PAIRED_SECONDS = 1.0


def option_list(config, option, choices=None):
    """A comma-list option's values (cli.parse_list): names from `choices`, else positive integers."""
    flag = "--" + option.replace("_", "-")
    try:
        if choices is not None:
            return cli.parse_list(config.getoption(option), flag[2:].rstrip("s"), choices)
        return cli.parse_list(config.getoption(option), flag[2:], convert=cli.positive_integer)
    except ValueError as error:
        raise pytest.UsageError(f"{flag}: {error}") from None


@pytest.hookimpl(trylast=True)  # after pytest-benchmark has made its session
def pytest_configure(config):
    if config.getoption("benchmark_timer", timing.REPLAY_TIMER) != timing.REPLAY_TIMER:
        raise pytest.UsageError(f"--benchmark-timer: the suite's rounds are replayed from its worker "
                                f"processes; it must stay {timing.REPLAY_TIMER}")
    if config.getoption("backends").strip() == "all":
        config.option.backends = ",".join(backends.CONFIGS)
    selection = {
        "backend": option_list(config, "backends", backends.CONFIGS),
        "batch_size": option_list(config, "batch_sizes"),
        "device": option_list(config, "devices", backends.DEVICES),
        "mode": option_list(config, "modes", MODES),
    }
    threads = option_list(config, "threads") if config.getoption("threads") else [1, all_cores()]
    selection["threads"] = list(dict.fromkeys(threads))[:1 if config.getoption("quick") else None]
    config.stash[SELECTION] = selection
    SESSION_START[0] = time.perf_counter()
    processes = option_list(config, "processes")
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
MEASUREMENTS = pytest.StashKey[Measurements]()
PAIRED_SECONDS = pytest.StashKey[float]()
PROCESS_COUNT = pytest.StashKey[int]()


def check_writable(storage):
    """Fail before the first benchmark, in one line, when the run could not be saved at the end."""
    folder = storage.get("")
    try:
        files.probe_writable(folder)
    except OSError as error:
        raise pytest.UsageError(f"--benchmark-storage: cannot save runs in {folder} "
                                f"({error.strerror or error}); give a writable folder") from None


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
    measurements = config.stash.get(MEASUREMENTS, None)
    if measurements is not None and measurements.groups is not None:  # where the run's time went
        output_json["lenet_bench"]["workers"] = measurements.worker_log()


def pytest_sessionfinish(session, exitstatus):
    """Runs after pytest-benchmark's own hook has saved the run: refresh the report beside it,
    unless the run was interrupted (REPORT.md stays on the last complete run)."""
    storage = getattr(getattr(session.config, "_benchmarksession", None), "storage", None)
    for path in getattr(storage, "saved", []):
        from bench.reporting import report

        SAVED_RUNS.append((str(path), str(storage.path.parent)))
        if INTERRUPTED_RUNS:
            print(f"\nlenet-bench: the run was interrupted; {path} is kept and marked interrupted, "
                  "and results/REPORT.md still shows the last complete run "
                  f"(`python -m bench.report {os.path.basename(str(path))[:4]}` reports this one)")
            continue
        report.main([str(path), "--storage", str(storage.path), "--out", str(storage.path.parent)])


SAVED_RUNS = []  # (saved run, report folder) of this session, for the closing table


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own tables: the answer is the last thing shown
def pytest_terminal_summary(terminalreporter):
    from bench.reporting.answer import closing_lines
    from bench.runs.load import read_run

    def shown(path):  # as the user can open it from where they ran pytest
        relative = os.path.relpath(path)
        return path if relative.startswith("..") else relative

    for path, folder in SAVED_RUNS:
        try:
            run = read_run(path)
        except ValueError:
            continue
        terminalreporter.section("lenet-bench: the answer")
        for line in closing_lines(run):
            terminalreporter.write_line(line)
        report = "" if INTERRUPTED_RUNS else f"report: {shown(os.path.join(folder, 'REPORT.md'))}; "
        terminalreporter.write_line(f"{report}saved run: {shown(path)}")


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
    machine_info.update(machine.machine_info())


def terminal_progress(config):
    """A function that prints one progress line to the terminal while tests run, past pytest's capture."""
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")

    def progress(text):
        if terminal is None:
            return
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            terminal.write_line(f"lenet-bench: {text}")
    return progress



@pytest.fixture(scope="session")
def runner_cache(request):
    config = request.config
    # Checked with --benchmark-disable too (the README's test command): 20 steps per batch size, a few
    # seconds beside the compilation the runners need anyway.
    return RunnerCache(check_agreement=True, selected=config.stash[SELECTION]["backend"],
                       progress=terminal_progress(config))


@pytest.fixture(scope="session")
def measurements(request):
    config = request.config
    inherit = cli.parse_list(config.getoption("inherit_environ"), "variable") \
        if config.getoption("inherit_environ").strip() else []
    measurements = Measurements(config.stash[SELECTION], config.stash[PROCESS_COUNT],
                                config.stash[PAIRED_SECONDS], progress=terminal_progress(config),
                                inherit=inherit)
    config.stash[MEASUREMENTS] = measurements
    return measurements
