"""REPORT.md's text for one run: its header, main table, targets and one table per (mode, device, threads)."""

import os

from bench.backends import EAGER
from bench.measure import noise, timing
from bench.reporting.format import (
    AA_OFF_MARK,
    MODE_TITLES,
    NOISY_MARK,
    display_path,
    interval_text,
    markdown_table,
    mib,
    ms,
    num,
    rate,
    secs,
    threads_text,
)
from bench.reporting.targets import targets_section
from bench.runs.load import (
    VERSION_KEYS,
    CellKey,
    backends_of,
    cpu_of,
    failed,
    groups_of,
    speedup,
    speedup_interval,
)
from bench.session import MODES

MAIN_TABLE_MODE = "train"


def agreement_text(row):
    if row.agreement is None:
        return "not checked"
    text = str(row.agreement)
    if isinstance(row.worst_rmse_ratio, (int, float)):
        largest = row.worst_max_ratio
        largest = f", largest element {float(largest):.2g}x" if isinstance(largest, (int, float)) else ""
        text += f" (RMSE {float(row.worst_rmse_ratio):.2g}x{largest} eager's)"
    elif row.max_error is not None:
        text += f" (max abs err {float(row.max_error):.1e})"
    return text



def speedup_text(run, key):
    row, interval = run["rows"][key], speedup_interval(run, key)
    if key.backend == EAGER:  # eager paired with itself: the method's own zero, which should read 1
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
    if row.noisy:
        text += " " + NOISY_MARK
    return text



def cache_text(cache):
    """What the compile caches did during a first call: cold (built), warm (loaded), or nothing."""
    if not isinstance(cache, dict) or not (cache.get("hits") or cache.get("misses")):
        return ""
    if cache.get("misses") and cache.get("hits"):
        return f" (partly cold: {cache['misses']} built, {cache['hits']} cached)"
    return " (cold cache)" if cache.get("misses") else " (warm cache)"


def noise_text(row):
    if row.others_cpu is None:
        return "-"
    text = f"{100 * row.others_cpu:.0f}% / {100 * (row.steal or 0):.0f}%"
    return text + (" " + NOISY_MARK if row.noisy else "")


def reproduce_command(run):
    keys = run["rows"].keys()
    backends = backends_of(run)
    batches = sorted({key.batch for key in keys})
    devices = sorted({key.device for key in keys})
    threads = sorted({key.threads for key in keys if key.threads})
    processes = max(row.processes or 1 for row in run["rows"].values())
    modes = [mode for mode in MODES if any(key.mode == mode for key in keys)]
    command = (f"python -m pytest bench --benchmark-only --backends={','.join(backends)} "
               f"--batch-sizes={','.join(map(str, batches))} --devices={','.join(devices)} "
               f"--modes={','.join(modes)}")
    if threads:
        command += f" --threads={','.join(map(str, threads))}"
    return command + f" --processes={processes}"


