"""Saved benchmark runs, read: the loader every report and command shares.

Each saved run is a pytest-benchmark JSON file (results/benchmarks/<machine>/NNNN_*.json). A run
reads as a dict whose "rows" are keyed by a CellKey (mode, device, batch, backend, threads); speedups
are against eager from the same run.
"""

import glob
import json
import math
import os
import sys
from datetime import datetime
from typing import NamedTuple

from bench import backends as configs
from bench import record
from bench.backends import EAGER
from bench.measure import machine, noise
from bench.session import MODES

KNOWN_MODES = set(MODES) | {"sgemm"}
DEFAULT_STORAGE = os.path.join("results", "benchmarks")
DEFAULT_OUT = "results"  # where the reports on the saved runs are written
VERSION_KEYS = ["python", *machine.PACKAGES, "c++", "cuda"]  # in the order the reports print them


class CellKey(NamedTuple):
    """What a row of a run is: one backend's mode, device, batch size and thread count."""

    mode: str
    device: str
    batch: int
    backend: str
    threads: int

    def group(self):
        """(mode, device, threads): the report's table this row belongs to."""
        return self.mode, self.device, self.threads

    def eager(self):
        """The key of eager's row in the same cell, the one every speedup is against."""
        return self._replace(backend=EAGER)


class RunError(Exception):
    """A problem the user must fix, reported as one line without a traceback."""


