"""Turn one saved benchmark run into results/REPORT.md and PNG charts.

    python -m bench.report                      # the latest run in results/benchmarks
    python -m bench.report 0003                 # a named run: NNNN prefix or path to its JSON
    python -m bench.report --storage /tmp/rb --out /tmp/report

Each saved run is a pytest-benchmark JSON file (results/benchmarks/<machine>/NNNN_*.json).
Speedups are against eager from the same run; effective GFLOP/s (FLOPs of the timed unit
from torch.utils.flop_counter / median time) is set against the sgemm GFLOP/s of the same
run and device. Only REPORT.md and the chart PNGs in --out are written, each atomically;
nothing else in results/ is touched. The loader of runs here is shared with bench.compare.
"""

import argparse
import glob
import json
import math
import os
import sys
from datetime import datetime

from bench import REPO, cli
from bench import backends as configs
from bench.files import write_atomic
from bench.measure import noise
from bench.reporting.format import interval_text, markdown_table, mib, ms, num, rate, secs

BASELINE = "eager"
MODES = {"train": "Training step", "forward": "Forward pass"}  # timed modes, in report order
KNOWN_MODES = set(MODES) | {"sgemm"}
DEFAULT_STORAGE = os.path.join("results", "benchmarks")
DEFAULT_OUT = "results"
MAIN_TABLE_MODE = "train"
VERSION_KEYS = ["python", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "numpy",
                "pytest-benchmark", "c++", "cuda"]


# Files whose <!-- summary:start/end --> part is copied into the report, with the section title.
INLINED = [("calibration.md", "Calibration: do the speedups hold still across runs?"),
           ("DDP.md", "Data-parallel training step")]
# Written by other commands beside the report; linked from it when present.
COMPANIONS = [
    ("calibration.md", "three runs of the main command side by side (`python -m bench.calibration`)"),
    ("block_length.md", "paired ratios against block length and a long sequential measurement"),
    ("block_length_threads1.md", "the block-length study at 1 thread (`bench.block_study --threads 1`)"),
    ("block_length_threads2.md", "the block-length study at 2 threads (`bench.block_study --threads 2`)"),
    ("autotune.md", "compile's autotuning picks, cold, three times"),
    ("DDP.md", "the training step data-parallel under torchrun (`python -m bench.ddp`)"),
    ("agreement.md", "every backend against float64 after 1 and 20 steps (`python -m bench.agreement`)"),
    ("drift.png", "parameter error vs float64 over 1,000 steps (`bench.agreement --steps 1000 --drift`)"),
    ("PROFILE.md", "where each backend's training step spends its time (`python -m bench.profile`)"),
    ("compile_time.md", "compile, export and session time, cold and warm (`python -m bench.compile_time`)"),
    ("net_structure.png", "the Net's layers and shapes (`python -m bench.draw_net`)"),
    ("computation_graph.png", "the computation graph from input to loss (`python -m bench.draw_net`)"),
]


def display_path(path):
    """A path as the reports print it: relative to the repository, never a machine's absolute path."""
    relative = os.path.relpath(os.path.abspath(path), REPO)
    return os.path.basename(path) if relative.startswith("..") else relative


class RunError(Exception):
    """A problem the user must fix, reported as one line without a traceback."""