def render_markdown(run, charts):
    machine, commit = run["machine"], run["commit"]
    threads = ", ".join(map(str, sorted({key.threads for key in run["rows"]}))) or None
    processes = max(row.processes or 1 for row in run["rows"].values())
    versions = ", ".join(f"{k} {machine[k]}" for k in VERSION_KEYS if machine.get(k))
    commit_text = commit.get("id", "unknown")[:12] + (" (uncommitted changes)" if commit.get("dirty") else "")
    sizes = sorted({size for size in run.get("sgemm_size", {}).values() if size})  # as the run recorded them
    sgemm_shape = " or ".join(f"{size}x{size}" for size in sizes) + " " if sizes else ""
    lines = ["# LeNet benchmark report", ""]
    if run["interrupted"]:
        lines += ["**This run was interrupted: a partial run, not a complete one.** Only the benchmarks "
                  "that finished before the interrupt are below.", ""]
    lines += [
        f"- Run: `{display_path(run['path'])}`, {run['datetime'].isoformat(timespec='seconds')}, "
        f"commit {commit_text}",
        f"- Machine: {cpu_of(machine)}, {machine.get('cpu_count', '?')} CPUs, "
        f"timed at {threads if threads is not None else '?'} torch threads, "
        f"{processes} worker process{'es' * (processes > 1)} per cell"
        + (f", GPU {machine['cuda_device']}" if machine.get("cuda_device") else ""),
        f"- Versions: {versions or 'unknown'}",
        f"- Reproduce: `{reproduce_command(run)}`, then `python -m bench.report`",
        "",
        "Each cell: time per call, and in brackets the speedup against eager in the same run (above 1 is "
        "faster) with its 95% interval over the worker processes; FAIL: the backend's numbers disagree "
        "with float64, do not trust its speedup. How it is measured: [docs/method.md](../docs/method.md); "
        "every column of the detailed tables: [Reading the detailed tables](#reading-the-detailed-tables).",
        "",
    ]
    explanation = [
        "## Reading the detailed tables",
        "",
        "Speedup is eager's time over the backend's, measured paired: in each worker process the "
        f"backend's calls alternate with eager's in blocks of about {timing.BLOCK_SECONDS * 1e3:.0f} ms "
        f"(at least {timing.MIN_BLOCK_CALLS} calls each), each pair of neighbouring blocks gives one ratio, "
        "each process gives the median of its ratios, and the figure is the geometric mean of the "
        "processes' medians with a Student t 95% interval over them (`bench/measure/timing.py`). Eager's "
        "own row pairs eager with a second, independent eager runner: the A/A should read 1; "
        f"{AA_OFF_MARK} marks one whose interval excludes 1. {NOISY_MARK} marks a cell during which other "
        f"processes used more than {100 * noise.NOISY_SHARE:.0f}% of the machine's CPU time, or the "
        "hypervisor stole as much. Time ms: eager's time per call in its A/A pairing over the row's "
        "speedup; samples/s and GFLOP/s come from it. Rounds IQR ms: pytest-benchmark's statistic of the "
        "backend's own timed calls. Peak MiB: the most memory one call had resident beyond what the "
        "process held before it; held MiB: resident-set growth over the runner's creation and first calls "
        "(`bench/measure/memory.py`). GFLOP/s: FLOPs of the timed unit (`torch.utils.flop_counter`) over "
        f"that time; \"of sgemm\" sets it against a {sgemm_shape}float32 matrix multiply timed in the same "
        "run at the same thread count. Setup (export, scripting, session creation) and the first call "
        "(compilation, first allocation; cold or warm compile caches) are never timed with the rounds. "
        "Agreement: the check on the very runner timed, at its batch size, against float64 eager: its "
        "verdict and its worst RMSE and largest element error as multiples of eager float32's.",
        "",
    ]

    for mode in MODES:  # the answer first: per mode, backend x batch size (the README quotes training's)
        lines += answer_table(run, mode)
    lines += targets_section(run)

    header = ["backend", "batch", "time ms", "rounds IQR ms", "samples/s", "vs eager [95% CI]", "GFLOP/s",
              "of sgemm", "peak MiB", "held MiB", "setup s", "first call s", "agreement",
              "others' CPU / steal"]
    for mode, device, threads in groups_of(run):
        sgemm = run["sgemm"].get((device, threads))
        rows = []
        keys = sorted((key for key in run["rows"] if key.group() == (mode, device, threads)),
                      key=lambda key: (backends_of(run).index(key.backend), key.batch))
        for key in keys:
            row = run["rows"][key]
            gflops = row.flops / row.time / 1e9
            reused = row.options.get("backend_export_cached")
            setup = secs(row.setup) + (" (export reused)" if reused else "")
            rows.append([row.backend, row.batch, ms(row.time), ms(row.iqr),
                         rate(row.batch / row.time), speedup_text(run, key), num(gflops),
                         f"{num(100 * gflops / sgemm[0])}%" if sgemm else "-",
                         mib(row.peak_bytes), mib(row.held_bytes), setup,
                         secs(row.first_call) + cache_text(row.first_call_cache), agreement_text(row),
                         noise_text(row)])
        title = f"{MODE_TITLES.get(mode, mode)}, {device}, {threads_text(threads)}"
        lines += [f"## {title}", ""]
        lines.append(sgemm_text(run, device, threads))
        lines += ["", markdown_table(header, rows), ""]
        options = {(row.backend, k, str(v)) for key in keys for row in [run["rows"][key]]
                   for k, v in row.options.items()}
        if options:
            lines += ["Backend options: " + "; ".join(f"{b} {k.removeprefix('backend_')}={v}"
                                                     for b, k, v in sorted(options)), ""]
        if (mode, device, threads) in charts:
            lines += [f"![{title}]({charts[(mode, device, threads)]})", ""]
    return "\n".join(lines + explanation)


def answer_table(run, mode):
    """One mode's table: a row per backend and thread count, a column per batch size, each cell the
    time per call and the speedup against eager; the training one between main-table markers."""
    rows = []
    batches = sorted({key.batch for key in run["rows"] if key.mode == mode})
    for _, device, threads in [group for group in groups_of(run) if group[0] == mode]:
        for backend in backends_of(run):
            keys = [CellKey(mode, device, batch, backend, threads) for batch in batches]
            cells = [f"{ms(run['rows'][key].time)} ms ({speedup_text(run, key)})" if key in run["rows"]
                     else "-" for key in keys]
            if any(cell != "-" for cell in cells):
                rows.append([backend, device, threads, *cells])
    if not rows:
        return []
    table = markdown_table(["backend", "device", "threads", *(f"batch {b}" for b in batches)], rows)
    if mode == MAIN_TABLE_MODE:  # copied into the README as it stands, so it names its run
        machine, commit = run["machine"], run["commit"]
        dirty = " with uncommitted changes" if commit.get("dirty") else ""
        source = (f"Run `{os.path.basename(run['path'])}` ({run['datetime'].date().isoformat()}, commit "
                  f"{commit.get('id', 'unknown')[:7]}{dirty}; {cpu_of(machine)}, "
                  f"{machine.get('cpu_count', '?')} CPUs; torch {machine.get('torch', '?')}):")
        table = f"<!-- main-table:start -->\n{source}\n\n{table}\n<!-- main-table:end -->"
    title = MODE_TITLES[mode].lower()
    return [f"## The answer: {title}, time per call (speedup against eager [95% interval])", "", table, ""]


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


def markdown_section(text, title):
    """The body of the level-2 section `## title` of a markdown text ("" when it has none)."""
    return text.partition(f"## {title}\n")[2].partition("\n## ")[0].strip()
