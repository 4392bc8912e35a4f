"""Do the speedups hold still? Several saved runs of the main command, side by side.

    python -m bench.calibration                  # the three latest complete runs
    python -m bench.calibration 0011 0012 0013   # named runs (NNNN prefixes or JSON paths)

For every cell (mode, backend, device, thread count, batch size) present in all the runs: each
run's paired speedup against eager with its 95% interval, and the two-sample test of every pair of
runs: two runs of unchanged code agree on a cell when |log m1 - log m2| <= 1.96 sqrt(se1^2 + se2^2),
se being each run's interval half-width in log space over 1.96; calibrated intervals make that hold
for 95% of (cell, run pair). Also: the spread (largest median over smallest), the variance at each
level of repetition (pairs within a process, processes within a run, runs) and the pairs per
process that Kalibera and Jones's rule picks from them, and what bench.compare says between every
two of the runs and of a 20% slowdown injected into each backend in turn. Writes calibration.md
and calibration.json into --out (default results/); the report copies its summary.
"""

import copy
import itertools
import json
import math
import os
import statistics
import sys

import numpy as np

from bench import cli, files
from bench.backends import EAGER
from bench.cli import Parser, UsageError
from bench.reporting.format import NOISY_MARK, display_path, interval_text, markdown_table
from bench.runs.load import DEFAULT_OUT, DEFAULT_STORAGE, RunError, find_run, require_runs, speedup_interval
from bench.runs.verdict import verdict
from bench.session import MODES

# What the timing method aims for over repeated runs of unchanged code: at least CONSISTENT of
# (cell, run pair) consistent by the two-sample test at 95%. Measured here and reported, never
# enforced by a timed test.
CONSISTENT = 0.95
Z95 = 1.959964
INJECTED_SLOWDOWN = 1.2


def cells_of(runs, mode=None):
    """Non-eager keys paired in every run (of `mode`, or every mode), in the report's order."""
    common = set.intersection(*(set(run["rows"]) for run in runs))
    keys = [key for key in common if (mode is None or key.mode == mode) and key.backend != EAGER
            and all(speedup_interval(run, key) for run in runs)]
    order = list(MODES)
    return sorted(keys, key=lambda key: (order.index(key.mode) if key.mode in order else 9,
                                         key.device, key.threads, key.batch, key.backend))


def log_se(interval):
    """A 95% interval's standard error in log space."""
    _, low, high = interval
    return (math.log(high) - math.log(low)) / (2 * Z95)


def two_sample_z(a, b):
    """|log m1 - log m2| / sqrt(se1^2 + se2^2) of two runs' intervals of one cell."""
    spread = math.hypot(log_se(a), log_se(b))
    return abs(math.log(a[0]) - math.log(b[0])) / spread if spread > 0 else math.inf


def calibrate(runs):
    """Per cell: the runs' intervals, spread, and the two-sample z of every pair of runs."""
    cells = []
    for key in cells_of(runs):
        intervals = [speedup_interval(run, key) for run in runs]
        medians = [median for median, _, _ in intervals]
        z = [two_sample_z(a, b) for a, b in itertools.combinations(intervals, 2)]
        processes = [p for run in runs for p in (run["rows"][key].process_speedups or [])]
        several = len(processes) > len(runs)  # some run had more than one process per cell
        cells.append({"mode": key.mode, "device": key.device, "batch_size": key.batch, "backend": key.backend,
                      "threads": key.threads, "processes": len(processes),
                      "process_spread": max(processes) / min(processes) if several else None,
                      "intervals": intervals,
                      "noisy": [bool(run["rows"][key].noisy) for run in runs],
                      "spread": max(medians) / min(medians), "z": z,
                      "consistent": sum(value <= Z95 for value in z), "pairs": len(z)})
    return cells


def variance_components(runs):
    """The median over cells of the variance at each level, in log space: of one pair's ratio
    within a process, of a process's median within a run, of a run's speedup; and the cost of a
    pair and of a process per cell (seconds), with the pairs per process Kalibera and Jones's rule
    gives: sqrt(process cost / pair cost * pair variance / process variance)."""
    pair_var, process_var, run_var, pairs_per_process = [], [], [], []
    for key in cells_of(runs):
        groups = [[np.log(g) for g in run["rows"][key].pair_ratios or [] if len(g) > 1]
                  for run in runs]
        if not all(len(g) > 1 for g in groups):
            continue
        pair_var.append(statistics.median(float(np.var(g, ddof=1)) for run in groups for g in run))
        medians = [[float(np.median(g)) for g in run] for run in groups]
        n = statistics.median(len(g) for run in groups for g in run)
        pairs_per_process.append(n)
        within = statistics.median(float(np.var(m, ddof=1)) for m in medians)
        process_var.append(max(within - math.pi / 2 * pair_var[-1] / n, 0.0))  # less the median's own noise
        run_var.append(float(np.var([np.mean(m) for m in medians], ddof=1)))
    if not pair_var:
        return None
    out = {"pair_variance": statistics.median(pair_var),
           "process_variance": statistics.median(process_var),
           "run_variance": statistics.median(run_var),
           "pairs_per_process": statistics.median(pairs_per_process)}
    costs = [cost for run in runs for cost in [_costs(run)] if cost]
    if costs:
        out["pair_seconds"] = statistics.median(c[0] for c in costs)
        out["process_seconds_per_cell"] = statistics.median(c[1] for c in costs)
        if out["process_variance"] > 0:
            out["optimal_pairs_per_process"] = math.sqrt(
                out["process_seconds_per_cell"] / out["pair_seconds"] * out["pair_variance"]
                / out["process_variance"])
    return out


