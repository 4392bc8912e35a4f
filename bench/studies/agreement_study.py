"""Numerical agreement of every backend with a float64 eager reference.

The command:  python -m bench.agreement [--steps N] [--batch-size B] [--backends a,b]
                                        [--devices cpu,cuda] [--out results] [--drift]

It runs bench/measure/agreement.py's check (the criterion is stated there) on every backend and
device, and again at every batch size and thread count of the margins table, and writes
agreement.json and agreement.md; with --drift it runs the long run on one fixed batch instead
and writes drift.json and drift.png. Exit status 1 when a backend fails the criterion (or, without
--drift, eager float32 run twice is not bit-identical), 2 on a bad command line.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict

import torch

from bench import backends, cli
from bench.cli import Parser, UsageError, positive, positive_list
from bench.files import write_atomic, write_text_atomic
from bench.measure.agreement import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DRIFT_STEPS,
    DEFAULT_STEPS,
    K_MAX,
    K,
    check,
    criterion_text,
    drift,
    fixed_batch,
    repeat_identical,
    status,
)
from bench.reporting.format import markdown_table, sci, text_table

# The margins table of the command: every backend at the benchmarks' batch sizes, and 8, on 1 and 2 threads.
MARGIN_BATCH_SIZES = [1, 8, 64, 256]
MARGIN_THREADS = [1, 2]


# ------------------------------------------------------------------------------- reporting

def _jsonable(value):
    """JSON has no NaN/inf: write them as the strings "nan", "inf", "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


HEADER = ["backend", "device", "quantity", "step", "max abs err", "max rel err", "RMSE ratio",
          "max err ratio", "pass"]


def table_rows(results):
    lines = []
    for r in results:
        if r.skipped:
            lines.append([r.backend, r.device, f"skipped: {r.skipped}", "", "", "", "", "", "-"])
            continue
        for row in r.rows:
            verdict = "pass" if row.passed else "FAIL"
            if row.note.startswith(("non-finite", "missing", "shape", "an element")):
                verdict += f" ({row.note})"
            lines.append([r.backend, r.device, row.quantity, str(row.step), sci(row.max_abs),
                          sci(row.max_rel), sci(row.rmse_ratio), sci(row.max_ratio), verdict])
        if r.error:
            lines.append([r.backend, r.device, f"error: {r.error}", "", "", "", "", "", "FAIL"])
    return lines


def format_markdown(lines, header=HEADER):
    """A Markdown table; a "|" in a cell (an error message's) is escaped so it stays one cell."""
    return markdown_table(header, [[str(cell).replace("|", "\\|") for cell in cells] for cells in lines])


def summary_lines(results, repeats):
    lines = []
    for r in results:
        if r.skipped:
            lines.append(f"{r.backend} on {r.device}: skipped ({r.skipped})")
        else:
            ratio = "-" if r.worst_rmse_ratio is None else f"{r.worst_rmse_ratio:.3g}"
            max_ratio = "-" if r.worst_max_ratio is None else f"{r.worst_max_ratio:.3g}"
            lines.append(f"{r.backend} on {r.device}: {status(r)}, worst RMSE {ratio}x and worst largest "
                         f"element error {max_ratio}x eager float32's, "
                         f"largest abs error {sci(r.max_abs_error)}"
                         + (f" ({r.error})" if r.error else ""))
    for device, (same, detail) in repeats.items():
        verdict = "bit-identical" if same else "NOT bit-identical"
        lines.append(f"eager float32 run twice on {device}: {verdict} ({detail})")
    return lines


def _worst_row(result, ratio):
    """The row with the largest `ratio` ("rmse_ratio" or "max_ratio"), as "quantity at step N"."""
    rows = [row for row in result.rows if getattr(row, ratio) is not None]
    if not rows:
        return "-"
    row = max(rows, key=lambda r: math.inf if math.isnan(getattr(r, ratio)) else getattr(r, ratio))
    return f"{row.quantity} at step {row.step}"


def margin(result, batch_size, threads):
    """One backend's worst ratio under each criterion in one run, and where it was."""
    return {"backend": result.backend, "device": result.device, "batch_size": batch_size, "threads": threads,
            "status": status(result), "worst_rmse_ratio": result.worst_rmse_ratio,
            "worst_rmse_row": _worst_row(result, "rmse_ratio"), "worst_max_ratio": result.worst_max_ratio,
            "worst_max_row": _worst_row(result, "max_ratio")}


MARGIN_HEADER = ["backend", "device", "batch", "threads", "worst RMSE ratio", "where", "worst max err ratio",
                 "where", "verdict"]


def margin_lines(margins):
    return [[m["backend"], m["device"], str(m["batch_size"]), str(m["threads"]),
             sci(m["worst_rmse_ratio"]), m["worst_rmse_row"], sci(m["worst_max_ratio"]), m["worst_max_row"],
             m["status"]] for m in margins if m["status"] != "skipped"]


