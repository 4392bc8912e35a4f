"""Does `compile`'s autotuned training step depend on what the autotuner happened to measure?
(`compile` is the configuration now named compile-step-im2col.)

Compiles the step cold several times, each in a fresh process with a fresh
TORCHINDUCTOR_CACHE_DIR, records the kernel Inductor's autotuner picks for every GEMM (with
the timings it based the pick on), and times the resulting step right after compiling it,
beside eager and beside the same step compiled with mode "default" (no autotuning): the three
alternate in ~50 ms blocks, order reversed every round, and each round gives one ratio.

Command:  python -m bench.autotune_study [--repeats 3] [--batch-sizes 1,64,256] [--out results]
Writes results/autotune.json and results/autotune.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import cli, files
from bench.launch import process

# The configuration studied: `compile`'s training step as it was until this study (bf7568f), autotuned;
# compared with the same options in mode "default". (Only the step is compiled and timed here.)
AUTOTUNED = {"mode": "max-autotune-no-cudagraphs"}
ROUNDS = 40  # 3 variants x 50 ms x 40 rounds: about 6 s of timing per batch size


def child(batch_sizes):
    """One cold process: compile, record picks, time. Returns its results (bench/launch/process.py
    writes them to --result)."""
    import torch
    from torch._inductor import select_algorithm

    import model
    from bench import backends
    from bench.backends import EAGER
    from bench.backends import compile as compile_backend
    from bench.measure import noise, timing

    picks = []
    original = select_algorithm.AlgorithmSelectorCache.log_results

    def record(name, input_nodes, timings, *args, **kwargs):
        # Every autotuned GEMM passes through here with the timing of each candidate kernel.
        times = {getattr(c, "name", str(c)): t for c, t in timings.items()}
        best = min(times, key=times.get) if times else None
        picks.append({"op": name, "sizes": [[int(s) for s in n.get_size()] for n in input_nodes],
                      "chosen": best, "timings_ms": dict(sorted(times.items(), key=lambda kv: kv[1]))})
        return original(name, input_nodes, timings, *args, **kwargs)

    select_algorithm.AlgorithmSelectorCache.log_results = staticmethod(record)
    # Every GEMM Inductor lowers through select_algorithm, with its candidates: a GEMM with one
    # candidate (aten's) is not timed at all, so it never reaches log_results.
    candidates = []
    original_call = select_algorithm.AlgorithmSelectorCache.__call__

    def call(self, name, choices, input_nodes, *args, **kwargs):
        candidates.append({"op": name, "sizes": [[int(s) for s in n.get_size()] for n in input_nodes],
                           "candidates": [getattr(c, "name", str(c)) for c in choices]})
        return original_call(self, name, choices, input_nodes, *args, **kwargs)

    select_algorithm.AlgorithmSelectorCache.__call__ = call
    state = model.make_net(0).state_dict()
    out = {"torch_threads": torch.get_num_threads(), "cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
           "compile_options": AUTOTUNED, "batches": {}}
    for batch_size in batch_sizes:
        x, target = model.make_batch(batch_size, seed=1)
        start, start_candidates = len(picks), len(candidates)
        t0 = time.perf_counter()
        tuned = compile_backend.Runner(state, **AUTOTUNED)
        tuned.train_step(x, target)
        compile_s = time.perf_counter() - t0
        tuned_picks, tuned_gemms = picks[start:], candidates[start_candidates:]
        t0 = time.perf_counter()
        plain = compile_backend.Runner(state, **{**AUTOTUNED, "mode": "default"})
        plain.train_step(x, target)
        plain_compile_s = time.perf_counter() - t0
        eager = backends.create(EAGER, state)
        runners = {EAGER: eager, "autotuned": tuned, "default": plain}
        steps = {name: functools.partial(runner.train_step, x, target) for name, runner in runners.items()}
        for step in steps.values():
            timing.warm(step)
        # calls per block of the benchmarks' length, sized from one step each
        block_calls = {name: timing.calls_per_block(timing.timed_block(step, 1), min_calls=1)
                       for name, step in steps.items()}
        load_before = f"{noise.load_average():.2f}"  # as /proc/loadavg writes it
        # Not session.time_paired: three steps (eager, autotuned, not) alternate in one sequence here.
        blocks = timing.alternating_blocks(steps, block_calls, ROUNDS)
        per_step = {name: [sum(block) / len(block) for block in blocks[name]] for name in steps}
        ratios = {name: [e / t for e, t in zip(per_step[EAGER], per_step[name], strict=True)]
                  for name in ("autotuned", "default")}
        out["batches"][str(batch_size)] = {
            "compile_s": round(compile_s, 2), "default_compile_s": round(plain_compile_s, 2),
            "picks": tuned_picks, "gemms": tuned_gemms,
            "median_step_ms": {name: statistics.median(v) * 1e3 for name, v in per_step.items()},
            "speedup_vs_eager": {name: statistics.median(r) for name, r in ratios.items()},
            "speedup_quartiles": {name: statistics.quantiles(r, n=4)[::2] for name, r in ratios.items()},
            "autotuned_vs_default": statistics.median(
                d / a for d, a in zip(per_step["default"], per_step["autotuned"], strict=True)),
            "loadavg_before_timing": load_before, "loadavg_after_timing": f"{noise.load_average():.2f}",
        }
    return out


def pick_signature(batch):
    return [(p["op"], tuple(map(tuple, p["sizes"])), p["chosen"]) for p in batch["picks"]]


def markdown(data):
    cores = f"{data['cpu_count']} cores, " if data.get("cpu_count") else ""  # recorded where it was measured
    lines = ["# Does `compile`'s autotuned step depend on a lucky pick?", "",
             f"Command: `{data['command']}` (torch {data['torch']}, {data['cpu']}, "
             f"{data['runs'][0]['torch_threads']} torch threads)"
             + (f"; written here by `{data['rendered_with']}`." if data.get("rendered_with") else "."), "",
             "Each repeat is a fresh process with an empty TORCHINDUCTOR_CACHE_DIR: the step is compiled "
             "cold "
             "with the options `compile` had until this study (mode `max-autotune-no-cudagraphs` for the "
             "training step), and Inductor's autotuner picks a "
             "kernel for each GEMM by timing the candidates at compile time. Right after compiling, the "
             "process times eager, the autotuned step and the same step compiled with mode `default` in "
             f"alternating ~{data['block_s'] * 1e3:.0f} ms blocks ({data['rounds']} rounds); speedups are "
             "medians of the "
             "per-round ratios against eager, [lower quartile, upper quartile] beside them. The autotuned "
             "step "
             "compiles first in each process, so its compile time includes Inductor's one-time start-up.", "",
             f"**This machine is shared**: {cores}other engineers ran tests and builds on it during these "
             "measurements (load average beside each row). That is the situation the autotuner meets when "
             "it times kernels at compile time, so it is the situation this study measures.", "",
             "## Speed", "",
             "| batch | repeat | compile s (autotuned / default) | autotuned vs eager | default vs eager | "
             "autotuned vs default | load avg |", "|---|---|---|---|---|---|---|"]
    for b in data["batch_sizes"]:
        for i, run in enumerate(data["runs"], 1):
            r = run["batches"][str(b)]
            q = r["speedup_quartiles"]
            lines.append(
                f"| {b} | {i} | {r['compile_s']:.1f} / {r['default_compile_s']:.1f} | "
                f"{r['speedup_vs_eager']['autotuned']:.2f}x "
                f"[{q['autotuned'][0]:.2f}, {q['autotuned'][1]:.2f}] | "
                f"{r['speedup_vs_eager']['default']:.2f}x [{q['default'][0]:.2f}, {q['default'][1]:.2f}] | "
                f"{r['autotuned_vs_default']:.2f}x | "
                f"{r['loadavg_before_timing']}-{r['loadavg_after_timing']} |")
    lines += ["", "## What was autotuned", "",
              "Every GEMM Inductor lowered in the step (repeat 1), and its candidate kernels: a GEMM with "
              "one "
              "candidate (aten's) is not timed at all. Inductor's C++ GEMM template needs a constant weight "
              "for `mm` (a training step's weights are inputs), so only batched matmuls can get a second "
              "candidate.", "",
              "| batch | GEMMs | with more than one candidate | candidates |", "|---|---|---|---|"]
    for b in data["batch_sizes"]:
        gemms = data["runs"][0]["batches"][str(b)].get("gemms", [])
        tuned = [g for g in gemms if len(g["candidates"]) > 1]
        kinds = sorted({f"{g['op']}: {', '.join(g['candidates'])}" for g in tuned})
        lines.append(f"| {b} | {len(gemms)} | {len(tuned)} | {'; '.join(kinds) or '-'} |")
    lines += ["", "## Picks", "",
              "Kernel chosen for each autotuned GEMM (input sizes), per repeat; the two fastest candidates' "
              "compile-time timings in ms.", ""]
    for b in data["batch_sizes"]:
        sigs = [pick_signature(run["batches"][str(b)]) for run in data["runs"]]
        same = all(s == sigs[0] for s in sigs)
        verdict = "identical" if same else "DIFFER"
        if not any(sigs):
            lines += [f"### Batch {b}: no GEMM had a second candidate in any repeat: nothing was picked", ""]
            continue
        lines += [f"### Batch {b}: picks {verdict} across the {len(sigs)} repeats", "",
                  "| GEMM | " + " | ".join(f"repeat {i}" for i in range(1, len(sigs) + 1)) + " |",
                  "|---|" + "---|" * len(sigs)]
        for j, p in enumerate(data["runs"][0]["batches"][str(b)]["picks"]):
            cells = []
            for run in data["runs"]:
                runs_picks = run["batches"][str(b)]["picks"]
                if j >= len(runs_picks):
                    cells.append("-")
                    continue
                top = list(runs_picks[j]["timings_ms"].items())[:2]
                cells.append(f"`{runs_picks[j]['chosen']}` (" + ", ".join(f"{t:.4f}" for _, t in top) + ")")
            sizes = " x ".join("x".join(map(str, s)) for s in p["sizes"])
            lines.append(f"| {p['op']} {sizes} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Verdict", "", data["verdict"], ""]
    return "\n".join(lines)


def parse_args(argv):
    parser = cli.Parser(prog="python -m bench.autotune_study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=cli.positive, default=3)
    parser.add_argument("--batch-sizes", type=cli.positive_list, default="1,64,256")
    parser.add_argument("--out", type=cli.output_folder, default="results")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)  # the child's: where its results go
    parser.add_argument("--verdict", default="", help="the conclusion written into autotune.md")
    parser.add_argument("--render", nargs="+", metavar="JSON",
                        help="no measuring: write autotune.md/.json from the runs in these autotune.json "
                             "files "
                             "(repeats made by separate invocations are concatenated)")
    args = parser.parse_args(argv)
    if args.child and not args.result:
        raise cli.UsageError("--child needs --result FILE")
    return args


def main(argv=None):
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except cli.UsageError as error:
        print(f"{cli.prog('python -m bench.autotune_study')}: error: {error}", file=sys.stderr)
        return 2
    batch_sizes = args.batch_sizes
    if args.child:
        return process.child("bench.studies.autotune_study", lambda: child(batch_sizes), args.result)
    if args.render:
        try:
            parts = [json.loads(Path(path).read_text()) for path in args.render]
        except (OSError, ValueError) as error:
            print(f"{cli.prog('python -m bench.autotune_study')}: error: --render: {error}", file=sys.stderr)
            return 2
        data = {**parts[0], "runs": [run for part in parts for run in part["runs"]],
                "verdict": args.verdict or parts[0]["verdict"]}
        if len(parts) > 1:
            data["command"] = " ; ".join(part["command"] for part in parts)
        data["rendered_with"] = (f"python -m bench.autotune_study --render {' '.join(args.render)} "
                                 f"--out {args.out}")
        return write(data, args.out)
    import torch

    from bench.measure import machine, timing

    runs = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="autotune-cache-") as cache:
            try:
                run = process.run("bench.studies.autotune_study",
                                  ["--child", "--batch-sizes", ",".join(map(str, batch_sizes))],
                                  timeout=process.CHILD_TIMEOUT * len(batch_sizes),  # per batch size
                                  env={"TORCHINDUCTOR_CACHE_DIR": cache})
            except process.ChildFailed as error:
                print(f"{cli.prog('python -m bench.autotune_study')}: error: {error}", file=sys.stderr)
                return 1
            runs.append(run)
            print(f"repeat {i + 1}: " + "\n".join(f"batch {b}: {run['batches'][str(b)]['speedup_vs_eager']}"
                                                 for b in batch_sizes))
    given = argv if argv is not None else sys.argv[1:]
    data = {"command": "python -m bench.autotune_study " + " ".join(given),
            "torch": torch.__version__, "cpu": machine.cpu_model(), "cpu_count": os.cpu_count(),
            "batch_sizes": batch_sizes,
            "block_s": timing.BLOCK_SECONDS, "rounds": ROUNDS, "verdict": args.verdict, "runs": runs}
    return write(data, args.out)


def write(data, out):
    runs, batch_sizes = data["runs"], data["batch_sizes"]
    files.write_text_atomic(os.path.join(out, "autotune.json"), json.dumps(data, indent=1) + "\n")
    files.write_text_atomic(os.path.join(out, "autotune.md"), markdown(data))
    for b in batch_sizes:
        sigs = [pick_signature(run["batches"][str(b)]) for run in runs]
        print(f"batch {b}: picks {'identical' if all(s == sigs[0] for s in sigs) else 'DIFFER'}; speedups "
              + ", ".join(f"{run['batches'][str(b)]['speedup_vs_eager']['autotuned']:.2f}x" for run in runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
