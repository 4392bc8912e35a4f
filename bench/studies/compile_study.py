"""What closes torch.compile's gap to eager? Variants of the compiled steps, each timed paired with eager.

    python -m bench.compile_study [--variants all] [--batch-sizes 1,64,256] [--seconds 3] [--threads 1]

Each variant is a configuration of bench/backends (compile_loop or compile) with extra Runner options,
same math as its configuration: it must pass the agreement check (20 steps against float64, at the
batch size timed) before it is timed, and one that fails is listed as failing, untimed. Timing: the
suite's paired method (bench/measure/timing.py), training step, the variant's blocks alternating with eager's
in one process, speedup = eager's time / the variant's, median [95% interval]. Writes
results/compile_study.md and .json, with the load average at the start and end of each cell.
"""

import argparse
import json
import os
import shlex
import sys
import time

import torch

import model
from bench import backends, cli, files, session
from bench.backends import EAGER
from bench.cli import Parser, UsageError
from bench.measure import agreement, machine, noise, timing
from bench.reporting.format import interval_text, markdown_table

NCHW = {"layout_optimization": False}  # Inductor keeps the Net's NCHW layout (on CPU it goes channels-last)


def lite_options():
    """torch.compile(mode="lite")'s Inductor options (every op falls back to aten, no graph passes), or {}
    on a torch that has no such mode."""
    try:
        return dict(torch._inductor.list_mode_options("lite"))
    except (KeyError, RuntimeError):
        return {}


LITE = lite_options()


def variant(config, what="as configured", **changes):
    """(configuration, its Runner options with `changes`, what they change)."""
    return config, {**backends.CONFIGS[config][1], **changes}, what


VARIANTS = {
    "compile-net": variant("compile-net"),
    "compile-net nchw": variant("compile-net", "Inductor's layout optimisation off: convolutions, pools and "
                                "ReLUs stay NCHW", inductor_options=NCHW),
    "compile-net lite": variant("compile-net", "mode='lite' options: every op through aten "
                                "(fallback_by_default, selective_decompose), no graph passes",
                                inductor_options=LITE),
    "compile-net lite nchw": variant("compile-net", "lite's options and layout optimisation off",
                                     inductor_options={**LITE, **NCHW}),
    "compile-net lite cpp-wrapper": variant("compile-net", "lite's options and Inductor's C++ wrapper",
                                            inductor_options={**LITE, "cpp_wrapper": True}),
    "compile-net lite nchw cpp-wrapper": variant("compile-net", "lite's options, layout optimisation off, "
                                                 "the C++ wrapper",
                                                 inductor_options={**LITE, **NCHW, "cpp_wrapper": True}),
    "compile-net aten-fallback": variant("compile-net", "fallback_by_default alone: every op through aten, "
                                         "graph passes kept", inductor_options={"fallback_by_default": True}),
    "compile-step": variant("compile-step"),
    "compile-step cpp-wrapper": variant("compile-step", "Inductor's C++ wrapper, not its Python one",
                                        cpp_wrapper=True),
    "compile-step nchw": variant("compile-step", "Inductor's layout optimisation off", inductor_options=NCHW),
    "compile-step-nchw": variant("compile-step-nchw", "as configured: both of the above"),
    "compile-step amax-pools": variant("compile-step", "the 2x2 max-pools rewritten to reshape + amax "
                                       "(im2col's pool rewrite), aten's convolutions", im2col="pools"),
    "compile-step amax-pools nchw": variant("compile-step", "the pool rewrite, layout optimisation off",
                                            im2col="pools", inductor_options=NCHW),
    "compile-step-im2col": variant("compile-step-im2col"),
}


def runner_factory(name):
    config, options, _ = VARIANTS[name]

    def factory(state_dict, device, dtype):
        return backends.create(config, state_dict, device, dtype, **options)
    return factory


def measure(name, batch_size, seconds):
    """Agreement, then the paired speedup of one variant at one batch size."""
    runner = runner_factory(name)(model.make_net(0).state_dict(), "cpu", torch.float32)
    [result] = agreement.check([], "cpu", steps=agreement.DEFAULT_STEPS, batch_size=batch_size, seed=0,
                               extra={name: lambda *args: runner})  # checks the very runner timed below
    row = {"variant": name, "batch_size": batch_size, "agreement": agreement.status(result)}
    if not result.passed:
        return row
    pool = model.make_batch_pool(batch_size)
    call = timing.warm(session.one_call(runner, "train", pool, "cpu"), calls=5)
    eager_runner = backends.create(EAGER, model.make_net().state_dict())
    eager = timing.warm(session.one_call(eager_runner, "train", pool, "cpu"), calls=5)
    load = noise.load_average()
    timed = session.time_paired(call, eager, "cpu", seconds)
    info = timing.summarize([timed.blocks()])
    row.update(speedup=[info["speedup"], info["speedup_low"], info["speedup_high"]],
               load_average=[load, noise.load_average()], **timed.noise)
    return row


def render(rows, command):
    lines = ["# What was tried to close torch.compile's gap to eager", "",
             f"- Command: `{command}`; torch {torch.__version__}, {torch.get_num_threads()} threads, "
             f"{machine.cpu_model()}.",
             "- Training step; speedup = eager's time per step / the variant's, paired "
             f"{timing.BLOCK_SECONDS * 1e3:.0f} ms blocks in one "
             "process (bench/measure/timing.py), median [95% interval]. Every variant passed the agreement "
             f"check ({agreement.DEFAULT_STEPS} steps against float64 at the batch size timed) before it was "
             "timed. Load average: the machine's 1-minute load at the start and end of each cell (other "
             "processes share it).", ""]
    table = []
    for row in rows:
        if "speedup" in row:
            figure = interval_text(row["speedup"])
            load = " - ".join(f"{v:.1f}" for v in row["load_average"])
        else:
            figure, load = f"agreement {row['agreement']}: not timed", "-"
        table.append([row["variant"], VARIANTS[row["variant"]][2], row["batch_size"], figure, load])
    header = ["variant", "what it changes", "batch", "speedup vs eager", "load average"]
    lines.append(markdown_table(header, table))
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = Parser(prog="python -m bench.compile_study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="all", help=f"comma-separated, or all: {', '.join(VARIANTS)}")
    parser.add_argument("--batch-sizes", type=cli.positive_list, default=[1, 64, 256])
    parser.add_argument("--seconds", type=float, default=3.0, help="paired seconds per cell (default 3)")
    parser.add_argument("--threads", type=cli.positive, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=cli.output_folder, default="results")
    try:
        args = parser.parse_args(argv)
        names = (list(VARIANTS) if args.variants == "all"
                 else cli.parse_list(args.variants, "variant", VARIANTS))
    except (UsageError, argparse.ArgumentTypeError, ValueError) as error:
        print(f"{cli.prog('python -m bench.compile_study')}: error: {error}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    chosen = "all" if names == list(VARIANTS) else shlex.quote(",".join(names))
    command = (f"python -m bench.compile_study --variants {chosen} --batch-sizes "
               f"{','.join(map(str, args.batch_sizes))} --seconds {args.seconds:g} --threads {args.threads}")
    rows = []
    for batch_size in args.batch_sizes:
        for name in names:
            start = time.perf_counter()
            rows.append(measure(name, batch_size, args.seconds))
            print(json.dumps(rows[-1]), f"({time.perf_counter() - start:.0f} s)", flush=True)
    files.write_text_atomic(os.path.join(args.out, "compile_study.md"), render(rows, command))
    files.write_text_atomic(os.path.join(args.out, "compile_study.json"), json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
