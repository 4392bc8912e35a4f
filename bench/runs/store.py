"""Saved runs: numbered files that are whole or absent, and never overwritten."""

import os
import tempfile

from bench import files


def next_number(folder):
    """One past the highest NNNN_ number of the files in `folder` (1 in an empty folder)."""
    numbers = [int(name[:4]) for name in os.listdir(folder) if name[:4].isdigit() and name[4:5] == "_"]
    return max(numbers, default=0) + 1


def save_numbered(folder, name, text, first_number=None):
    """Save `text` as `folder`/NNNN_<name>.json and return its path. NNNN is the first number from
    `first_number` (default: next_number(folder)) that no file holds yet. Two runs ending together
    would pick the same number, and a kill mid-write would leave half a file: the whole text is
    written aside and synced, then hard-linked to its name, which fails rather than replace an
    existing run; on a clash the next number is taken. A saved run is whole or absent, and never
    overwritten."""
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".saving-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, files.file_mode())  # mkstemp makes 0600; a saved run is an ordinary file
        number = next_number(folder) if first_number is None else first_number
        while True:
            path = os.path.join(folder, f"{number:04d}_{name}.json")
            try:
                os.link(tmp, path)
                return path
            except FileExistsError:
                number += 1
    finally:
        os.unlink(tmp)


def save_run(folder, benchmarks):
    """Save benchmarks measured outside pytest (bench.ddp) as a pytest-benchmark run in `folder`,
    named as pytest-benchmark names an autosaved one: NNNN_<commit>_<time>[_uncommitted-changes]_<pid>.json.
    Returns its path."""
    import datetime
    import json

    from pytest_benchmark.utils import get_commit_info

    from bench.measure import machine

    commit = get_commit_info()
    now = datetime.datetime.now(datetime.UTC)
    run = {
        "machine_info": machine.machine_info(),
        "commit_info": commit,
        "benchmarks": benchmarks,
        "datetime": now.isoformat(),
        "version": machine.package_version("pytest-benchmark"),
    }
    dirty = "_uncommitted-changes" if commit.get("dirty") else ""
    name = f"{commit.get('id', 'unversioned')}_{now:%Y%m%d_%H%M%S}{dirty}_{os.getpid()}"
    return save_numbered(folder, name, json.dumps(run, indent=4))


def protect_saved_runs(storage):
    """pytest-benchmark numbers a saved run after the newest one on disk and then opens it for
    writing; its save goes through save_numbered instead, keeping pytest-benchmark's names
    (NNNN_<tag>_<pid>.json) and its first number.

    PRIVATE API, the suite's only use of it: pytest-benchmark has no public hook for how a run is
    written, so this replaces FileStorage.save and reads FileStorage._next_num.
    tests/test_runs.py::test_pytest_benchmark_storage_still_has_what_the_suite_replaces fails
    when a release changes either."""
    from pathlib import Path

    from pytest_benchmark.utils import safe_dumps

    def save(output_json, name):
        text = safe_dumps(output_json, ensure_ascii=True, indent=4)
        path = Path(save_numbered(str(storage.get("")), f"{name}_{os.getpid()}", text,
                                  first_number=int(storage._next_num)))
        storage.logger.info(f"Saved benchmark data in: {path}")
        storage.saved.append(path)

    storage.save = save
    storage.saved = []
