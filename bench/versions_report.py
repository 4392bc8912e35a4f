"""results/versions.md and results/versions.png: what each torch release did, from the runs
`lenet-bench versions` saved (those whose JSON has lenet_bench.versions) and the step records it
wrote in each release's venv (tests, the zero-gradient probe, the reproducer's output).

Written by `lenet-bench versions --report`; every figure in the page comes from those."""

import datetime
import json
import os
import subprocess

from bench import REPO
from bench.runs.load import CellKey, load_runs

COMMAND = "lenet-bench versions --report"


def release_key(version):
    return tuple(int(part) for part in version.split("."))


def versions_runs(store):
    """{release: {threads: run}}: the newest complete tagged run per release and thread count, as
    bench/runs/load.py reads it."""
    found = {}
    for run in load_runs(store):
        if not run["versions"] or run["interrupted"]:
            continue
        for count in {key.threads for key in run["rows"]}:
            found.setdefault(run["versions"]["torch_release"], {})[count] = run
    return found


def processes_of(run):
    """Worker processes per cell in a run: 1 for a --quick run, 3 for the default command."""
    return max((row.processes or 1 for row in run["rows"].values()), default=1)


def by_run(runs_of_release):
    """[(run, [threads it supplies])] for one release's {threads: run}, each run once."""
    found = {}
    for threads, run in sorted(runs_of_release.items()):
        found.setdefault(run["name"], (run, []))[1].append(threads)
    return list(found.values())


def run_text(run, threads):
    return (f"{run['name'][:4]} ({'+'.join(map(str, threads))} thr, {processes_of(run)} proc, "
            f"{run['session_seconds'] or 0:.0f} s)")


def form_text(runs):
    """What the runs are, for the page's opening: the default command, --quick, or some of each."""
    used = [run for release in runs.values() for run, _ in by_run(release)]
    quick = [run for run in used if processes_of(run) == 1]
    text = ("`pytest bench --benchmark-only`, the README's command (both thread counts, "
            f"{max(map(processes_of, used), default=3)} worker processes per cell; the interval of each "
            "speedup is over processes)" if len(quick) < len(used) else "")
    if quick:
        text += ("; " if text else "") + (
            "`pytest bench --benchmark-only --quick --threads N` for "
            + ", ".join(sorted({run['versions']['torch_release'] for run in quick}, key=release_key))
            + " (one worker process: its intervals are within one process and do not cover the "
            "process-to-process noise that docs/method.md measures, so a move there is a lead, not a "
            "verdict, until a default run repeats it)")
    return text + "."


def cells(run):
    """{CellKey: row} of the run's cells, and {threads: sgemm median seconds}."""
    sgemm = {threads: seconds for (_, threads), seconds in run["sgemm_seconds"].items()}
    return dict(run["rows"]), sgemm


def order(key):
    """The page's order of cells: by mode, backend, batch size and thread count, as text."""
    return str((key.mode, key.backend, key.batch, key.threads))


def speedup_text(row):
    if row is None:
        return "-"
    if row.paired is None:
        return f"{row.agreement or '?'}: not timed"
    verdict = "" if row.agreement == "pass" else f" {row.agreement}"
    median, low, high = row.paired
    return f"{median:.2f}x [{low:.2f}, {high:.2f}]{verdict}"


def changes(table, releases):
    """Cells where a release changed the agreement verdict, or moved the speedup beyond both
    intervals (each release's median outside the other's interval), between consecutive releases
    that both have the cell."""
    found = []
    for key in sorted({key for release in releases for key in table[release]}, key=order):
        have = [(release, table[release][key]) for release in releases if key in table[release]]
        for (r1, a), (r2, b) in zip(have, have[1:]):
            if a.agreement != b.agreement:
                found.append((key, r1, r2, f"verdict {a.agreement} -> {b.agreement}"))
            elif a.paired and b.paired and (
                    not a.paired[1] <= b.paired[0] <= a.paired[2]
                    and not b.paired[1] <= a.paired[0] <= b.paired[2]):
                found.append((key, r1, r2, f"speedup {speedup_text(a)} -> {speedup_text(b)}"))
    return found


def disk_gb(path):
    try:
        out = subprocess.run(["du", "-s", "--block-size=1", path], capture_output=True, text=True,
                             timeout=300)
        return int(out.stdout.split()[0]) / 1e9
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


COMMITTED_STEPS = os.path.join(REPO, "results", "versions_tests")  # step records kept past their venvs