# -----------------------------------------------------------------------------
# loading saved runs (shared with bench.compare)

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

    rows, sgemm, sgemm_processes = {}, {}, {}
    machine = data.get("machine_info") if isinstance(data.get("machine_info"), dict) else {}
    for bench in data["benchmarks"]:
        info = bench.get("extra_info") if isinstance(bench, dict) else None
        mode = info.get("mode") if isinstance(info, dict) else None
        if not isinstance(mode, str) or mode not in KNOWN_MODES:
            continue  # a benchmark this report does not know; a run with none of ours is foreign
        try:
            median = float(bench["stats"]["median"])
            if not median > 0:
                raise ValueError(f"non-positive median {median}")
            row = {
                "mode": info["mode"], "device": str(info["device"]), "flops": float(info["flops"]),
                "median": median, "iqr": float(bench["stats"].get("iqr", math.nan)),
                "rounds": bench["stats"].get("rounds"), "name": bench.get("name", "?"),
                "threads": int(info.get("threads") or machine.get("torch_threads") or 0),
            }
            if info["mode"] == "sgemm":
                stats = bench["stats"]  # GFLOP/s at the median, and at the quartiles of its rounds
                gflops = [row["flops"] / float(stats.get(q, median)) / 1e9 for q in ("median", "q3", "q1")]
                place = (row["device"], row["threads"])
                if gflops[0] > sgemm.get(place, (0.0,))[0]:
                    sgemm[place] = tuple(gflops)
                    medians = info.get("process_medians")
                    sgemm_processes[place] = [row["flops"] / m / 1e9 for m in medians] if medians else None
                continue
            row.update(
                backend=configs.current_name(str(info["backend"])), batch=int(info["batch_size"]),
                setup=info.get("setup_seconds"), first_call=info.get("first_call_seconds"),
                first_call_cache=info.get("first_call_cache"),
                agreement=info.get("agreement"), max_error=info.get("agreement_max_abs_error"),
                worst_rmse_ratio=info.get("agreement_worst_rmse_ratio"),
                worst_max_ratio=info.get("agreement_worst_max_ratio"),
                paired=paired_of(info), noisy=noise.is_noisy(info),
                others_cpu=info.get("noise_others_cpu"), steal=info.get("noise_steal"),
                peak_bytes=info.get("memory_peak_bytes"), held_bytes=info.get("held_bytes"),
                q1=float(bench["stats"].get("q1", median)), q3=float(bench["stats"].get("q3", median)),
                options={k: v for k, v in info.items() if k.startswith("backend_")},
                processes=info.get("processes", 1), process_speedups=info.get("process_speedups"),
                pair_ratios=info.get("pair_ratios"), paired_time=info.get("paired_seconds_per_call"),
            )
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as error:
            raise ValueError(f"benchmark {bench.get('name', '?')!r} is malformed ({error!r})") from None
        rows[(row["mode"], row["device"], row["batch"], row["backend"], row["threads"])] = row
    if not rows:
        raise ValueError("not a lenet-bench run (no train/forward benchmarks with extra_info)")
    for key, row in rows.items():
        row["time"] = paired_time(rows, key)

    try:
        when = datetime.fromisoformat(data["datetime"])
    except (KeyError, TypeError, ValueError):
        when = datetime.fromtimestamp(os.path.getmtime(path)).astimezone()
    commit = data.get("commit_info") if isinstance(data.get("commit_info"), dict) else {}
    ours = data.get("lenet_bench") if isinstance(data.get("lenet_bench"), dict) else {}
    return {"path": path, "name": os.path.basename(path), "datetime": when, "machine": machine,
            "commit": commit, "rows": rows, "sgemm": sgemm,
            "sgemm_processes": sgemm_processes, "benchmarks": data["benchmarks"],
            "interrupted": bool(ours.get("interrupted")), "session_seconds": ours.get("session_seconds"),
            "compile_cache_misses": ours.get("compile_cache_misses")}


def paired_time(rows, key):
    """Seconds per call of a row, from the same paired measurement as its speedup: eager's time in
    its A/A pairing over the row's paired speedup (eager's own row: that time itself). A run saved
    before worker processes has no such time: pytest-benchmark's median of the row's rounds."""
    row, eager = rows[key], rows.get((*key[:3], BASELINE, key[4]))
    if eager is None or not isinstance(eager.get("paired_time"), (int, float)) or not row["paired"]:
        return row["median"]
    return eager["paired_time"] if key[3] == BASELINE else eager["paired_time"] / row["paired"][0]


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
    """The complete runs in storage, oldest first; interrupted runs are left out (name one to use it)."""
    everything = load_runs(storage)
    runs = [run for run in everything if not run["interrupted"]]
    if len(runs) < count:
        found = f"only {len(runs)} complete run" if runs else "no complete benchmark runs"
        skipped = len(everything) - len(runs)
        found += f" ({skipped} interrupted, left out unless named)" if skipped else ""
        raise RunError(f"{found} in {storage}; save one with `pytest bench --benchmark-only`")
    return runs


