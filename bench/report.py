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

from bench import harness
from bench.harness import write_atomic

BASELINE = "eager"
MODES = {"train": "Training step", "forward": "Forward pass"}  # timed modes, in report order
KNOWN_MODES = set(MODES) | {"sgemm"}
DEFAULT_STORAGE = os.path.join("results", "benchmarks")
DEFAULT_OUT = "results"
MAIN_TABLE_MODE = "train"
VERSION_KEYS = ["python", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "numpy",
                "pytest-benchmark", "c++", "cuda"]


# Written by other commands beside the report; linked from it when present.
COMPANIONS = [
    ("agreement.md", "every backend against float64 after 1 and 20 steps (`python -m bench.agreement`)"),
    ("drift.png", "parameter error vs float64 over 1,000 steps (`bench.agreement --steps 1000 --drift`)"),
    ("PROFILE.md", "where each backend's training step spends its time (`python -m bench.profile`)"),
    ("compile_time.md", "compile, export and session time, cold and warm (`python -m bench.compile_time`)"),
    ("net_structure.png", "the Net's layers and shapes (`python -m bench.draw_net`)"),
    ("computation_graph.png", "the computation graph from input to loss (`python -m bench.draw_net`)"),
]


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

    rows, sgemm = {}, {}
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
            }
            if info["mode"] == "sgemm":
                gflops = row["flops"] / median / 1e9
                sgemm[row["device"]] = max(gflops, sgemm.get(row["device"], 0.0))
                continue
            row.update(
                backend=str(info["backend"]), batch=int(info["batch_size"]),
                setup=info.get("setup_seconds"), first_call=info.get("first_call_seconds"),
                agreement=info.get("agreement"), max_error=info.get("agreement_max_abs_error"),
                options={k: v for k, v in info.items() if k.startswith("backend_")},
            )
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as error:
            raise ValueError(f"benchmark {bench.get('name', '?')!r} is malformed ({error!r})") from None
        rows[(row["mode"], row["device"], row["batch"], row["backend"])] = row
    if not rows:
        raise ValueError("not a lenet-bench run (no train/forward benchmarks with extra_info)")

    try:
        when = datetime.fromisoformat(data["datetime"])
    except (KeyError, TypeError, ValueError):
        when = datetime.fromtimestamp(os.path.getmtime(path)).astimezone()
    machine = data.get("machine_info") if isinstance(data.get("machine_info"), dict) else {}
    commit = data.get("commit_info") if isinstance(data.get("commit_info"), dict) else {}
    return {"path": path, "name": os.path.basename(path), "datetime": when, "machine": machine,
            "commit": commit, "rows": rows, "sgemm": sgemm, "benchmarks": data["benchmarks"]}


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
    runs = load_runs(storage)
    if len(runs) < count:
        found = f"only {len(runs)} usable run" if runs else "no usable benchmark runs"
        raise RunError(f"{found} in {storage}; save one with `pytest bench --benchmark-only`")
    return runs


def speedup(run, key):
    """Eager's median over this backend's, same mode, device and batch size, same run."""
    mode, device, batch, _ = key
    eager = run["rows"].get((mode, device, batch, BASELINE))
    return eager["median"] / run["rows"][key]["median"] if eager else None


def backends_of(run):
    """Backend names in a stable order: eager first, then as they appear in the run."""
    names = {}
    for _, _, _, backend in run["rows"]:
        names.setdefault(backend, None)
    return sorted(names, key=lambda name: name != BASELINE)


def groups_of(run):
    """(mode, device) pairs present in the run, in report order."""
    pairs = {(mode, device) for mode, device, _, _ in run["rows"]}
    return sorted(pairs, key=lambda pair: (list(MODES).index(pair[0]) if pair[0] in MODES else 99, pair[1]))


def cpu_model(machine):
    cpu = machine.get("cpu") if isinstance(machine.get("cpu"), dict) else {}
    return machine.get("cpu_model") or cpu.get("brand_raw") or machine.get("processor") or "unknown CPU"