def read_steps(path):
    try:
        with open(path) as f:
            return json.load(f)["steps"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def state_of(venvs, release):
    """What each step did for a release: the committed record (results/versions_tests/), with the
    venv's own record over it where the venv is still there (venvs are temporary, the record is not)."""
    return {**read_steps(os.path.join(COMMITTED_STEPS, f"torch-{release}-steps.json")),
            **read_steps(os.path.join(venvs, f"torch-{release}", "lenet-bench-versions.json"))}


def chart(table, releases, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [key for key in sorted({k for r in releases for k in table[r]}, key=order)
            if key.mode == "train" and key.backend != "eager"]
    backends = sorted({key.backend for key in keys})
    batches = sorted({key.batch for key in keys})
    threads = sorted({key.threads for key in keys})
    if not keys:
        return False
    fig, axes = plt.subplots(len(threads), len(batches), figsize=(4.2 * len(batches), 3.4 * len(threads)),
                             squeeze=False)
    width = 0.8 / max(len(releases), 1)
    medians = [table[r][k].paired[0] for r in releases for k in keys if k in table[r] and table[r][k].paired]
    limits = (min(medians + [1.0]) / 1.6, max(medians + [1.0]) * 1.6)
    colours = plt.get_cmap("viridis")
    for row, count in enumerate(threads):
        for col, batch in enumerate(batches):
            ax = axes[row][col]
            for i, release in enumerate(releases):
                xs, ys, lows, highs = [], [], [], []
                for j, backend in enumerate(backends):
                    cell = table[release].get(CellKey("train", "cpu", batch, backend, count))
                    if cell and cell.paired:
                        median, low, high = cell.paired
                        xs.append(j + (i - (len(releases) - 1) / 2) * width)
                        ys.append(median)
                        lows.append(median - low)
                        highs.append(high - median)
                ax.bar(xs, ys, width, yerr=[lows, highs], capsize=2, label=f"torch {release}",
                       color=colours(i / max(len(releases) - 1, 1)))
            ax.axhline(1.0, color="grey", linewidth=0.8)
            ax.set_yscale("log")
            ax.set_ylim(*limits)  # an interval wider than the panel runs off its edge
            ticks = [t for t in (0.125, 0.25, 0.5, 1, 2, 4, 8, 16) if limits[0] <= t <= limits[1]]
            ax.set_yticks(ticks, [f"{t:g}x" for t in ticks])
            ax.minorticks_off()
            ax.set_xticks(range(len(backends)), backends, rotation=30, ha="right", fontsize=8)
            ax.set_title(f"train step, batch {batch}, {count} thread{'s' * (count > 1)}", fontsize=9)
            if col == 0:
                ax.set_ylabel("speedup vs eager (same release, log)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(releases), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(store, out_folder, venvs, out=print):
    from bench.versions import RELEASES, TEST_COMMAND

    runs = versions_runs(store)
    releases = sorted(runs, key=release_key)
    table = {release: {} for release in releases}
    sgemm = {release: {} for release in releases}
    for release in releases:
        for count, run in runs[release].items():
            cells_of, sgemm_of = cells(run)
            table[release].update({key: row for key, row in cells_of.items() if key.threads == count})
            sgemm[release].update(sgemm_of)
    lines = ["# What each torch release did", "",
             f"Written by `{COMMAND}` on {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC "
             "from the runs `lenet-bench versions` saved in results/benchmarks/ (tagged "
             "`lenet_bench.versions` in their JSON) "
             "and the step records it keeps in each release's venv (`--venvs`: torch-VERSION/"
             "lenet-bench-versions.json), or where the venv is gone, their committed copies in "
             "results/versions_tests/. One machine, the releases back to back. Each release's cells come "
             "from its newest tagged run at each thread count: "
             + form_text(runs) + "", ""]
    not_run = [release for release in RELEASES if release not in runs]
    lines += ["## The releases", "",
              "| release | torch | onnxruntime | venv disk | install | test command "
              "| zero-grad defect (batch 8) | benchmark runs |", "|---|---|---|---|---|---|---|---|"]
    for release in sorted(set(RELEASES) | set(releases), key=release_key):
        steps = state_of(venvs, release)
        install = steps.get("install", {})
        tests = steps.get("tests", {})
        probe = (steps.get("zero-grad") or {}).get("probe")
        gb = disk_gb(os.path.join(venvs, f"torch-{release}")) if os.path.isdir(
            os.path.join(venvs, f"torch-{release}")) else None
        run_names = ", ".join(run_text(run, threads) for run, threads in by_run(runs.get(release, {})))
        tests_text = (f"{'pass' if tests.get('ok') else 'FAIL'}: {tests.get('summary') or '?'} "
                      f"({tests.get('seconds', 0):.0f} s wall, shared CPU)") if tests else "not run"
        probe_text = ("**yes**" if probe["defect"] else "no") + \
            f" (max gradient difference {probe['max_gradient_difference']:.2g})" if probe else "not run"
        install_text = (f"{install.get('seconds', 0):.0f} s" if "seconds" in install else
                        "reused" if install.get("ok") else "not run")
        lines.append(f"| {release} | {install.get('torch') or '-'} | {install.get('onnxruntime') or '-'} | "
                     f"{f'{gb:.1f} GB' if gb else '-'} | {install_text} | {tests_text} | {probe_text} | "
                     f"{run_names or 'not run'} |")
    lines += ["", f"Test command: `python -m {' '.join(TEST_COMMAND[1:])}` in the release's venv. "
              "The zero-gradient probe: `python -m bench.versions_probe` (torch.compile(net) against eager, "
              "one backward at batch 8, "
              "the check tests/test_compile.py makes). Venv disk is `du -s` of the venv now.", ""]
    if not_run:
        lines += [f"Not benchmarked: {', '.join(not_run)} (no tagged run in the store).", ""]
    found = changes(table, releases)
    lines += ["## Where a release changed something", "",
              "Consecutive releases that both have the cell; a verdict changed, or each release's speedup "
              "lies outside the other's interval (eager's rows are its A/A check).", ""]
    if found:
        lines += ["| cell (mode, backend, batch, threads) | from | to | what |", "|---|---|---|---|"]
        lines += [f"| {key.mode} {key.backend} B{key.batch} {key.threads}thr | {r1} | {r2} | {what} |"
                  for key, r1, r2, what in found]
    else:
        lines.append("None.")
    lines += ["", "## Speedup against eager of the same release", "",
              "Each cell: the backend's speedup over eager (paired blocks, same process) with its 95% "
              "interval; a verdict other than pass is written after it.", ""]
    keys = sorted({key for release in releases for key in table[release]},
                  key=lambda k: (k.mode, k.threads, k.batch, k.backend))
    lines += ["| mode | threads | batch | backend | " + " | ".join(releases) + " |",
              "|---|---|---|---|" + "---|" * len(releases)]
    for key in keys:
        if key.backend == "eager":
            continue
        lines.append(f"| {key.mode} | {key.threads} | {key.batch} | {key.backend} | "
                     + " | ".join(speedup_text(table[r].get(key)) for r in releases) + " |")
    lines += ["", "## Eager's own time per training step, against the same run's sgemm", "",
              "Eager's time per step over the 1024x1024 sgemm's median time of the same run and thread count "
              "(so that the machine's phase does not read as a release's change); ms in brackets.", ""]
    lines += ["| threads | batch | " + " | ".join(releases) + " |", "|---|---|" + "---|" * len(releases)]
    for key in keys:
        if key.mode != "train" or key.backend != "eager":
            continue
        row = []
        for release in releases:
            cell, ref = table[release].get(key), sgemm[release].get(key.threads)
            if cell and ref and cell.paired_time:
                row.append(f"{cell.paired_time / ref:.3f} sgemm "
                           f"({cell.paired_time * 1e3:.3g} ms; sgemm {ref * 1e3:.3g} ms)")
            else:
                row.append("-")
        lines.append(f"| {key.threads} | {key.batch} | " + " | ".join(row) + " |")
    lines += ["", "## First call (compile, export, session) at one thread", "",
              "The first training call in the worker, in seconds, from the one-thread run (the release's "
              "first run in its venv); `cold` when Inductor's cache missed, `warm` when it hit (the cache is "
              "shared by the releases' venvs but keyed by torch version).", ""]
    lines += ["| backend | batch | " + " | ".join(releases) + " |", "|---|---|" + "---|" * len(releases)]
    for key in keys:
        if key.mode != "train" or key.threads != 1 or key.backend == "eager":
            continue
        row = []
        for release in releases:
            cell = table[release].get(key)
            if cell and cell.first_call is not None:
                cache = cell.first_call_cache or {}
                state = "cold" if cache.get("misses") else "warm" if cache.get("hits") else "no cache"
                row.append(f"{cell.first_call:.2f} s ({state})")
            else:
                row.append("-")
        lines.append(f"| {key.backend} | {key.batch} | " + " | ".join(row) + " |")
    repro_outputs = [(release, (state_of(venvs, release).get("repro") or {})) for release in releases]
    lines += ["", "## The zero-gradient reproducer (repro/*zero*/)", ""]
    if any(record.get("output") for _, record in repro_outputs):
        for release, record in repro_outputs:
            lines += [f"torch {release}:", "", "```", (record.get("output") or "not run").rstrip(), "```", ""]
    else:
        lines += ["Not run: no repro/*zero*/ folder existed when the matrix ran.", ""]
    png = os.path.join(out_folder, "versions.png")
    if chart(table, releases, png):
        lines += ["## Chart", "", "![training-step speedup per release](versions.png)", "",
                  "Training step; bars are medians, whiskers the 95% intervals (cut at the panel's edge "
                  "where wider); log scale, 1 = eager's speed in the same release.", ""]
    with open(os.path.join(out_folder, "versions.md"), "w") as f:
        f.write("\n".join(lines))
    out(f"wrote {os.path.join(out_folder, 'versions.md')} from {sum(len(v) for v in runs.values())} runs "
        f"of {len(releases)} releases")
