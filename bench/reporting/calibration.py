"""Do the speedups hold still? Several saved runs of the main command, side by side.

    python -m bench.calibration                  # the three latest complete runs
    python -m bench.calibration 0011 0012 0013   # named runs (NNNN prefixes or JSON paths)

For every training-step cell (backend, device, thread count, batch size) present in all the runs:
each run's paired speedup against eager with its 95% interval (over all its worker processes),
the spread (largest median over smallest), and how often one run's interval holds another run's
median; the summary is given for every thread count and over all. Writes calibration.md and
calibration.json into --out (default results/); the report copies its summary.
"""

import itertools
import json
import os
import sys

from bench import cli, files
from bench.backends import EAGER
from bench.cli import Parser, UsageError
from bench.reporting.format import NOISY_MARK, display_path, interval_text, markdown_table
from bench.runs.load import DEFAULT_OUT, DEFAULT_STORAGE, RunError, find_run, require_runs, speedup_interval
from bench.runs.verdict import verdict

# What the timing method aims for over repeated runs: each training-step speedup's medians within
# MAX_SPREAD (largest over smallest), and a run's 95% interval holding another run's median in at least
# MIN_COVERAGE of cases. Measured here and reported, never enforced by a timed test.
MAX_SPREAD = 1.10
MIN_COVERAGE = 0.90


def cells_of(runs, mode="train"):
    """Keys present, paired, in every run, non-eager; in the report's order."""
    common = set.intersection(*(set(run["rows"]) for run in runs))
    keys = [key for key in common if key[0] == mode and key[3] != EAGER
            and all(speedup_interval(run, key) for run in runs)]
    return sorted(keys, key=lambda key: (key[1], key[4], key[2], key[3]))


def calibrate(runs):
    """Per cell: the runs' intervals, spread, and coverage (run i's interval holds run j's median)."""
    cells = []
    for key in cells_of(runs):
        intervals = [speedup_interval(run, key) for run in runs]
        medians = [median for median, _, _ in intervals]
        holds = [low <= intervals[j][0] <= high
                 for (i, (_, low, high)), j in itertools.product(enumerate(intervals), range(len(runs)))
                 if i != j]
        processes = [p for run in runs for p in (run["rows"][key].get("process_speedups") or [])]
        several = len(processes) > len(runs)  # some run had more than one process per cell
        cells.append({"mode": key[0], "device": key[1], "batch_size": key[2], "backend": key[3],
                      "threads": key[4], "processes": len(processes),
                      "process_spread": max(processes) / min(processes) if several else None,
                      "intervals": intervals, "noisy": [bool(run["rows"][key].get("noisy")) for run in runs],
                      "spread": max(medians) / min(medians), "held": sum(holds), "pairs": len(holds)})
    return cells


def summary(runs, cells):
    spreads = sorted(cell["spread"] for cell in cells)
    held, pairs = sum(c["held"] for c in cells), sum(c["pairs"] for c in cells)
    within = sum(spread <= MAX_SPREAD for spread in spreads)
    return {"runs": [display_path(run["path"]) for run in runs], "cells": len(cells),
            "spread_median": spreads[len(spreads) // 2] if spreads else None,
            "spread_max": spreads[-1] if spreads else None,
            "cells_within_max_spread": within, "coverage": held / pairs if pairs else None,
            "session_seconds": [run.get("session_seconds") for run in runs],
            "compile_cache_misses": [run.get("compile_cache_misses") for run in runs]}


def target_rows(label, cells):
    """The two targets' rows of the summary table for `cells`."""
    spreads = sorted(cell["spread"] for cell in cells)
    within = sum(spread <= MAX_SPREAD for spread in spreads)
    held, pairs = sum(c["held"] for c in cells), sum(c["pairs"] for c in cells)
    coverage = held / pairs if pairs else 0.0
    return [
        f"| {label}: every training-step speedup's spread (max/min over runs) at most {MAX_SPREAD:.2f} | "
        f"{within} of {len(cells)} cells; median spread {spreads[len(spreads) // 2]:.2f}, "
        f"largest {spreads[-1]:.2f} | {verdict(spreads[-1], spreads[-1], MAX_SPREAD, above=False)} |",
        f"| {label}: a run's 95% interval holds the other runs' medians in at least {MIN_COVERAGE:.0%} of "
        f"cases | {coverage:.0%} | {verdict(coverage, coverage, MIN_COVERAGE)} |"]


def render(runs, cells, totals):
    names = [run["name"][:4] for run in runs]
    rows = [[cell["backend"], cell["threads"], cell["batch_size"],
             *[interval_text(interval) + (f" {NOISY_MARK}" if noisy else "")
               for interval, noisy in zip(cell["intervals"], cell["noisy"])],
             f"{cell['spread']:.2f}", f"{cell['held']}/{cell['pairs']}",
             "-" if cell["process_spread"] is None else f"{cell['process_spread']:.2f} ({cell['processes']})"]
            for cell in cells]
    by_threads = {}
    for cell in cells:
        by_threads.setdefault(cell["threads"], []).append(cell)
    summary_rows = [row for threads, group in sorted(by_threads.items())
                    for row in target_rows(f"{threads} thread{'s' * (threads != 1)}", group)]
    if len(by_threads) > 1:
        summary_rows += target_rows("all thread counts", cells)
    durations = ", ".join(
        f"{name}: {seconds:.0f} s ({'cold' if misses else 'warm'} cache)" if seconds is not None
        else f"{name}: -"
        for name, seconds, misses in zip(names, totals["session_seconds"], totals["compile_cache_misses"]))
    lines = [
        "# Calibration: the same command, run after run",
        "",
        f"Runs: {', '.join(f'`{path}`' for path in totals['runs'])}.",
        "",
        "Training step, every backend's paired speedup against eager, median [95% interval], per run; "
        "spread is the largest of the runs' medians over the smallest; held is how many times one "
        "run's interval holds another run's median; process spread is the largest over the smallest "
        "of every worker process's own median in these runs (how many processes), - for runs timed "
        "in one process per cell.",
        "",
        "<!-- summary:start -->",
        f"| target ({len(runs)} runs of the main command) | measured | answer |",
        "|---|---|---|",
        *summary_rows,
        "",
        f"Main command's duration: {durations}.",
        "",
        markdown_table(["backend", "threads", "batch", *names, "spread", "held", "process spread"], rows),
        "<!-- summary:end -->",
        "",
    ]
    return "\n".join(lines)


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
        print(f"python -m bench.calibration: error: {error}", file=sys.stderr)
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