def margin_summary(margins):
    """The real backends' worst ratio under each criterion over every run, against K and K_MAX."""
    ran = [m for m in margins if m["status"] != "skipped"]
    lines = []
    criteria = [("worst_rmse_ratio", "worst_rmse_row", K, "RMSE ratio"),
                ("worst_max_ratio", "worst_max_row", K_MAX, "largest element error ratio")]
    for key, row_key, limit, what in criteria:
        found = [m for m in ran if m[key] is not None]
        if not found:
            continue
        m = max(found, key=lambda m: math.inf if math.isnan(m[key]) else m[key])
        lines.append(f"worst {what} over every backend and run: {sci(m[key])} ({m['backend']}, batch "
                     f"{m['batch_size']}, {m['threads']} thread(s), {m[row_key]}); the limit is {limit:g}")
    return lines


# --------------------------------------------------------------------------------- command

def names_option(text, kind, choices):
    """--backends, --devices: names from `choices` (an unavailable backend is run as skipped, so not
    cli.backend_list, which refuses it); a bad list is one UsageError line naming the option."""
    try:
        return cli.parse_list(text, kind, choices)
    except ValueError as error:
        raise UsageError(f"--{kind}s: {error}") from None


def parse_args(argv):
    parser = Parser(prog="python -m bench.agreement", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=positive, default=None,
                        help=f"training steps (default {DEFAULT_STEPS}; {DEFAULT_DRIFT_STEPS} with --drift)")
    parser.add_argument("--batch-size", type=positive, default=DEFAULT_BATCH_SIZE,
                        help="batch size (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the parameters and batches (default 0)")
    parser.add_argument("--backends", default=",".join(backends.DEFAULT_CONFIGS),
                        help=f"comma-separated; choices: {', '.join(backends.CONFIGS)}")
    parser.add_argument("--devices", default=",".join(backends.DEVICES),
                        help=f"comma-separated; choices: {', '.join(backends.DEVICES)}")
    parser.add_argument("--out", type=cli.output_folder, default="results",
                        help="folder for the JSON, Markdown (and PNG) files")
    parser.add_argument("--threads", type=positive, default=None,
                        help="torch intra-op threads (default: torch's own choice, but 1 with --drift: "
                             "on a busy 2-core machine, spinning OpenMP threads made 1,000 steps take "
                             "minutes)")
    parser.add_argument("--margin-batch-sizes", type=positive_list, default=MARGIN_BATCH_SIZES,
                        help="batch sizes of the margins table: every backend's worst ratio under each "
                             f"criterion (default: {','.join(map(str, MARGIN_BATCH_SIZES))})")
    parser.add_argument("--margin-threads", type=positive_list, default=MARGIN_THREADS,
                        help="thread counts of the margins table (default: "
                             f"{','.join(map(str, MARGIN_THREADS))}); --threads sets the detailed table's")
    parser.add_argument("--drift", action="store_true",
                        help="record the max abs parameter error after every step instead "
                             "(writes drift.json and drift.png)")
    args = parser.parse_args(argv)
    args.backends = names_option(args.backends, "backend", list(backends.CONFIGS))
    args.devices = names_option(args.devices, "device", backends.DEVICES)
    if args.steps is None:
        args.steps = DEFAULT_DRIFT_STEPS if args.drift else DEFAULT_STEPS
    return args


def run_check(args):
    threads = torch.get_num_threads()
    settings = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed, "k": K, "k_max": K_MAX,
                "criterion": criterion_text(), "torch": torch.__version__, "torch_threads": threads,
                "margin_batch_sizes": args.margin_batch_sizes, "margin_threads": args.margin_threads}
    results, repeats, skipped_devices, margins = [], {}, {}, []
    for device in args.devices:
        reason = backends.device_unavailable(device)
        if reason:
            skipped_devices[device] = reason
            print(f"{device}: skipped ({reason})")
            continue
        detail = check(args.backends, device, args.steps, args.batch_size, args.seed)
        results += detail
        repeats[device] = repeat_identical(device, args.steps, args.batch_size, args.seed)
        for margin_threads in args.margin_threads:
            for batch_size in args.margin_batch_sizes:
                if (batch_size, margin_threads) == (args.batch_size, threads):
                    runs = detail
                else:
                    print(f"{device}: margins at batch {batch_size}, {margin_threads} thread(s)", flush=True)
                    torch.set_num_threads(margin_threads)
                    try:
                        runs = check(args.backends, device, args.steps, batch_size, args.seed)
                    finally:
                        torch.set_num_threads(threads)
                margins += [margin(r, batch_size, margin_threads) for r in runs]
    lines = table_rows(results)
    summary = summary_lines(results, repeats)
    title = (f"Agreement with eager float64 after step 1 and step {args.steps} "
             f"(batch {args.batch_size}, seed {args.seed})")
    print(title)
    print(text_table(HEADER, lines))
    print()
    print("\n".join(summary))
    print(f"criterion: {criterion_text()}")
    margins_title = (f"Margins: each backend's worst ratio under each criterion over step 1 and step "
                     f"{args.steps}, at every batch size and thread count (seed {args.seed})")
    print(f"\n{margins_title}")
    print(text_table(MARGIN_HEADER, margin_lines(margins)))
    print("\n".join(margin_summary(margins)))
    data = {
        "settings": settings,
        "margins": margins,
        "skipped_devices": skipped_devices,
        "eager_repeat": {d: {"bit_identical": s, "detail": t} for d, (s, t) in repeats.items()},
        "results": [dict(asdict(r), status=status(r)) for r in results],
    }
    write_text_atomic(os.path.join(args.out, "agreement.json"),
                json.dumps(_jsonable(data), indent=2, allow_nan=False) + "\n")
    md = [f"# {title}", "", f"Criterion: {criterion_text()}.", "", format_markdown(lines), "",
          *[f"- {s}" for s in summary], *[f"- {d}: skipped ({r})" for d, r in skipped_devices.items()], "",
          f"## {margins_title}", "", format_markdown(margin_lines(margins), MARGIN_HEADER), "",
          *[f"- {s}" for s in margin_summary(margins)], ""]
    write_text_atomic(os.path.join(args.out, "agreement.md"), "\n".join(md))
    print(f"wrote {os.path.join(args.out, 'agreement.json')} and {os.path.join(args.out, 'agreement.md')}")
    ok = (all(r.passed for r in results if not r.skipped) and all(s for s, _ in repeats.values())
          and all(m["status"] in ("pass", "skipped") for m in margins))
    return 0 if ok else 1