def _costs(run):
    """(seconds of one pair, seconds of a worker's setup per cell it times) from the run's worker log."""
    workers = [w for w in run.get("workers") or [] if len(w.get("group", [])) == 3 and w.get("phases")]
    pairs = sum(len(g) for row in run["rows"].values() for g in row.pair_ratios or [])
    cells = sum(1 for key in run["rows"] if key.mode in MODES)
    if not workers or not pairs or not cells:
        return None
    timing = sum(w["phases"].get("timing", 0.0) for w in workers)
    overhead = sum(w["seconds"] for w in workers) - timing
    per_worker_cells = cells / len({tuple(w["group"]) for w in workers})
    return timing / pairs, overhead / len(workers) / per_worker_cells


def compare_check(runs, threshold=0.10):
    """What bench.compare says of every ordered pair of the runs (its regressions), and of each
    backend slowed by INJECTED_SLOWDOWN in a copy of the last run (how many of its cells it flags)."""
    from bench.reporting import compare

    def regressions(base, cand):
        return [k for k in base["rows"].keys() & cand["rows"].keys()
                if k.backend != EAGER and compare.judge(base, cand, k, threshold)[1] == "REGRESSION"]

    false_alarms = {f"{a['name'][:4]}->{b['name'][:4]}": len(regressions(a, b))
                    for a, b in itertools.permutations(runs, 2)}
    injected = {}
    for backend in sorted({key.backend for key in runs[-1]["rows"]} - {EAGER}):
        slowed = copy.deepcopy(runs[-1])
        keys = [key for key in slowed["rows"] if key.backend == backend and key.mode in MODES]
        for key in keys:
            row = slowed["rows"][key]
            row.paired = tuple(v / INJECTED_SLOWDOWN for v in row.paired) if row.paired else None
            row.pair_ratios = [[r / INJECTED_SLOWDOWN for r in g] for g in row.pair_ratios or []]
        found = regressions(runs[0], slowed)
        injected[backend] = [sum(key in found for key in keys), len(keys)]
    return {"false_alarms": false_alarms, "injected": injected}


