"""Selection options, shared runners and machine info for the benchmarks in bench/."""

import os
import time

import pytest

from bench import backends, harness


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
    config.stash[SELECTION] = selection
    session = getattr(config, "_benchmarksession", None)
    if session is not None and not session.disabled:
        if not (session.save or session.autosave):  # every timed run is kept in results/
            from pytest_benchmark.utils import get_tag

            session.autosave = get_tag()
        check_writable(session.storage)
        protect_saved_runs(session.storage)


SELECTION = pytest.StashKey[dict]()


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


def pytest_sessionfinish(session):
    """Runs after pytest-benchmark's own hook has saved the run: refresh the report beside it."""
    storage = getattr(getattr(session.config, "_benchmarksession", None), "storage", None)
    for path in getattr(storage, "saved", []):
        from bench import report

        report.main([str(path), "--storage", str(storage.path), "--out", str(storage.path.parent)])


def pytest_generate_tests(metafunc):
    selection = metafunc.config.stash[SELECTION]
    for name in ["device", "batch_size", "backend"]:  # this order groups one batch size's backends together
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, selection[name])


def pytest_collection_modifyitems(config, items):
    modes = config.stash[SELECTION]["mode"]
    items[:] = [item for item in items if getattr(item.function, "mode", None) in (None, *modes)]


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info.update(harness.machine_info())


class RunnerCache:
    """One runner per (backend, device) for the whole session: export, scripting and session
    creation happen once, outside every timed region, and their time is recorded. When timing
    is on, each backend's agreement with float64 is checked once, so its status travels with
    its timings."""

    def __init__(self, check_agreement, selected=None):
        self.runners = {}
        self.check_agreement = check_agreement
        self.selected = selected or list(backends.DEFAULT_CONFIGS)
        self.verdicts = {}  # device -> {backend: extra_info entries}

    def get(self, backend, device):
        key = (backend, device)
        if key not in self.runners:
            reason = backends.unavailable(backend, device)
            if reason:
                pytest.skip(f"{backend} on {device}: {reason}")
            import model

            start = time.perf_counter()
            runner = backends.create(backend, model.make_net(seed=0).state_dict(), device=device)
            setup_seconds = time.perf_counter() - start
            self.runners[key] = (runner, setup_seconds, self.agreement(backend, device))
        return self.runners[key]

    def agreement(self, backend, device):
        """Every selected backend is checked on a device in one lockstep run, the first time a
        benchmark on that device needs a verdict."""
        if not self.check_agreement:
            return {"agreement": "not checked"}
        if device not in self.verdicts:
            from bench import agreement

            names = list(dict.fromkeys([*self.selected, backend]))
            self.verdicts[device] = {
                result.backend: {"agreement": agreement.status(result),
                                 "agreement_max_abs_error": result.max_abs_error}
                for result in agreement.check(names, device=device)}
        return self.verdicts[device][backend]


@pytest.fixture(scope="session")
def runner_cache(request):
    return RunnerCache(check_agreement=not request.config._benchmarksession.disabled,
                       selected=request.config.stash[SELECTION]["backend"])
