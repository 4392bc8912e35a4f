"""The deployed-inference report: results/DEPLOYED.md and deployed.png from deployed.json.

    python -m bench.deployed.deployed_report [--json results/deployed.json] [--out results]

Every figure comes from the JSON (`summarize` reduces its per-process data; the command stores
that summary beside the data and this recomputes it). Intervals are over worker processes, the
independent units (bench/measure/timing.process_interval: the geometric mean of the processes'
values and Student's t interval over their logarithms).
"""

import math
import os
import sys

import numpy as np

from bench import cli, files
from bench.measure import timing
from bench.reporting.format import (
    display_command,
    display_path,
    markdown_table,
    mib,
    num,
    rate,
    text_table,
    us,
)

EAGER = "eager"
# The targets: (key, what, threshold).
TARGETS = [
    ("latency", "fastest deployed batch-1 p50 vs eager inference-mode p50", 5.0),
    ("throughput", "best batch-256 throughput vs eager's", 3.0),
]
TARGET_BATCH = 256
JSON_NAME, MD_NAME, CHART_NAME = "deployed.json", "DEPLOYED.md", "deployed.png"


def over_processes(values):
    """(geometric mean, low, high) over one value per process; None without values."""
    values = [v for v in values if v is not None and v > 0]
    if not values:
        return None
    if len(values) == 1:
        return (values[0], math.nan, math.nan)
    return timing.process_interval([[v] for v in values])


def summarize_cell(cell):
    runs = cell["processes"]
    if cell.get("skipped") or not runs:
        return {
            "status": "skipped" if cell.get("skipped") else "FAIL: no process finished",
            "reason": cell.get("skipped") or (cell.get("failures") or ["-"])[0],
        }
    agreement = {}
    for run in runs:
        for batch, row in run.get("agreement", {}).items():
            worst = agreement.get(batch)
            if (
                worst is None
                or row["status"] != "pass"
                or (worst["status"] == "pass" and (row["max_ratio"] or 0) > (worst["max_ratio"] or 0))
            ):
                agreement[batch] = row
    failed = cell.get("failures") or []
    status = (
        "FAIL: agreement"
        if any(r["status"] != "pass" for r in agreement.values())
        else "FAIL: a process failed"
        if failed
        else "pass"
    )
    summary = {
        "status": status,
        "processes": len(runs),
        "failures": failed,
        "artifact": runs[0]["artifact"],
        "artifact_bytes": runs[0]["artifact_bytes"],
        "latency_calls": sum(r["latency_calls"] for r in runs),
        "latency_s": {q: over_processes([r["latency_s"][q] for r in runs]) for q in runs[0]["latency_s"]},
        "latency_speedup": timing.process_interval([r["latency_paired"]["ratios"] for r in runs]),
        "throughput": {},
        "agreement": agreement,
    }
    for batch in runs[0]["throughput"]:
        summary["throughput"][batch] = {
            "samples_per_s": over_processes([r["throughput"][batch]["samples_per_s"] for r in runs]),
            "speedup": timing.process_interval([r["throughput"][batch]["ratios"] for r in runs]),
        }
    for key in ("cold_start_s", "cold_load_s", "cold_first_call_s", "cold_import_s", "warm_start_s"):
        values = [r[key] for r in runs]
        summary[key] = {"median": float(np.median(values)), "min": min(values), "max": max(values)}
    held = [r["memory_held_bytes"] for r in runs if r["memory_held_bytes"] is not None]
    summary["memory_held_bytes"] = float(np.median(held)) if held else None
    summary["peak_bytes"] = {b: max((r["peak_bytes"][b] or 0) for r in runs) for b in runs[0]["peak_bytes"]}
    return summary


def verdict(interval, threshold):
    value, low, high = interval
    if math.isnan(low):
        return "undecided (one process: no interval)"
    if low >= threshold:
        return "met"
    if high < threshold:
        return "not met"
    return "undecided (the interval holds the target)"


def answer_targets(cells, threads):
    """Per target: the best passing deployed configuration at `threads` and the verdict from its interval."""
    answers = []
    for key, what, threshold in TARGETS:
        best = None
        for (config, t), s in cells.items():
            if t != threads or config == EAGER or s["status"] != "pass":
                continue
            interval = (
                s["latency_speedup"]
                if key == "latency"
                else s["throughput"].get(str(TARGET_BATCH), {}).get("speedup")
            )
            if interval and (best is None or interval[0] > best[1][0]):
                best = (config, interval)
        answers.append(
            {
                "target": what,
                "threshold": threshold,
                "threads": threads,
                "config": best[0] if best else None,
                "speedup": list(best[1]) if best else None,
                "verdict": verdict(best[1], threshold) if best else "no passing configuration",
            }
        )
    return answers