def summary(runs, cells):
    spreads = sorted(cell["spread"] for cell in cells)
    z = [value for cell in cells for value in cell["z"]]
    return {"runs": [display_path(run["path"]) for run in runs], "cells": len(cells),
            "spread_median": spreads[len(spreads) // 2] if spreads else None,
            "spread_max": spreads[-1] if spreads else None,
            "consistent": sum(value <= Z95 for value in z) / len(z) if z else None,
            "median_abs_z": statistics.median(z) if z else None,
            "session_seconds": [run.get("session_seconds") for run in runs],
            "compile_cache_misses": [run.get("compile_cache_misses") for run in runs],
            "variance": variance_components(runs), "compare": compare_check(runs)}


def consistency(cells):
    """(share of (cell, run pair) consistent, how many, median |z|) over `cells`."""
    z = [value for cell in cells for value in cell["z"]]
    return sum(value <= Z95 for value in z) / len(z), len(z), statistics.median(z)


def target_rows(cells):
    """One row of the summary table per thread count (every mode), the modes' shares beside it."""
    rows = []
    for threads in sorted({cell["threads"] for cell in cells}):
        group = [cell for cell in cells if cell["threads"] == threads]
        share, pairs, median_z = consistency(group)
        modes = ", ".join(f"{mode} {consistency([c for c in group if c['mode'] == mode])[0]:.0%}"
                          for mode in MODES if any(c["mode"] == mode for c in group))
        rows.append(f"| {threads} thread{'s' * (threads != 1)}: (cell, run pair) consistent by the "
                    f"two-sample test, at least {CONSISTENT:.0%} | {share:.0%} of {pairs} ({modes}; median "
                    f"abs z {median_z:.2f}, calibrated: 0.67) | {verdict(share, share, CONSISTENT)} |")
    return rows


def render(runs, cells, totals):
    names = [run["name"][:4] for run in runs]
    rows = [[cell["mode"], cell["backend"], cell["threads"], cell["batch_size"],
             *[interval_text(interval) + (f" {NOISY_MARK}" if noisy else "")
               for interval, noisy in zip(cell["intervals"], cell["noisy"])],
             f"{cell['spread']:.2f}", f"{cell['consistent']}/{cell['pairs']}",
             "-" if cell["process_spread"] is None else f"{cell['process_spread']:.2f} ({cell['processes']})"]
            for cell in cells]
    summary_rows = target_rows(cells)
    durations = ", ".join(
        f"{name}: {seconds:.0f} s ({'cold' if misses else 'warm'} compile cache)" if seconds is not None
        else f"{name}: -"
        for name, seconds, misses in zip(names, totals["session_seconds"], totals["compile_cache_misses"]))
    checked = totals["compare"]
    alarms = sum(checked["false_alarms"].values())
    injected = "; ".join(f"{backend} {found} of {cells}"
                         for backend, (found, cells) in checked["injected"].items())
    compare_line = (f"`bench.compare` between every two of these runs ({len(checked['false_alarms'])} "
                    f"ordered pairs): {alarms} regression{'s' * (alarms != 1)} flagged. With one backend of "
                    f"the last run made {INJECTED_SLOWDOWN - 1:.0%} slower at a time, against the first run, "
                    f"the cells of that backend it flags: {injected}.")
    lines = [
        "# Calibration: the same command, run after run",
        "",
        f"Runs: {', '.join(f'`{path}`' for path in totals['runs'])}.",
        "",
        "Every cell's paired speedup against eager [95% interval] per run. Two runs of unchanged code "
        "agree on a cell when |log m1 - log m2| <= 1.96 sqrt(se1^2 + se2^2), se from each run's interval "
        "in log space; calibrated intervals make that hold for 95% of (cell, run pair), with a median "
        "|z| of 0.67. Spread: the largest of the runs' medians over the smallest; process spread: the "
        "largest over the smallest of every worker process's own median (how many processes).",
        "",
        "<!-- summary:start -->",
        f"| target ({len(runs)} runs of the main command) | measured | answer |",
        "|---|---|---|",
        *summary_rows,
        "",
        compare_line,
        "",
        f"Main command's duration: {durations}.",
        "",
        *variance_lines(totals["variance"]),
        "<!-- summary:end -->",
        "",
        markdown_table(["mode", "backend", "threads", "batch", *names, "spread", "consistent",
                        "process spread"], rows),
        "",
    ]
    return "\n".join(lines)


def variance_lines(variance):
    if not variance:
        return []
    text = (f"Variance at each level (median over cells, log space): one pair's ratio within a process "
            f"{variance['pair_variance']:.2g}, a process's median within a run "
            f"{variance['process_variance']:.2g}, a run's speedup {variance['run_variance']:.2g}; "
            f"{variance['pairs_per_process']:.0f} pairs per process were timed.")
    if "optimal_pairs_per_process" in variance:
        text += (f" A pair costs {variance['pair_seconds'] * 1e3:.0f} ms and a worker's setup "
                 f"{variance['process_seconds_per_cell']:.2f} s per cell it times, so Kalibera and Jones's "
                 f"rule, sqrt(process cost / pair cost x pair variance / process variance), asks for "
                 f"{variance['optimal_pairs_per_process']:.0f} pairs per process; past that, precision comes "
                 "cheaper from more processes than from longer ones.")
    return [text, ""]


def main(argv=None):
    parser = Parser(prog="python -m bench.calibration", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", help="runs to set side by side: NNNN prefixes or JSON paths "
                        "(default: the three latest complete runs)")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="saved runs (default: %(default)s)")
    parser.add_argument("--out", type=cli.output_folder, default=DEFAULT_OUT,
                        help="where calibration.md and .json go (default: %(default)s)")
    try:
        args = parser.parse_args(argv)
        if args.runs:
            runs = [find_run(name, args.storage) for name in args.runs]
        else:
            runs = require_runs(args.storage, 3)[-3:]
        if len(runs) < 2:
            raise UsageError("give at least two runs")
        cells = calibrate(runs)
        if not cells:
            raise RunError("no training-step cell with a paired speedup is in every one of these runs")
    except (UsageError, RunError) as error:
        print(f"{cli.prog('python -m bench.calibration')}: error: {error}", file=sys.stderr)
        return 2
    totals = summary(runs, cells)
    text = render(runs, cells, totals)
    files.write_text_atomic(os.path.join(args.out, "calibration.md"), text)
    files.write_text_atomic(os.path.join(args.out, "calibration.json"),
                              json.dumps({"summary": totals, "cells": cells}, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
