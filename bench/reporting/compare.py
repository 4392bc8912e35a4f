"""Compare two saved benchmark runs by each backend's paired speedup against eager within its run.

    python -m bench.compare                      # the latest run against the one before it
    python -m bench.compare 0003                 # run 0003 (the baseline) against the latest
    python -m bench.compare BASELINE CANDIDATE   # NNNN prefixes or paths to the JSON files

On a noisy or shared machine the absolute times of two runs drift together, so this compares
each backend's speedup against eager in its own run (paired; see bench/measure/timing.py), cell by cell
(mode, device, batch size, thread count). Part of the noise is fixed per process, so the rule
works on processes: the change (baseline speedup over candidate speedup, minus 1) gets a 95%
interval from Welch's t over each run's worker processes (their log medians), the units each
run's own interval is made of. A backend has regressed when its median speedup fell by more
than --threshold (default 10%) and that interval lies wholly above 0; the exit status is then
1, else 0. A candidate with an agreement FAIL (its numbers disagree with float64,
bench/measure/agreement.py) also exits 1. A change past the threshold whose interval reaches 0
is printed as undecided, not judged; so is every
change between runs that timed a cell in one process only (runs saved before worker processes,
or --quick): one process cannot tell a regression from its own luck. Eager itself cannot be
judged this way (a slower eager makes every other backend look better); its times are printed
for information. Interrupted runs are left out of the defaults; name one to use it.

For absolute comparisons use pytest-benchmark's own tools on the same storage:
`pytest-benchmark --storage results/benchmarks compare 0001 0002`, or fail a new run against a
saved one with `pytest bench --benchmark-only --benchmark-compare=0001
--benchmark-compare-fail=median:10%`.
"""

import argparse
import sys

from bench import cli
from bench.backends import EAGER
from bench.measure.timing import change_interval
from bench.record import verified
from bench.reporting.format import display_path, threads_text
from bench.runs.load import (
    DEFAULT_STORAGE,
    VERSION_KEYS,
    RunError,
    cpu_of,
    failed,
    find_run,
    require_runs,
    speedup,
    speedup_interval,
)
from bench.runs.verdict import MET, verdict

MACHINE_KEYS = ["machine", "cpu_count", "torch_threads", "cuda_device"]


def machine_differences(base, cand):
    """What tells the two runs' machines apart, in a few words; empty when they look the same."""
    a, b = base["machine"], cand["machine"]
    diffs = []
    if cpu_of(a) != cpu_of(b):
        diffs.append(f"cpu {cpu_of(a)!r} vs {cpu_of(b)!r}")
    diffs += [f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in MACHINE_KEYS if a.get(k) != b.get(k)]
    return diffs


def pick_runs(names, storage):
    if len(names) == 2:
        return find_run(names[0], storage), find_run(names[1], storage)
    if len(names) == 1:
        return find_run(names[0], storage), require_runs(storage)[-1]
    runs = require_runs(storage, 2)
    return runs[-2], runs[-1]


def judge(base, cand, key, threshold):
    """(change, verdict) of one backend between two runs: change is how much slower against eager
    the candidate is (0.12 = 12% slower); verdict "REGRESSION", "undecided" or ""."""
    change = speedup(base, key) / speedup(cand, key) - 1
    if change <= threshold:
        return change, ""
    ratios = [run["rows"][key].pair_ratios for run in (base, cand)]
    if not all(groups and len(groups) >= 2 for groups in ratios):  # one process: its luck is unmeasured
        return change, "undecided"
    regressed = verdict(*change_interval(*ratios), 0.0, strict=True)  # slower: a change above 0
    return change, "REGRESSION" if regressed == MET else "undecided"


def interval_cell(run, key):
    interval = speedup_interval(run, key)
    if interval is None:
        return f"{speedup(run, key):.3g}"
    return f"{interval[0]:.3g} [{interval[1]:.3g}, {interval[2]:.3g}]"