def speedup(run, key):
    """Eager's time over this backend's, same mode, device and batch size, same run: the paired
    median where the run has one, else the ratio of the two medians."""
    interval = speedup_interval(run, key)
    if interval:
        return interval[0]
    eager = run["rows"].get((*key[:3], BASELINE, key[4]))
    return eager["median"] / run["rows"][key]["median"] if eager else None


def speedup_interval(run, key):
    """(median, low, high) of the paired speedup against eager (bench/measure/timing.py), or None."""
    return run["rows"][key].get("paired")


def backends_of(run):
    """Backend names in a stable order: eager first, then as they appear in the run."""
    names = {}
    for _, _, _, backend, _ in run["rows"]:
        names.setdefault(backend, None)
    return sorted(names, key=lambda name: name != BASELINE)


def groups_of(run):
    """(mode, device, threads) present in the run, in report order."""
    groups = {(mode, device, threads) for mode, device, _, _, threads in run["rows"]}
    order = list(MODES)
    return sorted(groups, key=lambda group: (order.index(group[0]) if group[0] in order else 99, *group[1:]))


def threads_text(threads):
    return f"{threads} thread" + "s" * (threads != 1) if threads else "? threads"


def cpu_model(machine):
    cpu = machine.get("cpu") if isinstance(machine.get("cpu"), dict) else {}
    return machine.get("cpu_model") or cpu.get("brand_raw") or machine.get("processor") or "unknown CPU"


# -----------------------------------------------------------------------------
# formatting

def agreement_text(row):
    if row["agreement"] is None:
        return "not checked"
    text = str(row["agreement"])
    if isinstance(row.get("worst_rmse_ratio"), (int, float)):
        largest = row.get("worst_max_ratio")
        largest = f", largest element {float(largest):.2g}x" if isinstance(largest, (int, float)) else ""
        text += f" (RMSE {float(row['worst_rmse_ratio']):.2g}x{largest} eager's)"
    elif row["max_error"] is not None:
        text += f" (max abs err {float(row['max_error']):.1e})"
    return text


def failed(row):
    return row["agreement"] is not None and str(row["agreement"]).lower() != "pass"


def speedup_text(run, key):
    row, interval = run["rows"][key], speedup_interval(run, key)
    if key[3] == BASELINE:  # eager paired with itself: the method's own zero, which should read 1
        text = f"A/A {interval_text(interval)}" if interval else "1x"
        if interval and not interval[1] <= 1 <= interval[2]:
            text += " " + AA_OFF_MARK  # two eager runners read apart: the pairing's own error shows here
    elif interval:
        text = interval_text(interval)
    else:
        value = speedup(run, key)
        text = "n/a (no eager)" if value is None else f"{num(value)}x (unpaired)"
    if failed(row):
        text += " FAIL"  # never a bare speedup for a backend that disagrees with the reference
    if row.get("noisy"):
        text += " " + NOISY_MARK
    return text


NOISY_MARK = "(noisy)"
AA_OFF_MARK = "(A/A off 1)"


def cache_text(cache):
    """What the compile caches did during a first call: cold (built), warm (loaded), or nothing."""
    if not isinstance(cache, dict) or not (cache.get("hits") or cache.get("misses")):
        return ""
    if cache.get("misses") and cache.get("hits"):
        return f" (partly cold: {cache['misses']} built, {cache['hits']} cached)"
    return " (cold cache)" if cache.get("misses") else " (warm cache)"


def noise_text(row):
    if row.get("others_cpu") is None:
        return "-"
    text = f"{100 * row['others_cpu']:.0f}% / {100 * (row.get('steal') or 0):.0f}%"
    return text + (" " + NOISY_MARK if row.get("noisy") else "")


