"""REPORT.md's text for one run: its header, main table, targets and one table per (mode, device, threads)."""

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
from bench.runs.load import VERSION_KEYS, backends_of, cpu_of, failed, groups_of, speedup, speedup_interval
from bench.session import MODES

MAIN_TABLE_MODE = "train"


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



def speedup_text(run, key):
    row, interval = run["rows"][key], speedup_interval(run, key)
    if key[3] == EAGER:  # eager paired with itself: the method's own zero, which should read 1
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
    sizes = sorted({size for size in run.get("sgemm_size", {}).values() if size})  # as the run recorded them
    sgemm_shape = " or ".join(f"{size}x{size}" for size in sizes) + " " if sizes else ""
    lines = ["# LeNet benchmark report", ""]
    if run["interrupted"]:
        lines += ["**This run was interrupted: a partial run, not a complete one.** Only the benchmarks "
                  "that finished before the interrupt are below.", ""]
    lines += [
        f"- Run: `{display_path(run['path'])}`",
        f"- Date: {run['datetime'].isoformat(timespec='seconds')}, commit {commit_text}",
        f"- Machine: {cpu_of(machine)}, {machine.get('cpu_count', '?')} CPUs, "
        f"timed at {threads if threads is not None else '?'} torch threads, "
        f"{processes} worker process{'es' * (processes > 1)} per cell"
        + (f", GPU {machine['cuda_device']}" if machine.get("cuda_device") else ""),
        f"- Versions: {versions or 'unknown'}",
        f"- Reproduce: `{reproduce_command(run)}`, then `python -m bench.report`",
        "",
        "Speedup is eager's time over the backend's (above 1 is faster than eager), measured paired: "
        "in each of several worker processes the backend's calls alternate with eager's in blocks of "
        f"about {timing.BLOCK_SECONDS * 1e3:.0f} ms (at least {timing.MIN_BLOCK_CALLS} calls each), each "
        "pair of neighbouring blocks gives one ratio, and the "
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
        f"against a {sgemm_shape}float32 matrix multiply timed in the same run on the same device at the "
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
        title = MODE_TITLES[MAIN_TABLE_MODE].lower()
        lines += [f"## Main table: {title}, time per call (speedup against eager)",
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
        title = f"{MODE_TITLES.get(mode, mode)}, {device}, {threads_text(threads)}"
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


def markdown_section(text, title):
    """The body of the level-2 section `## title` of a markdown text ("" when it has none)."""
    return text.partition(f"## {title}\n")[2].partition("\n## ")[0].strip()