def summarize(data):
    cells = {(c["config"], c["threads"]): summarize_cell(c) for c in data["cells"]}
    return {
        "cells": [{"config": c, "threads": t, **s} for (c, t), s in cells.items()],
        "targets": [a for t in data["threads"] for a in answer_targets(cells, t)],
    }


def _iv(interval, scale=1.0, fmt=num):
    if not interval:
        return "-"
    value, low, high = (x * scale for x in interval)
    return fmt(value) if math.isnan(low) else f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"


def _x(interval):
    return "-" if not interval else _iv(interval) + "x"


def _ms(value):
    return f"{value * 1e3:,.1f}" if value < 10 else f"{value:,.1f} s"


def _throughput(cell):
    return f"{rate(cell['samples_per_s'][0])} ({_x(cell['speedup'])})"


def table_rows(summary, threads, batches):
    rows = []
    for s in summary["cells"]:
        if s["threads"] != threads:
            continue
        if s["status"] == "skipped" or "latency_s" not in s:
            rows.append([s["config"], f"{s['status']}: {s['reason']}", *["-"] * (8 + len(batches))])
            continue
        lat = s["latency_s"]
        rows.append(
            [
                s["config"],
                s["status"],
                _iv(lat["p50"], 1, us),
                us(lat["p90"][0]),
                _iv(lat["p99"], 1, us),
                _x(s["latency_speedup"]),
                *[_throughput(s["throughput"][str(b)]) for b in batches],
                f"{_ms(s['cold_start_s']['median'])} ({_ms(s['cold_load_s']['median'])} + "
                f"{_ms(s['cold_first_call_s']['median'])})",
                _ms(s["warm_start_s"]["median"]),
                f"{s['artifact_bytes'] / 1024:,.0f}",
                mib(s["memory_held_bytes"]),
                mib(s["peak_bytes"].get(str(batches[-1]))),
            ]
        )
    return rows


def header(batches):
    return [
        "configuration",
        "agreement",
        "batch-1 p50 µs",
        "p90 µs",
        "p99 µs",
        "p50 vs eager (paired)",
        *[f"batch {b}: samples/s (vs eager)" for b in batches],
        "cold start ms (load + first call)",
        "warm load + first call ms",
        "artifact KiB",
        "held MiB",
        f"peak MiB (batch {batches[-1]})",
    ]


def chart(data, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = data["summary"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    width = 0.8 / len(data["threads"])
    for i, threads in enumerate(data["threads"]):
        cells = [s for s in summary["cells"] if s["threads"] == threads and "latency_s" in s]
        xs = np.arange(len(cells)) + i * width
        p50 = [s["latency_s"]["p50"][0] * 1e6 for s in cells]
        p99 = [s["latency_s"]["p99"][0] * 1e6 for s in cells]
        axes[0].bar(xs, p50, width, label=f"{threads} thread(s): p50")
        axes[0].scatter(xs, p99, marker="_", s=200, color="black", zorder=3, label="p99" if i == 0 else None)
        thr = (
            [s["throughput"][str(TARGET_BATCH)]["samples_per_s"][0] for s in cells]
            if all(str(TARGET_BATCH) in s["throughput"] for s in cells)
            else []
        )
        if thr:
            axes[1].bar(xs, thr, width, label=f"{threads} thread(s)")
        axes[2].bar(
            xs, [s["cold_start_s"]["median"] * 1e3 for s in cells], width, label=f"{threads} thread(s)"
        )
        for ax in axes:
            ax.set_xticks(
                np.arange(len(cells)) + width * (len(data["threads"]) - 1) / 2,
                [s["config"] for s in cells],
                rotation=35,
                ha="right",
                fontsize=8,
            )
    axes[0].set_ylabel("µs per call (batch 1)")
    axes[0].set_title("Single-stream latency, batch 1")
    axes[1].set_ylabel("samples/s")
    axes[1].set_title(f"Offline throughput, batch {TARGET_BATCH}")
    axes[2].set_ylabel("ms (median over processes)")
    axes[2].set_yscale("log")
    axes[2].set_title("Cold start: load + first call (import apart)")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle(
        f"Deployed inference ({data['machine'].get('cpu_model')}, torch {data['machine'].get('torch')})",
        fontsize=10,
    )
    fig.tight_layout()
    files.replace_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110), suffix=".png")
    plt.close(fig)


def commit_text(commit):
    """", commit 1a2b3c4" (with "and uncommitted changes" when dirty); "" for a run that did not record it."""
    if not commit:
        return ""
    return f", commit {commit['id'][:7]}" + (" with uncommitted changes" if commit.get("dirty") else "")