# -----------------------------------------------------------------------------
# formatting

def ms(seconds):
    return f"{seconds * 1e3:.3g}" if seconds is not None and math.isfinite(seconds) else "-"


def secs(seconds):
    return f"{seconds:.3g}" if isinstance(seconds, (int, float)) else "-"


def num(value):
    return f"{value:.2f}" if value >= 0.995 else f"{value:.2g}"  # 12.34, 1.00, 0.67, 0.0021


def agreement_text(row):
    if row["agreement"] is None:
        return "not checked"
    text = str(row["agreement"])
    if row["max_error"] is not None:
        text += f" (max abs err {float(row['max_error']):.1e})"
    return text


def failed(row):
    return row["agreement"] is not None and str(row["agreement"]).lower() != "pass"


def speedup_text(run, key):
    value = speedup(run, key)
    text = "n/a (no eager)" if value is None else f"{num(value)}x"
    if failed(run["rows"][key]):
        text += " FAIL"  # never a bare speedup for a backend that disagrees with the reference
    return text


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def reproduce_command(run):
    keys = run["rows"].keys()
    backends = backends_of(run)
    batches = sorted({batch for _, _, batch, _ in keys})
    devices = sorted({device for _, device, _, _ in keys})
    modes = [mode for mode in MODES if any(key[0] == mode for key in keys)]
    options = next((b.get("options", {}) for b in run["benchmarks"] if isinstance(b, dict)), {})
    command = (f"PYTHONPATH=. python -m pytest bench --benchmark-only --backends={','.join(backends)} "
               f"--batch-sizes={','.join(map(str, batches))} --devices={','.join(devices)} "
               f"--modes={','.join(modes)}")
    if options.get("min_rounds") is not None:
        command += f" --benchmark-min-rounds={options['min_rounds']}"
    if options.get("max_time") is not None:
        command += f" --benchmark-max-time={options['max_time']}"
    return command


def render_markdown(run, charts):
    machine, commit = run["machine"], run["commit"]
    threads = machine.get("torch_threads")
    versions = ", ".join(f"{k} {machine[k]}" for k in VERSION_KEYS if machine.get(k))
    commit_text = commit.get("id", "unknown")[:12] + (" (uncommitted changes)" if commit.get("dirty") else "")
    lines = [
        "# LeNet benchmark report",
        "",
        f"- Run: `{run['path']}`",
        f"- Date: {run['datetime'].isoformat(timespec='seconds')}, commit {commit_text}",
        f"- Machine: {cpu_model(machine)}, {machine.get('cpu_count', '?')} CPUs, "
        f"{threads if threads is not None else '?'} torch threads"
        + (f", GPU {machine['cuda_device']}" if machine.get("cuda_device") else ""),
        f"- Versions: {versions or 'unknown'}",
        f"- Reproduce: `{reproduce_command(run)}`, then `python -m bench.report`",
        "",
        "Speedup is eager's median time over the backend's, same run, mode, device and batch size "
        "(above 1 is faster than eager). GFLOP/s is the FLOPs of the timed unit (convolutions and "
        "matrix multiplies, from `torch.utils.flop_counter`) over the median time; \"of sgemm\" sets it "
        "against a 1024x1024 float32 matrix multiply timed in the same run on the same device. "
        "Setup (export, scripting, session creation; once per backend and device) and the first call "
        "(compilation, first allocation) are never part of the timed rounds. \"FAIL\" beside a speedup "
        "means the backend's numbers disagree with the float64 reference: do not trust that speedup.",
        "",
    ]

    # the main table, for the README to quote: training step, backend x batch size
    main_rows = []
    batches = sorted({key[2] for key in run["rows"] if key[0] == MAIN_TABLE_MODE})
    for mode, device in groups_of(run):
        if mode != MAIN_TABLE_MODE:
            continue
        for backend in backends_of(run):
            cells = []
            for batch in batches:
                key = (mode, device, batch, backend)
                cells.append(f"{ms(run['rows'][key]['median'])} ms ({speedup_text(run, key)})"
                             if key in run["rows"] else "-")
            if any(cell != "-" for cell in cells):
                main_rows.append([backend, device, *cells])
    if main_rows:
        lines += [f"## Main table: {MODES[MAIN_TABLE_MODE].lower()}, median time (speedup against eager)",
                  "", "<!-- main-table:start -->",
                  markdown_table(["backend", "device", *(f"batch {b}" for b in batches)], main_rows),
                  "<!-- main-table:end -->", ""]

    lines += targets_section(run)

    header = ["backend", "batch", "median ms", "IQR ms", "vs eager", "GFLOP/s", "of sgemm",
              "setup s", "first call s", "agreement"]
    for mode, device in groups_of(run):
        sgemm = run["sgemm"].get(device)
        rows = []
        keys = sorted((key for key in run["rows"] if key[:2] == (mode, device)),
                      key=lambda key: (backends_of(run).index(key[3]), key[2]))
        for key in keys:
            row = run["rows"][key]
            gflops = row["flops"] / row["median"] / 1e9
            rows.append([row["backend"], row["batch"], ms(row["median"]), ms(row["iqr"]),
                         speedup_text(run, key), num(gflops),
                         f"{num(100 * gflops / sgemm)}%" if sgemm else "-",
                         secs(row["setup"]), secs(row["first_call"]), agreement_text(row)])
        title = MODES.get(mode, mode)
        lines += [f"## {title}, {device}", ""]
        lines.append(f"sgemm reference on {device}: {sgemm:.1f} GFLOP/s." if sgemm
                     else f"No sgemm reference on {device} in this run.")
        lines += ["", markdown_table(header, rows), ""]
        options = {(row["backend"], k, str(v)) for key in keys for row in [run["rows"][key]]
                   for k, v in row["options"].items()}
        if options:
            lines += ["Backend options: " + "; ".join(f"{b} {k.removeprefix('backend_')}={v}"
                                                     for b, k, v in sorted(options)), ""]
        if (mode, device) in charts:
            lines += [f"![{title}, {device}]({charts[(mode, device)]})", ""]
    return "\n".join(lines)