def reproduce_command(run):
    keys = run["rows"].keys()
    backends = backends_of(run)
    batches = sorted({key[2] for key in keys})
    devices = sorted({key[1] for key in keys})
    threads = sorted({key[4] for key in keys if key[4]})
    processes = max(row.get("processes") or 1 for row in run["rows"].values())
    modes = [mode for mode in MODES if any(key[0] == mode for key in keys)]
    command = (f"python -m pytest bench --benchmark-only --backends={','.join(backends)} "
               f"--batch-sizes={','.join(map(str, batches))} --devices={','.join(devices)} "
               f"--modes={','.join(modes)}")
    if threads:
        command += f" --threads={','.join(map(str, threads))}"
    return command + f" --processes={processes}"


def render_markdown(run, charts):
    machine, commit = run["machine"], run["commit"]
    threads = ", ".join(map(str, sorted({key[4] for key in run["rows"]}))) or None
    processes = max(row.get("processes") or 1 for row in run["rows"].values())
    versions = ", ".join(f"{k} {machine[k]}" for k in VERSION_KEYS if machine.get(k))
    commit_text = commit.get("id", "unknown")[:12] + (" (uncommitted changes)" if commit.get("dirty") else "")
    lines = ["# LeNet benchmark report", ""]
    if run["interrupted"]:
        lines += ["**This run was interrupted: a partial run, not a complete one.** Only the benchmarks "
                  "that finished before the interrupt are below.", ""]
    lines += [
        f"- Run: `{display_path(run['path'])}`",
        f"- Date: {run['datetime'].isoformat(timespec='seconds')}, commit {commit_text}",
        f"- Machine: {cpu_model(machine)}, {machine.get('cpu_count', '?')} CPUs, "
        f"timed at {threads if threads is not None else '?'} torch threads, "
        f"{processes} worker process{'es' * (processes > 1)} per cell"
        + (f", GPU {machine['cuda_device']}" if machine.get("cuda_device") else ""),
        f"- Versions: {versions or 'unknown'}",
        f"- Reproduce: `{reproduce_command(run)}`, then `python -m bench.report`",
        "",
        "Speedup is eager's time over the backend's (above 1 is faster than eager), measured paired: "
        "in each of several worker processes the backend's calls alternate with eager's in blocks of "
        "about 50 ms (at least 3 calls each), each pair of neighbouring blocks gives one ratio, and the "
        "figure is the median of every process's pairs with a hierarchical bootstrap 95% interval "
        "`[low, high]` (processes resampled, then pairs within them: the interval covers the spread "
        "between processes; `bench/measure/timing.py`). Eager's own row pairs eager with a second, "
        "independent "
        "eager runner (its own weights, its own place in the batch pool): the A/A should read 1, and "
        f"how far it strays is the method's error; {AA_OFF_MARK} marks an A/A whose interval excludes 1. "
        f"{NOISY_MARK} marks a cell during which other processes used more than "
        f"{100 * noise.NOISY_SHARE:.0f}% of the machine's CPU time, or the hypervisor stole as much; "
        "noise that no counter sees (a neighbour's memory traffic) is not marked; results/calibration.md "
        "measures how well the intervals hold from run to run. "
        "Time ms comes from the same pairing as the speedup: eager's time per call in its A/A pairing "
        "over the row's speedup (runs saved before worker processes: pytest-benchmark's median); "
        "samples/s and GFLOP/s are computed from it. Rounds IQR ms is pytest-benchmark's statistic of "
        "the backend's own timed calls, every process's together. "
        "Peak MiB is the most memory one call had resident beyond "
        "what the process held before it; held MiB is the growth of the resident set over the "
        "runner's creation and first calls (compiled code, libraries, ONNX Runtime's arena); see "
        "`bench/measure/memory.py` for what each can and cannot see. GFLOP/s is the FLOPs of the timed unit "
        "(convolutions and "
        "matrix multiplies, from `torch.utils.flop_counter`) over that time; \"of sgemm\" sets it "
        "against a 1024x1024 float32 matrix multiply timed in the same run on the same device at the "
        "same thread count (its spread: the quartiles of its rounds and each process's median). "
        "Setup (export, scripting, session creation; once per backend and device) and the first call "
        "(compilation, first allocation) are never part of the timed rounds; beside the first call, "
        "whether the compile caches were cold or warm (results/compile_time.md has both). The "
        "agreement column is the check on the very runner timed, at its batch size, against float64 "
        "eager: its verdict, its worst RMSE and its worst largest element error against float64, each as "
        "a multiple of eager float32's. "
        "\"FAIL\" beside a speedup means the backend's numbers disagree with the float64 reference: "
        "do not trust that speedup.",
        "",
    ]

    # the main table, for the README to quote: training step, backend x batch size
    main_rows = []
    batches = sorted({key[2] for key in run["rows"] if key[0] == MAIN_TABLE_MODE})
    for mode, device, threads in groups_of(run):
        if mode != MAIN_TABLE_MODE:
            continue
        for backend in backends_of(run):
            cells = []
            for batch in batches:
                key = (mode, device, batch, backend, threads)
                cells.append(f"{ms(run['rows'][key]['time'])} ms ({speedup_text(run, key)})"
                             if key in run["rows"] else "-")
            if any(cell != "-" for cell in cells):
                main_rows.append([backend, device, threads, *cells])
    if main_rows:
        lines += [f"## Main table: {MODES[MAIN_TABLE_MODE].lower()}, time per call (speedup against eager)",
                  "", "<!-- main-table:start -->",
                  markdown_table(["backend", "device", "threads", *(f"batch {b}" for b in batches)],
                                 main_rows),
                  "<!-- main-table:end -->", ""]

    lines += targets_section(run)

    header = ["backend", "batch", "time ms", "rounds IQR ms", "samples/s", "vs eager [95% CI]", "GFLOP/s",
              "of sgemm", "peak MiB", "held MiB", "setup s", "first call s", "agreement",
              "others' CPU / steal"]
    for mode, device, threads in groups_of(run):
        sgemm = run["sgemm"].get((device, threads))
        rows = []
        keys = sorted((key for key in run["rows"] if (*key[:2], key[4]) == (mode, device, threads)),
                      key=lambda key: (backends_of(run).index(key[3]), key[2]))
        for key in keys:
            row = run["rows"][key]
            gflops = row["flops"] / row["time"] / 1e9
            reused = row["options"].get("backend_export_cached")
            setup = secs(row["setup"]) + (" (export reused)" if reused else "")
            rows.append([row["backend"], row["batch"], ms(row["time"]), ms(row["iqr"]),
                         rate(row["batch"] / row["time"]), speedup_text(run, key), num(gflops),
                         f"{num(100 * gflops / sgemm[0])}%" if sgemm else "-",
                         mib(row["peak_bytes"]), mib(row["held_bytes"]), setup,
                         secs(row["first_call"]) + cache_text(row["first_call_cache"]), agreement_text(row),
                         noise_text(row)])
        title = f"{MODES.get(mode, mode)}, {device}, {threads_text(threads)}"
        lines += [f"## {title}", ""]
        lines.append(sgemm_text(run, device, threads))
        lines += ["", markdown_table(header, rows), ""]
        options = {(row["backend"], k, str(v)) for key in keys for row in [run["rows"][key]]
                   for k, v in row["options"].items()}
        if options:
            lines += ["Backend options: " + "; ".join(f"{b} {k.removeprefix('backend_')}={v}"
                                                     for b, k, v in sorted(options)), ""]
        if (mode, device, threads) in charts:
            lines += [f"![{title}]({charts[(mode, device, threads)]})", ""]
    return "\n".join(lines)