def compare_runs(base, cand, threshold):
    """Print the comparison; return the regressions as (key, change) pairs."""
    for label, run in (("baseline: ", base), ("candidate:", cand)):
        note = " (interrupted run)" if run["interrupted"] else ""
        print(f"{label} {display_path(run['path'])} ({run['datetime'].isoformat(timespec='seconds')}){note}")
    if base["path"] == cand["path"]:
        print("note: baseline and candidate are the same file")
    diffs = machine_differences(base, cand)
    if diffs:
        print(f"note: the runs come from different machines ({'; '.join(diffs)}); "
              "comparing speedups against eager anyway")
    versions = [f"{k} {base['machine'].get(k)} -> {cand['machine'].get(k)}" for k in VERSION_KEYS
                if base["machine"].get(k) != cand["machine"].get(k)]
    if versions:
        print(f"note: versions differ: {', '.join(versions)}")

    keys = sorted(base["rows"].keys() & cand["rows"].keys(),
                  key=lambda k: (k.mode != "train", k.device, k.threads, k.batch, k.backend != EAGER,
                                 k.backend))
    only = len(base["rows"].keys() ^ cand["rows"].keys())
    print(f"\n{'mode':8} {'device':6} {'threads':>7} {'batch':>5} {'backend':20} {'base ms':>9} "
          f"{'cand ms':>9} {'base speedup [95%]':>24} {'cand speedup [95%]':>24} {'change':>7}")
    regressions, undecided = [], []
    for key in keys:
        mode, device, batch, backend, threads = key
        b, c = base["rows"][key].time, cand["rows"][key].time
        line = f"{mode:8} {device:6} {threads:>7} {batch:>5} {backend:20} {b * 1e3:>9.4g} {c * 1e3:>9.4g}"
        eager_key = key.eager()
        if backend == EAGER:
            line += f" {'':>24} {'':>24} {c / b - 1:>+7.0%}  (absolute, not judged)"
        elif eager_key in base["rows"] and eager_key in cand["rows"]:
            change, verdict = judge(base, cand, key, threshold)
            line += f" {interval_cell(base, key):>24} {interval_cell(cand, key):>24} {change:>+7.0%}"
            if verdict:
                line += f"  {verdict}"
                (regressions if verdict == "REGRESSION" else undecided).append((key, change))
        else:
            line += "  (no eager to compare against)"
        if cand["rows"][key].agreement is not None and not verified(cand["rows"][key].agreement):
            line += f"  agreement {cand['rows'][key].agreement}"
        print(line)
    if only:
        print(f"({only} benchmarks are in only one of the two runs and are not compared)")

    print()
    if undecided:
        listed = ", ".join(f"{cell_label(key)} (+{ch:.0%})" for key, ch in undecided)
        print(f"{len(undecided)} undecided (slower past {threshold:.0%}, but the change's interval "
              f"reaches 0, or a run timed it in one process only): {listed}")
    if regressions:
        listed = ", ".join(f"{cell_label(key)} (+{ch:.0%})" for key, ch in regressions)
        print(f"{len(regressions)} regression(s) past {threshold:.0%} relative to eager: {listed}")
    else:
        print(f"no regressions past {threshold:.0%} relative to eager ({len(keys)} benchmarks compared)")
    return regressions


def cell_label(key):
    mode, device, batch, backend, threads = key
    return f"{mode} {device} {threads_text(threads)} batch={batch} {backend}"


def agreement_failures(run):
    """Every benchmark of `run` whose agreement verdict is a FAIL, labelled as `cell_label` does."""
    return [cell_label(key) for key, row in sorted(run["rows"].items())
            if failed(row)]


def main(argv=None):
    doc = __doc__.split("\n\n")
    parser = cli.Parser(prog="python -m bench.compare", description=doc[0] + "\n\n" + doc[2],
                                     epilog=doc[3], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("baseline", nargs="?", help="baseline run: NNNN prefix or JSON path "
                        "(default: the run before the latest)")
    parser.add_argument("candidate", nargs="?", help="candidate run (default: the latest)")
    parser.add_argument("--threshold", type=float, default=0.10,
                        help="flag a backend whose speedup against eager fell by more than this, with "
                        "the change's interval above 0 (default: %(default)s)")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="saved runs (default: %(default)s)")
    try:
        args = parser.parse_args(argv)
        if not args.threshold >= 0 or args.threshold == float("inf"):
            raise cli.UsageError(f"--threshold must be a finite number >= 0, got {args.threshold}")
        base, cand = pick_runs([n for n in (args.baseline, args.candidate) if n], args.storage)
    except (cli.UsageError, RunError) as error:
        print(f"{cli.prog('python -m bench.compare')}: error: {error}", file=sys.stderr)
        return 2
    regressions = compare_runs(base, cand, args.threshold)
    disagreeing = agreement_failures(cand)
    if disagreeing:
        print(f"agreement FAIL in the candidate (its numbers disagree with float64; do not trust its "
              f"speedups): {', '.join(disagreeing)}")
    return 1 if regressions or disagreeing else 0


if __name__ == "__main__":
    sys.exit(main())