def targets_section(run):
    """The project's performance targets, checked against this run's training-step rows.
    Only backends that agree with the float64 reference count."""
    lines = []
    for device in sorted({key[1] for key in run["rows"] if key[0] == "train"}):
        rows = {key: row for key, row in run["rows"].items()
                if key[:2] == ("train", device) and not failed(row)}
        speedups = {key: speedup(run, key) for key in rows if key[3] != BASELINE and speedup(run, key)}
        table = []

        batch_1 = [key for key in speedups if key[2] == 1]
        if batch_1:
            best = max(batch_1, key=speedups.get)
            table.append(["batch-1 training step: the fastest backend at least 8x faster than eager",
                          f"{best[3]} {num(speedups[best])}x", "yes" if speedups[best] >= 8 else "no"])

        sgemm = run["sgemm"].get(device)
        batch_256 = [key for key in rows if key[2] == 256]
        if batch_256 and sgemm:
            best = max(batch_256, key=lambda key: rows[key]["flops"] / rows[key]["median"])
            share = rows[best]["flops"] / rows[best]["median"] / 1e9 / sgemm
            table.append(["batch-256 training step: at least 50% of the same run's sgemm GFLOP/s",
                          f"{best[3]} {num(100 * share)}% of {sgemm:.0f} GFLOP/s",
                          "yes" if share >= 0.5 else "no"])

        compiled = sorted({key[3] for key in speedups if key[3].startswith("compile")})
        checks = [(name, f"torch.compile ({name}) not slower than eager at any batch", 1.0)
                  for name in compiled]
        if any(key[3] == "aotinductor" for key in speedups):  # Inductor too, compiled ahead of time
            checks.append(("aotinductor", "Inductor ahead of time (aotinductor) not slower than eager at "
                                          "any batch", 1.0))
        checks.append(("onnxruntime", "ONNX Runtime training step faster than eager at every batch",
                       1.0 + 1e-9))
        for backend, label, needed in checks:
            mine = {key[2]: value for key, value in speedups.items() if key[3] == backend}
            if mine:
                worst = min(mine, key=mine.get)
                table.append([label, f"slowest {num(mine[worst])}x (batch {worst})",
                              "yes" if mine[worst] >= needed else "no"])
        if table:
            lines += [f"## Performance targets, training step, {device}", "",
                      markdown_table(["target", "measured in this run", "met"], table), "",
                      "Where the time goes: the profile summary below and [PROFILE.md](PROFILE.md); "
                      "what was tried for each backend, kept and dropped: "
                      "[README.md](../README.md#what-was-tried-for-speed).",
                      ""]
    return lines