def sgemm_text(run, device, threads):
    """The sgemm reference with its spread: the quartiles of its rounds, and each process's median."""
    sgemm = run["sgemm"].get((device, threads))
    if not sgemm:
        return f"No sgemm reference on {device} at {threads_text(threads)} in this run."
    text = (f"sgemm reference on {device} at {threads_text(threads)}: {sgemm[0]:.1f} GFLOP/s "
            f"(quartiles of its rounds {sgemm[1]:.1f}-{sgemm[2]:.1f}")
    processes = run["sgemm_processes"].get((device, threads))
    if processes:
        text += f"; process medians {', '.join(f'{g:.1f}' for g in processes)}"
    return text + ")."


def verdict(low, high, line):
    """met / not met / undecided for "at least `line`", from an interval: never from a point."""
    if low >= line:
        return "met"
    if high < line:
        return "not met"
    return "undecided"


def worst_verdict(verdicts):
    """Several cells must all meet a target: one "not met" decides, then one "undecided"."""
    for answer in ("not met", "undecided"):
        if answer in verdicts:
            return answer
    return "met"


def sgemm_share(run, key):
    """(share, low, high) of the same run's sgemm GFLOP/s at the row's device and thread count: at the
    row's paired time against sgemm's median, and at the row's paired interval against sgemm's
    quartiles (sgemm is not paired with anything, so its quartiles are the honest spread here)."""
    row, (sgemm, sgemm_low, sgemm_high) = run["rows"][key], run["sgemm"][(key[1], key[4])]
    interval = speedup_interval(run, key)
    if interval and row["time"] != row["median"]:  # a time from the pairing: scale it by the interval's ends
        times = [row["time"], *(row["time"] * interval[0] / end for end in interval[1:])]
    else:
        times = [row[q] for q in ("median", "q3", "q1")]
    gflops = [row["flops"] / t / 1e9 for t in times]
    return gflops[0] / sgemm, gflops[1] / sgemm_high, gflops[2] / sgemm_low


