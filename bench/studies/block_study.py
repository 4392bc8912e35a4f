"""Does the block length of paired timing bias the ratio? A measurement, not a test.

    python -m bench.block_study [--cells aotinductor:1,compile-step-im2col:256,onnxruntime:1] [--seconds 4]
                                [--threads N]

For each cell (backend:batch, training step on CPU) the paired speedup against eager is measured
with blocks of one call each, 10 ms, 50 ms (the benchmarks' choice) and 200 ms, and then by a long
sequential measurement: eager, backend, backend, eager, each for `--seconds` / 4 in one piece. If
50 ms blocks read the same ratio as the long sequential blocks, the pairing does not bias it;
single calls show how much cache interference between neighbours moves a ratio. Writes
results/block_length.md and .json.
"""

import argparse
import json
import os
import statistics
import sys

import torch

import model
from bench import backends, cli, files, session
from bench.backends import EAGER
from bench.cli import Parser, UsageError
from bench.measure import machine, noise, timing
from bench.reporting.format import markdown_table

BLOCKS = [("one call", 1e-9), ("10 ms", 0.01), ("50 ms", 0.05), ("200 ms", 0.2)]


def step_of(name, batch_size):
    """One training step of a fresh `name` runner on the batch pool's next batch, after five warm-up steps."""
    runner = backends.create(name, model.make_net().state_dict())
    return timing.warm(session.one_call(runner, "train", model.make_batch_pool(batch_size), "cpu"), calls=5)


def sequential(call, baseline, seconds):
    """E B B E, each one piece of seconds/4: the ratio of eager's per-call time to the backend's, per
    half (E B and B E), and over all."""
    def piece(fn):
        return statistics.fmean(timing.timed_for(fn, seconds / 4))
    e1, b1, b2, e2 = piece(baseline), piece(call), piece(call), piece(baseline)
    return {"first_half": e1 / b1, "second_half": e2 / b2, "overall": (e1 + e2) / (b1 + b2)}


def main(argv=None):
    parser = Parser(prog="python -m bench.block_study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="aotinductor:1,compile-step-im2col:256,onnxruntime:1",
                        help="backend:batch pairs (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per measurement (default 4)")
    parser.add_argument("--threads", type=cli.positive, default=None,
                        help="intra-op threads, set before any runner is made (default: torch's own)")
    parser.add_argument("--out", type=cli.output_folder, default="results")
    try:
        args = parser.parse_args(argv)
        cells = []
        for item in cli.parse_list(args.cells, "cell"):
            name, _, batch = item.partition(":")
            cli.backend_list(name)
            cells.append((name, cli.positive(batch)))
    except (UsageError, argparse.ArgumentTypeError, ValueError) as error:
        print(f"{cli.prog('python -m bench.block_study')}: error: {error}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for name, batch_size in cells:
        eager, call = step_of(EAGER, batch_size), step_of(name, batch_size)
        row = {"backend": name, "batch_size": batch_size}
        monitor = noise.Monitor().start()
        for label, block in BLOCKS:
            # Times as the benchmarks do, but at each block length in turn: what this study varies.
            timed = session.time_paired(call, eager, "cpu", args.seconds, block_seconds=block,
                                        min_block_calls=1)
            info = timing.summarize([timed.blocks()])
            row[label] = [info["speedup"], info["speedup_low"], info["speedup_high"]]
        row["sequential"] = sequential(call, eager, args.seconds)
        row.update(monitor.stop())
        results.append(row)
        print(json.dumps(row), flush=True)
    lines = ["# Paired timing: block length against a long sequential measurement", "",
             f"Command: `python -m bench.block_study --cells {args.cells} --seconds {args.seconds:g}"
             + (f" --threads {args.threads}" if args.threads else "") + "`; "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads, {machine.cpu_model()}. "
             "Training step, speedup of the backend against eager: paired median [95% interval] per "
             "block length; sequential is E B B E in pieces of a quarter of the time each (first half "
             "/ second half / overall).", ""]
    table = []
    for row in results:
        seq = row["sequential"]
        cells = [f"{row[label][0]:.2f} [{row[label][1]:.2f}, {row[label][2]:.2f}]" for label, _ in BLOCKS]
        other = row.get("noise_others_cpu")
        table.append([row["backend"], row["batch_size"], *cells,
                      f"{seq['first_half']:.2f} / {seq['second_half']:.2f} / {seq['overall']:.2f}",
                      "-" if other is None else f"{100 * other:.0f}%"])
    header = ["backend", "batch", *(label for label, _ in BLOCKS), "sequential", "others' CPU"]
    lines.append(markdown_table(header, table))
    files.write_text_atomic(os.path.join(args.out, "block_length.md"), "\n".join(lines) + "\n")
    files.write_text_atomic(os.path.join(args.out, "block_length.json"),
                              json.dumps(results, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