def markdown(data):
    summary, batches, m = data["summary"], data["batches"], data["machine"]
    lines = [
        "# Deployed inference",
        "",
        "Each runtime's deployed form of the Net, built once into an artifact on disk "
        "(`python -m export.deploy`) and loaded from it, weights constant, gradients off. "
        "Method, settings and pitfalls: [docs/deployed.md](../docs/deployed.md).",
        "",
        f"Command: `{display_command(data['command'])}`, started {data['started']} UTC"
        f"{commit_text(data.get('commit'))}, "
        f"{data['duration_s'] / 60:.1f} min (of which {data['paused_s']:.0f} s waiting for the machine). "
        f"Machine: {m.get('cpu_model')}, {m.get('cpu_count')} cores; torch {m.get('torch')}, "
        f"onnxruntime {m.get('onnxruntime')}, openvino {m.get('openvino')}, "
        f"executorch {m.get('executorch')}, {m.get('c++')}. "
        f"{data['processes']} fresh worker processes per configuration and thread count; "
        f"{data['calls']:,} batch-1 single calls per process for the percentiles; paired blocks for "
        f"{data['seconds']:g} s per batch size and process. Intervals: 95%, over processes.",
        "",
        "## Targets",
        "",
    ]
    rows = [
        [
            a["target"],
            a["threads"],
            f"{a['threshold']:g}x",
            a["config"] or "-",
            _x(a["speedup"]),
            a["verdict"],
        ]
        for a in summary["targets"]
    ]
    lines += [
        markdown_table(["target", "threads", "at least", "best configuration", "measured", "answer"], rows),
        "",
    ]
    for threads in data["threads"]:
        lines += [
            f"## {threads} thread{'s' * (threads != 1)}",
            "",
            markdown_table(header(batches), table_rows(summary, threads, batches)),
            "",
        ]
    lines += [
        f"![deployed inference]({CHART_NAME})",
        "",
        "Percentiles: the geometric mean over processes of each process's percentile of its single "
        'calls. "vs eager": each pair of neighbouring blocks (eager, the configuration) gives one '
        "ratio (batch 1: of their median call times; large batches: of their mean call times); a "
        "process's ratio is the median of its pairs. Cold start: a fresh process, the artifact on disk "
        "to its first answer (load, then one batch-1 call), after torch is imported; the runtime's own "
        "import is timed apart. Warm: a second load in the same process. Held: resident memory grown "
        "over the cold start. Peak: the most resident memory one call took beyond that. Agreement: "
        "the outputs at batch 1 and every large batch against float64 eager on the same weights by "
        "the suite's criterion (bench/measure/agreement.py), in every process; a FAIL fails the "
        "cell.",
        "",
        "## Settings",
        "",
    ]
    settings = {}
    for cell in data["cells"]:
        for run in cell["processes"][:1]:
            settings.setdefault(cell["config"], run["settings"])
    for config, value in settings.items():
        text = "; ".join(f"{k}: {v}" for k, v in value.items())
        lines.append(f"- **{config}**: {text}")
    for s in summary["cells"]:
        if s["status"] == "skipped":
            lines.append(f"- **{s['config']}** ({s['threads']} thread(s)): skipped: {s['reason']}")
    for name, reason in data["not_measured"].items():
        lines.append(f"- **{name}**: not measured: {reason}")
    return "\n".join(lines) + "\n"


def terminal_table(data):
    batches = data["batches"]
    out = []
    for threads in data["threads"]:
        out += [
            f"{threads} thread(s)",
            text_table(
                header(batches)[: 6 + len(batches)],
                [r[: 6 + len(batches)] for r in table_rows(data["summary"], threads, batches)],
            ),
        ]
    out += [
        f"{a['target']} ({a['threads']} thread(s)): {a['config']} {_x(a['speedup'])}: {a['verdict']}"
        for a in data["summary"]["targets"]
    ]
    return "\n".join(out)


def write(data, folder):
    """DEPLOYED.md and deployed.png into `folder`; returns their paths."""
    md, png = os.path.join(folder, MD_NAME), os.path.join(folder, CHART_NAME)
    chart(data, png)
    files.write_text_atomic(md, markdown(data))
    return [md, png]


def main(argv=None):
    import json

    parser = cli.Parser(prog="bench.deployed.deployed_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=os.path.join("results", JSON_NAME))
    parser.add_argument("--out", type=cli.output_folder, default="results")
    try:
        args = parser.parse_args(argv)
        with open(args.json, encoding="utf-8") as f:
            data = json.load(f)
    except cli.UsageError as error:
        print(f"bench.deployed.deployed_report: error: {error}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as error:
        print(f"bench.deployed.deployed_report: error: cannot read {args.json}: {error}", file=sys.stderr)
        return 2
    data["summary"] = summarize(data)
    print("wrote " + ", ".join(map(display_path, write(data, args.out))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