def targets_section(run):
    """The project's performance targets, checked against this run's training-step rows with their
    intervals. Only backends that agree with the float64 reference count."""
    lines = []
    for device, threads in sorted({(key[1], key[4]) for key in run["rows"] if key[0] == "train"}):
        rows = {key: row for key, row in run["rows"].items()
                if (*key[:2], key[4]) == ("train", device, threads) and not failed(row)
                and key[3] != BASELINE}
        intervals = {key: speedup_interval(run, key) for key in rows if speedup_interval(run, key)}
        table = []

        batch_1 = [key for key in intervals if key[2] == 1]
        if batch_1:
            best = max(batch_1, key=lambda key: intervals[key][0])
            table.append(["batch-1 training step: the fastest backend at least 8x faster than eager",
                          f"{best[3]} {interval_text(intervals[best])}", verdict(*intervals[best][1:], 8.0)])

        batch_256 = [key for key in rows if key[2] == 256]
        if batch_256 and run["sgemm"].get((device, threads)):
            best = max(batch_256, key=lambda key: sgemm_share(run, key)[0])
            share, low, high = sgemm_share(run, best)
            table.append(["batch-256 training step: at least 50% of the same run's sgemm GFLOP/s",
                          f"{best[3]} {num(100 * share)}% [{num(100 * low)}, {num(100 * high)}] of "
                          f"{run['sgemm'][(device, threads)][0]:.0f} GFLOP/s", verdict(low, high, 0.5)])

        compiled = sorted({key[3] for key in intervals if configs.is_torch_compile(key[3])})
        checks = [(name, f"torch.compile ({name}) not slower than eager at any batch") for name in compiled]
        if any(key[3] == "aotinductor" for key in intervals):  # Inductor too, compiled ahead of time
            checks.append(("aotinductor",
                           "Inductor ahead of time (aotinductor) not slower than eager at any batch"))
        for backend, label in checks:
            mine = {key[2]: value for key, value in intervals.items() if key[3] == backend}
            if mine:  # "not slower": met where the interval lies at or above 1, not met where below
                answers = {batch: verdict(low, high, 1.0) for batch, (_, low, high) in mine.items()}
                worst = min(mine, key=lambda batch: mine[batch][0])
                table.append([label, f"slowest at batch {worst}: {interval_text(mine[worst])}",
                              worst_verdict(list(answers.values()))])
        mine = {key[2]: value for key, value in intervals.items() if key[3] == "onnxruntime"}
        if mine:
            worst = min(mine, key=lambda batch: mine[batch][0])
            answers = ["met" if low > 1 else "not met" if high <= 1 else "undecided"
                       for _, low, high in mine.values()]
            table.append(["ONNX Runtime training step faster than eager at every batch",
                          f"slowest at batch {worst}: {interval_text(mine[worst])}", worst_verdict(answers)])
        if table:
            lines += [f"## Performance targets, training step, {device}, {threads_text(threads)}", "",
                      "Each answer comes from the 95% interval: met when it lies wholly on the right side "
                      "of the line, not met when wholly on the wrong side, undecided when it straddles it.",
                      "", markdown_table(["target", "measured in this run", "answer"], table), "",
                      "Where the time goes: the profile summary below and [PROFILE.md](PROFILE.md); "
                      "what was tried for each backend, kept and dropped: "
                      "[README.md](../README.md#what-was-tried-for-speed).",
                      ""]
    return lines