# -----------------------------------------------------------------------------
# output

def draw_chart(run, mode, device, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    backends = backends_of(run)
    colors = {name: plt.cm.tab10(i % 10) for i, name in enumerate(backends)}
    keys = [key for key in run["rows"] if key[:2] == (mode, device)]
    batches = sorted({key[2] for key in keys})
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))

    for backend in backends:
        points = sorted((key[2], run["rows"][key]["median"] * 1e3) for key in keys if key[3] == backend)
        if points:
            fail = any(failed(run["rows"][key]) for key in keys if key[3] == backend)
            left.plot(*zip(*points, strict=True), marker="o", color=colors[backend],
                      linestyle="--" if fail else "-", label=backend + (" (agreement FAIL)" if fail else ""))
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xticks(batches, [str(b) for b in batches])
    left.minorticks_off()
    left.set_xlabel("batch size")
    left.set_ylabel("median time per call (ms)")
    left.set_title("time per call (log-log)")
    left.grid(True, which="both", alpha=0.3)
    left.legend()

    others = [b for b in backends if b != BASELINE and any(key[3] == b for key in keys)]
    width = 0.8 / max(len(others), 1)
    values = [1.0]
    for i, backend in enumerate(others):
        for j, batch in enumerate(batches):
            key = (mode, device, batch, backend)
            value = speedup(run, key) if key in run["rows"] else None
            if value is None:
                continue
            fail = failed(run["rows"][key])
            values.append(value)
            x = j - 0.4 + width * (i + 0.5)
            right.bar(x, value - 1, width, bottom=1, color=colors[backend],  # from 1: up is faster
                      hatch="//" if fail else None, edgecolor="black" if fail else colors[backend],
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
    right.set_title(f"speedup against {BASELINE}, same run")
    right.grid(True, axis="y", which="both", alpha=0.3)
    right.legend()

    machine = run["machine"]
    for ax in (left, right):  # plain numbers on the log axes: 0.5, 1, 2, 5, 10, not 10^0
        ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())

    fig.suptitle(f"{MODES.get(mode, mode)}, {device}: {cpu_model(machine)}, "
                 f"{machine.get('torch_threads', '?')} threads, torch {machine.get('torch', '?')} "
                 f"({run['name'][:4]})")
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def write_report(run, out):
    os.makedirs(out, exist_ok=True)
    charts, written = {}, []
    for mode, device in groups_of(run):
        name = f"{mode}_{device}.png"
        draw_chart(run, mode, device, os.path.join(out, name))
        charts[(mode, device)] = name
        written.append(os.path.join(out, name))
    text = render_markdown(run, charts)
    profile = os.path.join(out, "PROFILE.md")
    if os.path.exists(profile):  # the profile's own summary table: where each backend's time goes
        with open(profile, encoding="utf-8") as f:
            summary = f.read().partition("## Summary\n")[2].partition("\n## ")[0].strip()
        if summary:
            text += ("\n## Where the time goes (from PROFILE.md, its own run)\n\n" + summary + "\n\n"
                     "Coverage below 100% is time spent outside every op: Python, dispatch, autograd and "
                     "Dynamo guards. It is what separates the batch-1 speedups from the 8x target.\n")
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
    parser.add_argument("--out", type=harness.output_folder, default=DEFAULT_OUT,
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
    print(f"report of {run['path']}: wrote {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