def read_run(path):
    """One saved run as a dict, or ValueError saying in a few words why the file is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"unreadable ({error.__class__.__name__}: {error})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError("not a pytest-benchmark run (no 'benchmarks' list)")

    rows, sgemm, sgemm_processes, sgemm_size, sgemm_seconds = {}, {}, {}, {}, {}
    machine = data.get("machine_info") if isinstance(data.get("machine_info"), dict) else {}
    for bench in data["benchmarks"]:
        info = bench.get("extra_info") if isinstance(bench, dict) else None
        mode = info.get("mode") if isinstance(info, dict) else None
        if not isinstance(mode, str) or mode not in KNOWN_MODES:
            continue  # a benchmark this report does not know; a run with none of ours is foreign
        threads = int(info.get("threads") or machine.get("torch_threads") or 0)
        try:
            if info["mode"] == "sgemm":
                median, flops = float(bench["stats"]["median"]), float(info["flops"])
                if not median > 0:
                    raise ValueError(f"non-positive median {median}")
                stats = bench["stats"]  # GFLOP/s at the median, and at the quartiles of its rounds
                gflops = [flops / float(stats.get(q, median)) / 1e9 for q in ("median", "q3", "q1")]
                place = (str(info["device"]), threads)
                if gflops[0] > sgemm.get(place, (0.0,))[0]:
                    sgemm[place] = tuple(gflops)
                    sgemm_seconds[place] = median
                    medians = info.get("process_medians")
                    sgemm_processes[place] = [flops / m / 1e9 for m in medians] if medians else None
                    sgemm_size[place] = info.get("size")
                continue
            row = record.RunRow.from_benchmark(bench, configs.current_name(str(info["backend"])), threads,
                                               paired_of(info), noise.is_noisy(info))
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as error:
            raise ValueError(f"benchmark {bench.get('name', '?')!r} is malformed ({error!r})") from None
        rows[CellKey(row.mode, row.device, row.batch, row.backend, row.threads)] = row
    if not rows:
        raise ValueError("not a lenet-bench run (no train/forward benchmarks with extra_info)")
    for key, row in rows.items():
        row.time = paired_time(rows, key)

    try:
        when = datetime.fromisoformat(data["datetime"])
    except (KeyError, TypeError, ValueError):
        when = datetime.fromtimestamp(os.path.getmtime(path)).astimezone()
    commit = data.get("commit_info") if isinstance(data.get("commit_info"), dict) else {}
    ours = data.get("lenet_bench") if isinstance(data.get("lenet_bench"), dict) else {}
    return {"path": path, "name": os.path.basename(path), "datetime": when, "machine": machine,
            "commit": commit, "rows": rows, "sgemm": sgemm,
            "sgemm_processes": sgemm_processes, "sgemm_size": sgemm_size,
            "sgemm_seconds": sgemm_seconds, "benchmarks": data["benchmarks"],
            "interrupted": bool(ours.get("interrupted")), "session_seconds": ours.get("session_seconds"),
            "versions": ours.get("versions"),
            "compile_cache_misses": ours.get("compile_cache_misses"), "workers": ours.get("workers")}


def paired_time(rows, key):
    """Seconds per call of a row, from the same paired measurement as its speedup: eager's time in
    its A/A pairing over the row's paired speedup (eager's own row: that time itself). A run saved
    before worker processes has no such time: pytest-benchmark's median of the row's rounds."""
    row, eager = rows[key], rows.get(key.eager())
    if eager is None or not isinstance(eager.paired_time, (int, float)) or not row.paired:
        return row.median
    return eager.paired_time if key.backend == EAGER else eager.paired_time / row.paired[0]


def paired_of(info):
    """(median, low, high) of the paired speedup against eager recorded with a benchmark, or None
    for a run made before paired timing (or with --benchmark-disable)."""
    values = [info.get(k) for k in ("speedup", "speedup_low", "speedup_high")]
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values):
        return None
    return tuple(float(v) for v in values)


def load_runs(storage):
    """Every good run under storage, oldest first; each bad file is named in one line on stderr."""
    runs = []
    for path in sorted(glob.glob(os.path.join(storage, "**", "*.json"), recursive=True)):
        try:
            runs.append(read_run(path))
        except ValueError as reason:
            print(f"warning: skipping {path}: {reason}", file=sys.stderr)
    runs.sort(key=lambda run: (run["datetime"].timestamp(), run["name"]))
    return runs


def find_run(name, storage, runs=None):
    """A run named by the path of its JSON file or by its NNNN prefix (e.g. 0003 or 3)."""
    if os.path.isfile(name):
        try:
            return read_run(name)
        except ValueError as reason:
            raise RunError(f"{name}: {reason}") from None
    runs = load_runs(storage) if runs is None else runs
    prefix = f"{int(name):04d}_" if name.isdigit() else name
    matches = [run for run in runs if run["name"].startswith(prefix)]
    if not matches:
        raise RunError(f"no saved run matches {name!r} in {storage} (give a JSON path or its NNNN prefix)")
    if len(matches) > 1:
        raise RunError(f"{name!r} matches {len(matches)} runs in {storage}: "
                       + ", ".join(run["path"] for run in matches) + "; give a path")
    return matches[0]


def require_runs(storage, count=1):
    """The complete runs of this checkout's torch in storage, oldest first. Interrupted runs and the
    version matrix's runs (tagged lenet_bench.versions, each of another release's venv) are left out
    of every default: name one to use it."""
    everything = load_runs(storage)
    runs = [run for run in everything if not run["interrupted"] and not run["versions"]]
    if len(runs) < count:
        found = f"only {len(runs)} complete run" if runs else "no complete benchmark runs"
        interrupted = sum(run["interrupted"] for run in everything)
        matrix = sum(bool(run["versions"]) and not run["interrupted"] for run in everything)
        left_out = [text for count, text in ((interrupted, f"{interrupted} interrupted"),
                                             (matrix, f"{matrix} of the version matrix")) if count]
        found += f" ({', '.join(left_out)}, left out unless named)" if left_out else ""
        raise RunError(f"{found} in {storage}; save one with `pytest bench --benchmark-only`")
    return runs


def speedup(run, key):
    """Eager's time over this backend's, same mode, device and batch size, same run: the paired
    median where the run has one, else the ratio of the two medians."""
    interval = speedup_interval(run, key)
    if interval:
        return interval[0]
    eager = run["rows"].get(key.eager())
    return eager.median / run["rows"][key].median if eager else None


def speedup_interval(run, key):
    """(median, low, high) of the paired speedup against eager (bench/measure/timing.py), or None."""
    return run["rows"][key].paired


def backends_of(run):
    """Backend names in a stable order: eager first, then as they appear in the run."""
    names = {}
    for key in run["rows"]:
        names.setdefault(key.backend, None)
    return sorted(names, key=lambda name: name != EAGER)


def groups_of(run):
    """(mode, device, threads) present in the run, in report order."""
    groups = {key.group() for key in run["rows"]}
    order = list(MODES)
    return sorted(groups, key=lambda group: (order.index(group[0]) if group[0] in order else 99, *group[1:]))


def cpu_of(machine):
    """The CPU a saved run's machine_info names (measure/machine.cpu_model() reads this machine's)."""
    cpu = machine.get("cpu") if isinstance(machine.get("cpu"), dict) else {}
    return machine.get("cpu_model") or cpu.get("brand_raw") or machine.get("processor") or "unknown CPU"


def failed(row):
    """Whether the row's backend disagrees with the float64 reference (its speedup is not to be
    trusted): bench/record.py's rule, the one every reader uses."""
    return record.failed(row.agreement)


def trusted(row):
    """Whether a target may use the row's speedup: its agreement passed, or the run predates the check."""
    return row.agreement is None or record.verified(row.agreement)
