"""The project's performance targets, answered from one run's training-step rows and their intervals."""

from bench import backends as configs
from bench.backends import EAGER
from bench.reporting.format import interval_text, markdown_table, num, threads_text
from bench.runs.load import speedup_interval, trusted
from bench.runs.verdict import verdict, worst


def sgemm_share(run, key):
    """(share, low, high) of the same run's sgemm GFLOP/s at the row's device and thread count: at the
    row's paired time against sgemm's median, and at the row's paired interval against sgemm's
    quartiles (sgemm is not paired with anything, so its quartiles are the honest spread here)."""
    row, (sgemm, sgemm_low, sgemm_high) = run["rows"][key], run["sgemm"][(key.device, key.threads)]
    interval = speedup_interval(run, key)
    if interval and row.time != row.median:  # a time from the pairing: scale it by the interval's ends
        times = [row.time, *(row.time * interval[0] / end for end in interval[1:])]
    else:
        times = [getattr(row, q) for q in ("median", "q3", "q1")]
    gflops = [row.flops / t / 1e9 for t in times]
    return gflops[0] / sgemm, gflops[1] / sgemm_high, gflops[2] / sgemm_low


def targets_section(run):
    """The project's performance targets, checked against this run's training-step rows with their
    intervals. Only backends that agree with the float64 reference count."""
    lines = []
    for device, threads in sorted({(key.device, key.threads) for key in run["rows"] if key.mode == "train"}):
        rows = {key: row for key, row in run["rows"].items()
                if key.group() == ("train", device, threads) and trusted(row)
                and key.backend != EAGER}
        intervals = {key: speedup_interval(run, key) for key in rows if speedup_interval(run, key)}
        table = []

        batch_1 = [key for key in intervals if key.batch == 1]
        if batch_1:
            best = max(batch_1, key=lambda key: intervals[key][0])
            table.append(["batch-1 training step: the fastest backend at least 8x faster than eager",
                          f"{best[3]} {interval_text(intervals[best])}", verdict(*intervals[best][1:], 8.0)])

        batch_256 = [key for key in rows if key.batch == 256]
        if batch_256 and run["sgemm"].get((device, threads)):
            best = max(batch_256, key=lambda key: sgemm_share(run, key)[0])
            share, low, high = sgemm_share(run, best)
            table.append(["batch-256 training step: at least 50% of the same run's sgemm GFLOP/s",
                          f"{best[3]} {num(100 * share)}% [{num(100 * low)}, {num(100 * high)}] of "
                          f"{run['sgemm'][(device, threads)][0]:.0f} GFLOP/s", verdict(low, high, 0.5)])

        # every torch.compile configuration and every one Inductor builds ahead of time; ONNX Runtime's
        # plain configuration
        measured = sorted({key.backend for key in intervals})
        checks = [(name, f"torch.compile ({name}) not slower than eager at any batch", False)
                  for name in measured if configs.family(name) == "torch.compile"]
        checks += [(name, f"Inductor ahead of time ({name}) not slower than eager at any batch", False)
                   for name in measured if configs.family(name) == "aotinductor"]
        checks.append((configs.plain("onnxruntime"),
                       "ONNX Runtime training step faster than eager at every batch", True))
        for backend, label, strict in checks:  # "not slower": met where the interval lies at or above 1
            mine = {key.batch: value for key, value in intervals.items() if key.backend == backend}
            if mine:
                slowest = min(mine, key=lambda batch: mine[batch][0])
                answer = worst([verdict(low, high, 1.0, strict=strict) for _, low, high in mine.values()])
                table.append([label, f"slowest at batch {slowest}: {interval_text(mine[slowest])}", answer])
        if table:
            lines += [f"## Performance targets, training step, {device}, {threads_text(threads)}", "",
                      "Each answer comes from the 95% interval: met when it lies wholly on the right side "
                      "of the line, not met when wholly on the wrong side, undecided when it straddles it.",
                      "", markdown_table(["target", "measured in this run", "answer"], table), "",
                      "Where the time goes: the profile summary below and [PROFILE.md](PROFILE.md); "
                      "what was tried for each backend, kept and dropped: "
                      "[docs/tried.md](../docs/tried.md).",
                      ""]
    return lines