def run_drift(args):
    runs = []
    for device in args.devices:
        reason = backends.device_unavailable(device)
        if reason:
            print(f"{device}: skipped ({reason})")
            continue
        start = time.perf_counter()
        run = drift(args.backends, device, args.steps, args.batch_size, args.seed)
        # and the agreement criterion itself after the last of those steps, on the same batch
        verdicts = check(args.backends, device, args.steps, args.batch_size, args.seed,
                         make_batch=fixed_batch(args.batch_size, args.seed))
        run["criterion"] = {result.backend: status(result) for result in verdicts}
        run["margins"] = {result.backend: margin(result, args.batch_size, torch.get_num_threads())
                          for result in verdicts}
        run["seconds"] = round(time.perf_counter() - start, 2)
        runs.append(run)
    lines = []
    for run in runs:
        for name, reason in run["skipped"].items():
            lines.append([name, run["device"], f"skipped: {reason}", "", "", "", "", "", ""])
        for name, errs in run["errors"].items():
            verdict = run["criterion"].get(name, "-")
            if errs:
                worst = math.nan if any(math.isnan(e) for e in errs) else max(errs)
                at_20 = errs[min(len(errs), DEFAULT_STEPS) - 1]
                m = run["margins"].get(name, {})
                lines.append([name, run["device"], sci(errs[0]), sci(at_20), sci(errs[-1]), sci(worst),
                              sci(m.get("worst_rmse_ratio")), sci(m.get("worst_max_ratio")), verdict])
            if name in run["failed"]:
                lines.append([name, run["device"], f"error: {run['failed'][name]}", *[""] * 5, verdict])
    header = ["backend", "device", "step 1", f"step {min(args.steps, DEFAULT_STEPS)}",
              f"step {args.steps}", "max over run", "worst RMSE ratio", "worst max err ratio",
              f"criterion after step {args.steps}"]
    print(f"Max abs parameter error vs eager float64 over {args.steps} steps (batch {args.batch_size})")
    print(text_table(header, lines))
    data = {"quantity": "max abs parameter error vs eager float64 after each step",
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "runs": runs}
    write_text_atomic(os.path.join(args.out, "drift.json"),
                      json.dumps(_jsonable(data), allow_nan=False) + "\n")
    plot_drift(runs, os.path.join(args.out, "drift.png"))
    print(f"wrote {os.path.join(args.out, 'drift.json')} and {os.path.join(args.out, 'drift.png')}")
    bad = any(run["failed"] for run in runs) or any(
        not math.isfinite(e) for run in runs for errs in run["errors"].values() for e in errs[-1:]) or any(
        verdict not in ("pass", "skipped") for run in runs for verdict in run["criterion"].values())
    return 1 if bad else 0


def plot_drift(runs, path):
    """One line per backend (per device), log y axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    styles = ["-", "--", ":", "-."]  # backends that agree bit for bit draw over each other
    lines = [(run["device"], name, errs) for run in runs for name, errs in run["errors"].items() if errs]
    for i, (device, name, errs) in enumerate(lines):
        xs = range(1, len(errs) + 1)
        ys = [e if (e > 0 and math.isfinite(e)) else math.nan for e in errs]  # log axis: no 0/NaN
        ax.plot(xs, ys, styles[i % len(styles)], label=f"{name} ({device})", linewidth=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("max |parameter - float64 eager|")
    first = runs[0] if runs else {"batch_size": "?", "seed": "?"}
    ax.set_title(f"Parameter drift from float64 eager (batch {first['batch_size']}, seed {first['seed']})")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


def main(argv=None):
    try:
        args = parse_args(argv)
    except UsageError as error:
        print(f"{cli.prog('python -m bench.agreement')}: error: {error}", file=sys.stderr)
        return 2
    threads = args.threads or (1 if args.drift else None)
    if threads:
        torch.set_num_threads(threads)
    return run_drift(args) if args.drift else run_check(args)