# -----------------------------------------------------------------------------
# output

def markdown_section(text, title):
    """The body of the level-2 section `## title` of a markdown text ("" when it has none)."""
    return text.partition(f"## {title}\n")[2].partition("\n## ")[0].strip()


def draw_chart(run, mode, device, threads, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    backends = backends_of(run)
    colors = {name: plt.cm.tab10(i % 10) for i, name in enumerate(backends)}
    keys = [key for key in run["rows"] if (*key[:2], key[4]) == (mode, device, threads)]
    batches = sorted({key[2] for key in keys})
    fig, (left, right, memory_ax) = plt.subplots(1, 3, figsize=(19, 5))

    for backend in backends:
        points = sorted((key[2], run["rows"][key]["time"] * 1e3) for key in keys if key[3] == backend)
        if points:
            fail = any(failed(run["rows"][key]) for key in keys if key[3] == backend)
            left.plot(*zip(*points, strict=True), marker="o", color=colors[backend],
                      linestyle="--" if fail else "-", label=backend + (" (agreement FAIL)" if fail else ""))
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xticks(batches, [str(b) for b in batches])
    left.minorticks_off()
    left.set_xlabel("batch size")
    left.set_ylabel("time per call (ms)")
    left.set_title("time per call (log-log)")
    left.grid(True, which="both", alpha=0.3)
    left.legend()

    others = [b for b in backends if b != BASELINE and any(key[3] == b for key in keys)]
    width = 0.8 / max(len(others), 1)
    values = [1.0]
    for i, backend in enumerate(others):
        for j, batch in enumerate(batches):
            key = (mode, device, batch, backend, threads)
            value = speedup(run, key) if key in run["rows"] else None
            if value is None:
                continue
            fail = failed(run["rows"][key])
            values.append(value)
            x = j - 0.4 + width * (i + 0.5)
            interval = speedup_interval(run, key)
            errors = [[value - interval[1]], [interval[2] - value]] if interval else None
            if interval:
                values += [interval[1], interval[2]]
            right.bar(x, value - 1, width, bottom=1, color=colors[backend],  # from 1: up is faster
                      hatch="//" if fail else None, edgecolor="black" if fail else colors[backend],
                      yerr=errors, capsize=2, ecolor="black",
                      label=(backend + (" (agreement FAIL)" if fail else "")) if j == 0 else None)
            right.annotate(f"{num(value)}x" + (" FAIL" if fail else ""), (x, value), ha="center",
                           va="bottom" if value >= 1 else "top", fontsize=8,
                           xytext=(0, 2 if value >= 1 else -2), textcoords="offset points")
    right.axhline(1.0, color=colors.get(BASELINE, "black"), linewidth=1.5, label=f"{BASELINE} (= 1)")
    right.set_yscale("log")
    right.set_ylim(min(values) / 1.4, max(values) * 1.4)
    right.set_xticks(range(len(batches)), [str(b) for b in batches])
    right.set_xlabel("batch size")
    right.set_ylabel(f"speedup against {BASELINE} (higher is faster)")
    right.set_title(f"speedup against {BASELINE}, paired, 95% interval")

    everyone = [b for b in backends if any(key[3] == b for key in keys)]
    width = 0.8 / max(len(everyone), 1)
    for i, backend in enumerate(everyone):
        for j, batch in enumerate(batches):
            row = run["rows"].get((mode, device, batch, backend, threads))
            if row is None or not isinstance(row.get("peak_bytes"), (int, float)):
                continue
            held = row["held_bytes"] if isinstance(row.get("held_bytes"), (int, float)) else 0
            x = j - 0.4 + width * (i + 0.5)
            memory_ax.bar(x, held / 2**20, width, color=colors[backend], alpha=0.45)
            memory_ax.bar(x, row["peak_bytes"] / 2**20, width, bottom=held / 2**20, color=colors[backend],
                          label=backend if j == 0 else None)
    memory_ax.set_xticks(range(len(batches)), [str(b) for b in batches])
    memory_ax.set_xlabel("batch size")
    memory_ax.set_ylabel("MiB resident")
    memory_ax.set_title("memory: held (pale) + peak of one call (solid)")
    memory_ax.grid(True, axis="y", alpha=0.3)
    if memory_ax.get_legend_handles_labels()[0]:
        memory_ax.legend()
    right.grid(True, axis="y", which="both", alpha=0.3)
    right.legend()

    machine = run["machine"]
    for ax in (left, right):  # plain numbers on the log axes: 0.5, 1, 2, 5, 10, not 10^0
        ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())

    fig.suptitle(f"{MODES.get(mode, mode)}, {device}: {cpu_model(machine)}, "
                 f"{threads_text(threads)}, torch {machine.get('torch', '?')} "
                 f"({run['name'][:4]})")
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def write_report(run, out):
    os.makedirs(out, exist_ok=True)
    charts, written = {}, []
    for mode, device, threads in groups_of(run):
        name = f"{mode}_{device}_{threads}t.png"
        draw_chart(run, mode, device, threads, os.path.join(out, name))
        charts[(mode, device, threads)] = name
        written.append(os.path.join(out, name))
    text = render_markdown(run, charts)
    profile = os.path.join(out, "PROFILE.md")
    if os.path.exists(profile):  # the profile's own summary table: where each backend's time goes
        with open(profile, encoding="utf-8") as f:
            text_of_profile = f.read()
        summary = markdown_section(text_of_profile, "Summary")
        if summary:
            text += ("\n## Where the time goes (from PROFILE.md, its own run)\n\n" + summary + "\n\n"
                     "Coverage below 100% is time outside every kernel: for eager, TorchScript and "
                     "torch.compile Python, dispatch, autograd and Dynamo's guards; for aotinductor and "
                     "ONNX Runtime their own C++ runtime (no Python runs in their step).\n")
        groups = markdown_section(text_of_profile, "Kernel groups against eager")
        if groups:  # its comparison with eager by kernel group, at each batch size profiled
            text += "\n## Kernel groups against eager (from PROFILE.md, its own run)\n\n" + groups + "\n"
    for name, title in INLINED:  # summaries other commands wrote beside the report
        summary = os.path.join(out, name)
        if os.path.exists(summary):
            with open(summary, encoding="utf-8") as f:
                body = f.read().partition("<!-- summary:start -->")[2].partition("<!-- summary:end -->")[0]
            if body.strip():
                text += f"\n## {title} (from [{name}]({name}))\n\n{body.strip()}\n"
    companions = [(name, what) for name, what in COMPANIONS if os.path.exists(os.path.join(out, name))]
    if companions:
        text += "\n## More in this folder\n\n" + "\n".join(
            f"- [{name}]({name}): {what}" for name, what in companions) + "\n"
    report = os.path.join(out, "REPORT.md")
    write_atomic(report, lambda f: f.write(text.encode()))
    return [report, *written]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", help="run to report: path to its JSON or its NNNN prefix "
                        "(default: the latest in --storage)")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="saved runs (default: %(default)s)")
    parser.add_argument("--out", type=cli.output_folder, default=DEFAULT_OUT,
                        help="where REPORT.md and charts go (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        run = find_run(args.run, args.storage) if args.run else require_runs(args.storage)[-1]
        written = write_report(run, args.out)
    except RunError as error:
        print(f"report: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"report: cannot write to --out {args.out}: {error.strerror or error}", file=sys.stderr)
        return 2
    print(f"report of {display_path(run['path'])}: wrote {', '.join(display_path(p) for p in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
