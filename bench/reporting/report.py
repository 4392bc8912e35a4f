"""Turn one saved benchmark run into results/REPORT.md and PNG charts.

    python -m bench.report                      # the latest run in results/benchmarks
    python -m bench.report 0003                 # a named run: NNNN prefix or path to its JSON
    python -m bench.report --storage /tmp/rb --out /tmp/report

Each saved run is a pytest-benchmark JSON file (results/benchmarks/<machine>/NNNN_*.json).
Speedups are against eager from the same run; effective GFLOP/s (FLOPs of the timed unit
from torch.utils.flop_counter / median time) is set against the sgemm GFLOP/s of the same
run and device. Only REPORT.md and the chart PNGs in --out (and, for the default --out, the README's
results table between its main-table markers) are written, each atomically;
nothing else in results/ is touched.
"""

import os
import sys

from bench import cli, files
from bench.files import write_atomic
from bench.reporting.charts import draw_chart
from bench.reporting.format import display_path
from bench.reporting.markdown import markdown_section, render_markdown
from bench.runs.load import DEFAULT_OUT, DEFAULT_STORAGE, RunError, find_run, groups_of, require_runs

# Files whose <!-- summary:start/end --> part is copied into the report, with the section title.
INLINED = [("calibration.md", "Calibration: do the speedups hold still across runs?"),
           ("DDP.md", "Data-parallel training step")]
# Written by other commands beside the report; linked from it when present.
COMPANIONS = [
    ("calibration.md", "three runs of the main command side by side (`python -m bench.calibration`)"),
    ("block_length.md", "paired ratios against block length and a long sequential measurement"),
    ("block_length_threads1.md", "the block-length study at 1 thread (`bench.block_study --threads 1`)"),
    ("block_length_threads2.md", "the block-length study at 2 threads (`bench.block_study --threads 2`)"),
    ("autotune.md", "compile's autotuning picks, cold, three times"),
    ("DDP.md", "the training step data-parallel under torchrun (`python -m bench.ddp`)"),
    ("agreement.md", "every backend against float64 after 1 and 20 steps (`python -m bench.agreement`)"),
    ("drift.png", "parameter error vs float64 over 1,000 steps (`bench.agreement --steps 1000 --drift`)"),
    ("PROFILE.md", "where each backend's training step spends its time (`python -m bench.profile`)"),
    ("compile_time.md", "compile, export and session time, cold and warm (`python -m bench.compile_time`)"),
    ("net_structure.png", "the Net's layers and shapes (`python -m bench.draw_net`)"),
    ("computation_graph.png", "the computation graph from input to loss (`python -m bench.draw_net`)"),
]


def write_report(run, out):
    os.makedirs(out, exist_ok=True)
    charts, written = {}, []
    for mode, device, threads in groups_of(run):
        name = f"{mode}_{device}_{threads}t.png"
        draw_chart(run, mode, device, threads, os.path.join(out, name))
        charts[(mode, device, threads)] = name
        written.append(os.path.join(out, name))
    text = render_markdown(run, charts)
    profile = os.path.join(out, "PROFILE.md")
    if os.path.exists(profile):  # the profile's own summary table: where each backend's time goes
        with open(profile, encoding="utf-8") as f:
            text_of_profile = f.read()
        summary = markdown_section(text_of_profile, "Summary")
        if summary:
            text += ("\n## Where the time goes (from PROFILE.md, its own run)\n\n" + summary + "\n\n"
                     "Coverage below 100% is time outside every kernel: for eager, TorchScript and "
                     "torch.compile Python, dispatch, autograd and Dynamo's guards; for aotinductor and "
                     "ONNX Runtime their own C++ runtime (no Python runs in their step).\n")
        groups = markdown_section(text_of_profile, "Kernel groups against eager")
        if groups:  # its comparison with eager by kernel group, at each batch size profiled
            text += "\n## Kernel groups against eager (from PROFILE.md, its own run)\n\n" + groups + "\n"
    for name, title in INLINED:  # summaries other commands wrote beside the report
        summary = os.path.join(out, name)
        if os.path.exists(summary):
            with open(summary, encoding="utf-8") as f:
                body = f.read().partition("<!-- summary:start -->")[2].partition("<!-- summary:end -->")[0]
            if body.strip():
                text += f"\n## {title} (from [{name}]({name}))\n\n{body.strip()}\n"
    companions = [(name, what) for name, what in COMPANIONS if os.path.exists(os.path.join(out, name))]
    if companions:
        text += "\n## More in this folder\n\n" + "\n".join(
            f"- [{name}]({name}): {what}" for name, what in companions) + "\n"
    report = os.path.join(out, "REPORT.md")
    write_atomic(report, lambda f: f.write(text.encode()))
    return [report, *written]


def main(argv=None):
    parser = cli.Parser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", help="run to report: path to its JSON or its NNNN prefix "
                        "(default: the latest in --storage)")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="saved runs (default: %(default)s)")
    parser.add_argument("--out", type=cli.output_folder, default=DEFAULT_OUT,
                        help="where REPORT.md and charts go (default: %(default)s)")
    try:
        args = parser.parse_args(argv)
        run = find_run(args.run, args.storage) if args.run else require_runs(args.storage)[-1]
        written = write_report(run, args.out)
    except (cli.UsageError, RunError) as error:
        print(f"{cli.prog('python -m bench.report')}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"{cli.prog('python -m bench.report')}: error: cannot write to --out {args.out}: "
              f"{error.strerror or error}", file=sys.stderr)
        return 2
    if os.path.abspath(args.out) == os.path.abspath(DEFAULT_OUT) and sync_readme(written):
        written.append(README)
    print(f"report of {display_path(run['path'])}: wrote {', '.join(display_path(p) for p in written)}")
    return 0


README = os.path.join(os.path.dirname(os.path.abspath(DEFAULT_OUT)), "README.md")
START, END = "<!-- main-table:start -->", "<!-- main-table:end -->"


def sync_readme(written):
    """The README's results table is the report's answer table, copied between the same markers
    (never typed): True when README.md was rewritten."""
    report = next((p for p in written if p.endswith("REPORT.md")), None)
    if report is None or not os.path.exists(README):
        return False
    with open(report, encoding="utf-8") as f:
        table = f.read().partition(START)[2].partition(END)[0]
    with open(README, encoding="utf-8") as f:
        text = f.read()
    if not table or START not in text:
        return False
    before, _, rest = text.partition(START)
    files.write_text_atomic(README, before + START + table + END + rest.partition(END)[2])
    return True


if __name__ == "__main__":
    sys.exit(main())
