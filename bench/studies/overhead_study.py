"""Where compile-net's training step spends its time outside kernels, beside eager's:
results/compile_overhead.md and .json.

    lenet-bench study overhead [--threads 1,2] [--batch-sizes 1,64,256] [--seconds 8] [--profile-seconds 1]

Both runners are the suite's own (bench/backends: eager, compile-net = the tutorial's loop around
torch.compile(net)). Each thread count runs in a fresh process (bench/launch/process.py, OMP_NUM_THREADS
set before torch starts); each batch size starts from an empty Dynamo cache, as a benchmark worker
holds one batch size. Per batch size:

1. Un-profiled stage times. The runner's step is run as its stages (zero_grad, forward, loss,
   backward, optimizer step, and the glue: check_input before, detach after) on the runner's own
   objects, with a timestamp between stages. Eager's and compile-net's staged steps and their
   untouched `train_step`s alternate in blocks (A B C D | D C B A | ...), so all four see the same
   phases of the machine. Figures are medians over blocks of the block means; the ratio is eager's
   train_step over compile-net's, one per round, median and bootstrap interval.
2. The profiled split. The same staged step, each stage inside a record_function span, under
   torch.profiler (CPU); compile-net from a build with Inductor's `cpp.enable_kernel_profile`, so
   its generated C++ kernels are ranges of their own and Inductor's `call` keeps only its Python.
   Within a stage each event's self time goes to a category by the span torch emits (Dynamo's
   "TorchDynamo Cache Lookup", "Torch-Compiled Region", AOTAutograd's "CompiledFunction" and
   "CompiledFunctionBackward", Inductor's "## Call CompiledFxGraph ... ##", the autograd engine's
   "evaluate_function" and node ranges, the optimizer's); kernels (aten ops, Inductor's kernels)
   count whole; what no span covers is the stage's own Python.
3. Each stage's un-profiled time is split in its profiled proportions (the profiler lengthens
   every span, most at batch 1, so absolute figures come from step 1 only), after taking the cost
   of the study's own spans out (an empty span profiled alongside). The remainder row is the
   untouched train_step less the staged step (the stages' medians are scaled to the staged
   step's median, since medians do not add): so the rows add up to the measured step time.

Also un-profiled, as a cross-check of the cache-lookup row: Dynamo's guard manager called directly
on the forward frame's locals. Both files are written atomically.
"""

import argparse
import gc
import itertools
import json
import os
import re
import shlex
import statistics
import sys
import time
from datetime import datetime

import torch

import model
from bench import backends, cli, files
from bench.cli import Parser, UsageError
from bench.launch import process
from bench.measure import machine, noise, timing
from bench.reporting.format import interval_text, markdown_table, us
from bench.studies.profile import KERNEL_NAME

INDUCTOR_KERNEL = re.compile(r"cpp_fused|^graph_\d+_")

BACKENDS = ["eager", "compile-net"]
STAGES = ["glue", "zero_grad", "forward", "loss", "backward", "step"]
SPAN = "overhead_study."  # prefix of the record_function span around each stage when profiled
MODULE = "bench.studies.overhead_study"
PROG = "lenet-bench study overhead"

# (stage, category, label): every row of the split, in the report's order. The categories are
# what `category` gives; "kernels" are aten ops and Inductor's kernels counted whole, "python" is the
# stage's time outside every span (and the optimizer's own ranges).
ROWS = [
    ("glue", "python", "glue: check_input, batch cycling, the stages' calls"),
    ("glue", "kernels", "glue: the loss's detach (kernel)"),
    ("zero_grad", "python", "zero_grad (SGD, set_to_none)"),
    ("forward", "guards", "forward: Dynamo cache lookup (guard evaluation)"),
    ("forward", "wrappers", "forward: Dynamo region + AOTAutograd wrappers (CompiledFunction)"),
    ("forward", "inductor_call", "forward: Inductor's `call` (its Python, buffer allocation and frees)"),
    ("forward", "python", "forward: outside every span (nn.Module calls, tensor frees, dispatch)"),
    ("forward", "kernels", "forward: kernels"),
    ("loss", "python", "loss (eager): Python and dispatch outside its kernels"),
    ("loss", "kernels", "loss (eager): kernels"),
    ("backward", "engine", "backward: autograd engine (evaluate_function, nodes, AccumulateGrad)"),
    ("backward", "python", "backward: outside every span (backward()'s Python, the engine's graph task)"),
    ("backward", "aot_backward", "backward: CompiledFunctionBackward (AOTAutograd's wrapper)"),
    ("backward", "inductor_call", "backward: Inductor's `call` (its Python, buffer allocation and frees)"),
    ("backward", "kernels", "backward: kernels"),
    ("step", "python", "optimizer step: SGD's Python outside its kernels"),
    ("step", "kernels", "optimizer step: kernels (add_)"),
    ("any", "other", "other spans (any stage; names in the JSON)"),
]
OTHER_ROW = ROWS[-1][2]
GUARD_ROW = next(label for _, kind, label in ROWS if kind == "guards")
REMAINDER = "remainder: train_step less the staged step (its counter and closure; noise)"


# -----------------------------------------------------------------------------
# the staged step

def staged_step(runner, pool):
    """The runner's train_step as (stage name, function of a state dict) pairs, cycling the pool.
    The same calls on the same objects as bench/backends (eager.py, compile_loop.py)."""
    net = getattr(runner, "compiled_net", runner.net)  # compile-net: torch.compile(net); eager: the Net
    batches = itertools.cycle(pool)

    def glue_in(s):
        s["x"], s["target"] = next(batches)
        model.check_input(s["x"], s["target"], dtype=runner.dtype, device=runner.device)

    def forward(s):
        s["out"] = net(s["x"])

    def loss(s):
        s["loss"] = model.loss_fn(s.pop("out"), s["target"])

    def glue_out(s):
        s["result"] = s.pop("loss").detach()

    return [("glue", glue_in), ("zero_grad", lambda s: runner.optimizer.zero_grad()), ("forward", forward),
            ("loss", loss), ("backward", lambda s: s["loss"].backward()),
            ("step", lambda s: runner.optimizer.step()), ("glue", glue_out)]


def timed_stages(stages, records):
    """A call running `stages` once with a timestamp between stages; each call appends its seconds
    per stage (in STAGES' order) to the flat list `records`: floats, which the garbage collector
    does not track, so the records do not slow the collections of the step they time."""
    clock = time.perf_counter
    where = [STAGES.index(name) for name, _ in stages]

    def call():
        s, times = {}, [0.0] * len(STAGES)
        last = clock()
        for i, (_, stage) in zip(where, stages):
            stage(s)
            now = clock()
            times[i] += now - last
            last = now
        records.extend(times)
        return s["result"]
    return call


def spanned_stages(stages):
    """A call running `stages` once, each inside a record_function span the profile is split by."""
    from torch.profiler import record_function

    def call():
        s = {}
        for name, stage in stages:
            with record_function(SPAN + name):
                stage(s)
        return s["result"]
    return call


# -----------------------------------------------------------------------------
# measuring

def make_runner(name, state, pool, kernel_profile=False):
    """A fresh runner from an empty Dynamo cache, warmed up (its first steps compile);
    `kernel_profile` builds Inductor's kernels with a profiler range each."""
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()  # one batch size per cache, as in a benchmark worker
    with inductor_config.patch({"cpp.enable_kernel_profile": kernel_profile}):
        runner = backends.create(name, state, "cpu")
        train_step(runner, pool)
    return runner


def train_step(runner, pool):
    """The untouched runner.train_step on the pool's batches in turn, warm."""
    batches = itertools.cycle(pool)
    return timing.warm(lambda: runner.train_step(*next(batches)), 5)


def block_medians(records, block_calls):
    """{stage: median over blocks of the block's mean}, from timed_stages' flat records."""
    size = block_calls * len(STAGES)
    blocks = [records[i:i + size] for i in range(0, len(records), size)]
    return {stage: statistics.median(sum(block[j::len(STAGES)]) / block_calls for block in blocks)
            for j, stage in enumerate(STAGES)}


def time_unprofiled(runners, pool, seconds):
    """Staged steps and untouched train_steps of every runner, alternating in blocks."""
    records = {name: [] for name in runners}
    calls = {}
    for name, runner in runners.items():
        calls[f"{name} staged"] = timing.warm(timed_stages(staged_step(runner, pool), records[name]))
        calls[f"{name} step"] = train_step(runner, pool)
    per_call = {key: timing.seconds_per_call(call) for key, call in calls.items()}
    for name in runners:
        records[name].clear()  # the warm-up's and the sizing's calls
    block_calls = {key: timing.calls_per_block(t) for key, t in per_call.items()}
    round_seconds = sum(block_calls[key] * per_call[key] for key in calls)
    rounds = max(timing.MIN_PAIRS, round(seconds / round_seconds))
    rounds += rounds % 2
    timing.settle_heap()
    load = noise.load_average()
    with torch.compiler.set_stance("fail_on_recompile"):  # a recompile in the rounds raises, not timed
        blocks = timing.alternating_blocks(calls, block_calls, rounds)
    result = {"load_average": [load, noise.load_average()], "rounds": rounds, "block_calls": block_calls}
    for name in runners:
        step_means = [sum(block) / len(block) for block in blocks[f"{name} step"]]
        staged_total = statistics.median(sum(block) / len(block) for block in blocks[f"{name} staged"])
        stages = block_medians(records[name], block_calls[f"{name} staged"])
        # medians do not add: the stages' medians scaled to the staged step's own median
        scale = staged_total / sum(stages.values())
        result[name] = {"stages": {stage: seconds * scale for stage, seconds in stages.items()},
                        "stage_medians": stages, "staged_total": staged_total,
                        "step": statistics.median(step_means), "step_means": step_means}
    ratios = [e / c for e, c in zip(result["eager"]["step_means"], result["compile-net"]["step_means"])]
    result["ratio"] = list(timing.median_interval(ratios))
    return result


def category(name, stage):
    """The split's category for a non-kernel event's self time."""
    if name == "TorchDynamo Cache Lookup":
        return "guards"
    if name.startswith("## Call CompiledFxGraph"):
        return "inductor_call"
    if name == "CompiledFunctionBackward":
        return "aot_backward"
    if (name.startswith(("Torch-Compiled Region", "AOTDispatcher")) or name in ("CompiledFunction",
                                                                             "Pregraph bytecode")):
        return "wrappers"
    if name.startswith("Optimizer."):  # SGD's step and zero_grad ranges: their own Python
        return "python"
    if stage == "backward":  # evaluate_function and each autograd node's own range
        return "engine"
    return "other"


def attribute(event, stage, split, others):
    """Add `event`'s time into split[category]: a kernel whole, any other span its self time and its
    children by their own names (spans of no known kind also into `others`, by name)."""
    if KERNEL_NAME.search(event.name):
        split["kernels"] = split.get("kernels", 0.0) + event.time_range.elapsed_us() * 1e-6
        return
    kind = category(event.name, stage)
    seconds = event.self_cpu_time_total * 1e-6
    split[kind] = split.get(kind, 0.0) + seconds
    if kind == "other":
        others[event.name] = others.get(event.name, 0.0) + seconds
    for child in event.cpu_children:
        attribute(child, stage, split, others)


def empty_span():
    from torch.profiler import record_function

    with record_function(SPAN + "empty"):
        pass


def profile_split(call, steps):
    """Profile `steps` calls of a spanned staged step. Per stage and step: its profiled time and
    {category: seconds}, less the stage spans' own cost (the median length of an empty span profiled
    alongside, which would otherwise count as the stage's Python), and the spans that fell into
    "other"; that span cost; Inductor's kernel ranges per step."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]):  # discarded: the profiler's own first-use costs
        timing.warm(call, 3)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        timing.warm(call, steps)
        timing.warm(empty_span, 200)
    events = [event for event in prof.events() if event.cpu_parent is None and event.name.startswith(SPAN)]
    span_cost = statistics.median(event.time_range.elapsed_us() * 1e-6 for event in events
                                  if event.name == SPAN + "empty")
    stages = {stage: {"profiled": 0.0, "split": {"python": 0.0}, "other_spans": {}} for stage in STAGES}
    for event in events:
        stage = event.name[len(SPAN):]
        if stage == "empty":
            continue
        seen = stages[stage]
        seen["profiled"] += event.time_range.elapsed_us() * 1e-6 - span_cost
        seen["split"]["python"] += event.self_cpu_time_total * 1e-6 - span_cost
        for child in event.cpu_children:
            attribute(child, stage, seen["split"], seen["other_spans"])
    for seen in stages.values():
        seen["profiled"] /= steps
        seen["split"] = {kind: value / steps for kind, value in seen["split"].items()}
        seen["other_spans"] = {name: value / steps for name, value in seen["other_spans"].items()}
    # Inductor's kernels as ranges of their own (without them Inductor's `call` would hold its kernels)
    kernel_ranges = sum(INDUCTOR_KERNEL.search(event.name) is not None for event in prof.events()) / steps
    return stages, span_cost, kernel_ranges


def split_rows(unprofiled, profiled):
    """({row label: seconds per step}, the same as profiled): each stage's un-profiled time split in
    its profiled proportions, and the remainder that makes the rows add up to the untouched
    train_step; and each row's profiled seconds, unscaled (for the rows outside kernels an upper
    bound: the profiler only adds time to them)."""
    rows = {label: 0.0 for _, _, label in ROWS}
    raw = dict(rows)
    for stage in STAGES:
        split = profiled[stage]["split"]
        total = sum(split.values())
        for kind, seconds in split.items():
            label = next((label for s, k, label in ROWS if s == stage and k == kind),
                         OTHER_ROW)  # a category this stage has no row for
            rows[label] += unprofiled["stages"][stage] * seconds / total
            raw[label] += seconds
    rows[REMAINDER] = unprofiled["step"] - unprofiled["staged_total"]
    return rows, raw


def guard_check(runner, x, repeats=20, calls=100):
    """Median seconds of one evaluation of the compiled forward's guards, called directly
    (GuardManagerWrapper.check on the forward frame's locals: self and x), un-profiled; None on a
    torch without this (private) API. Each batch size starts from an empty Dynamo cache, so the
    forward has one cache entry."""
    try:
        from torch._dynamo.eval_frame import _debug_get_cache_entry_list

        [entry] = _debug_get_cache_entry_list(model.Net.forward.__code__)
        check = entry.guard_manager.check
    except (ImportError, AttributeError, ValueError):
        return None
    frame_locals = {"self": runner.net, "x": x}
    if not check(frame_locals):
        raise RuntimeError("Dynamo's guards reject the batch the step runs on")
    return statistics.median(timing.timed_block(lambda: check(frame_locals), calls) / calls
                             for _ in range(repeats))


def measure_batch(batch_size, seconds, profile_seconds):
    """One cell: both backends' un-profiled stages and step, their profiled split, the rows."""
    state = model.make_net().state_dict()
    pool = model.make_batch_pool(batch_size)
    runners = {name: make_runner(name, state, pool) for name in BACKENDS}
    unprofiled = time_unprofiled(runners, pool, seconds)
    guards = guard_check(runners["compile-net"], pool[0][0])
    # The instrumented build replaces the benchmarked one in Dynamo's cache (make_runner resets it).
    runners["compile-net"] = make_runner("compile-net", state, pool, kernel_profile=True)
    cell = {"batch": batch_size, "threads": torch.get_num_threads(), "ratio": unprofiled["ratio"],
            "load_average": unprofiled["load_average"], "rounds": unprofiled["rounds"],
            "guard_check": guards, "backends": {}}
    for name, runner in runners.items():
        steps = max(5, min(300, round(profile_seconds / unprofiled[name]["step"])))
        call = timing.warm(spanned_stages(staged_step(runner, pool)), 3)
        profiled, span_cost, kernel_ranges = profile_split(call, steps)
        rows, raw = split_rows(unprofiled[name], profiled)
        outside = [label for _, kind, label in ROWS if kind != "kernels"]
        cell["backends"][name] = {
            "step": unprofiled[name]["step"], "staged_total": unprofiled[name]["staged_total"],
            "stages": unprofiled[name]["stages"], "stage_medians": unprofiled[name]["stage_medians"],
            "profiled_stages": profiled, "profiled_steps": steps, "span_cost": span_cost,
            "inductor_kernel_ranges": kernel_ranges, "rows": rows, "profiled_rows": raw,
            "kernels": sum(rows[label] for _, kind, label in ROWS if kind == "kernels"),
            "kernels_profiled": sum(raw[label] for _, kind, label in ROWS if kind == "kernels"),
            # the staged step's rows outside kernels: the remainder (noise, mostly) stays apart
            "outside_kernels": sum(rows[label] for label in outside),
            "outside_kernels_profiled": sum(raw[label] for label in outside)}
    del runners
    gc.collect()
    return cell


def measure_threads(batch_sizes, seconds, profile_seconds, progress=print):
    """Every batch size at this process's thread count."""
    cells = []
    for batch_size in batch_sizes:
        start = time.perf_counter()
        cells.append(measure_batch(batch_size, seconds, profile_seconds))
        c = cells[-1]["backends"]
        progress(f"threads {torch.get_num_threads()} batch {batch_size}: eager {us(c['eager']['step'])} us, "
                 f"compile-net {us(c['compile-net']['step'])} us per step "
                 f"({time.perf_counter() - start:.0f} s)")
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "cells": cells}


# -----------------------------------------------------------------------------
# output

# The rows that are torch.compile's own machinery (eager has none of them).
COMPILE_ROWS = [label for _, kind, label in ROWS
                if kind in ("guards", "wrappers", "inductor_call", "aot_backward")]


def largest_differences(cell, count=3):
    """The rows where compile-net spends the most beyond eager (the remainder left out)."""
    eager, compiled = (cell["backends"][name]["rows"] for name in BACKENDS)
    differences = sorted(((compiled[label] - eager[label], label) for _, _, label in ROWS), reverse=True)
    return "; ".join(f"{label.split(' (')[0]} {signed(d)}" for d, label in differences[:count])


def signed(seconds):
    return ("+" if seconds >= 0 else "-") + us(abs(seconds))


def summary_table(cells):
    rows = []
    for cell in cells:
        eager, compiled = (cell["backends"][name] for name in BACKENDS)
        machinery = sum(compiled["rows"][label] for label in COMPILE_ROWS)
        rows.append([cell["threads"], cell["batch"], us(eager["step"]), us(compiled["step"]),
                     interval_text(cell["ratio"]), us(eager["outside_kernels"]),
                     us(compiled["outside_kernels"]),
                     signed(compiled["outside_kernels"] - eager["outside_kernels"]), us(machinery),
                     f"{us(eager['outside_kernels_profiled'])} / {us(compiled['outside_kernels_profiled'])}",
                     f"{signed(eager['rows'][REMAINDER])} / {signed(compiled['rows'][REMAINDER])}",
                     largest_differences(cell)])
    return markdown_table(["threads", "batch", "eager us/step", "compile-net us/step",
                           "eager / compile-net", "outside kernels: eager", "compile-net", "difference",
                           "of which torch.compile's guards and wrappers",
                           "outside kernels profiled, eager / compile-net (upper bounds)",
                           "remainder, eager / compile-net", "largest differences (us/step)"], rows)


def cell_section(cell):
    eager, compiled = (cell["backends"][name] for name in BACKENDS)

    def row(label, key=None):
        figures = [b["rows"][label] if key is None else b[key] for b in (eager, compiled)]
        profiled = [b["profiled_rows"].get(label) if key is None else b.get(key + "_profiled")
                    for b in (eager, compiled)]
        shown = ["-" if p is None else us(p) for p in profiled]
        return [label, us(figures[0]), shown[0], us(figures[1]), shown[1], signed(figures[1] - figures[0])]

    rows = [row(label) for _, _, label in ROWS]
    rows += [row("**outside kernels** (the rows above but kernels)", "outside_kernels"),
             row("**kernels, all stages**", "kernels"), row(REMAINDER),
             row("**train_step (un-profiled, = the sum of the rows)**", "step")]
    stages = [[stage, us(eager["stages"][stage]), us(eager["profiled_stages"][stage]["profiled"]),
               us(compiled["stages"][stage]), us(compiled["profiled_stages"][stage]["profiled"])]
              for stage in STAGES]
    others = {name: seconds for b in (eager, compiled) for seen in b["profiled_stages"].values()
              for name, seconds in seen["other_spans"].items()}
    guards = "-" if cell["guard_check"] is None else us(cell["guard_check"])
    lines = [f"### {cell['threads']} thread{'s' * (cell['threads'] != 1)}, batch {cell['batch']}", "",
             f"eager / compile-net (train_step, paired rounds): {interval_text(cell['ratio'])}, "
             f"{cell['rounds']} rounds; load average {cell['load_average'][0]:.1f} - "
             f"{cell['load_average'][1]:.1f}.", "",
             markdown_table(["us per step", "eager", "eager profiled", "compile-net", "compile-net profiled",
                             "compile-net - eager"], rows), "",
             "Stages, us per step: un-profiled (the rows above split these) and profiled (the profile the "
             "split comes from; compile-net's is the build with per-kernel ranges):", "",
             markdown_table(["stage", "eager", "eager profiled", "compile-net", "compile-net profiled"],
                            stages),
             "", f"Guard evaluation alone, un-profiled (Dynamo's guard manager called directly on the "
             f"forward frame's locals): {guards} us per call, against {us(compiled['rows'][GUARD_ROW])} us "
             f"in the cache-lookup row. Profiled empty-span cost taken out of each stage: eager "
             f"{us(eager['span_cost'])} us, compile-net {us(compiled['span_cost'])} us per span."]
    if others:
        lines[-1] += " Other spans (profiled us/step): " + ", ".join(
            f"`{name}` {us(seconds)}" for name, seconds in others.items()) + "."
    return lines + [""]


def render(results, settings):
    cells = [cell for result in results for cell in result["cells"]]
    lines = ["# compile-net's training step outside kernels, against eager's", "",
             f"- Date: {settings['date']}; torch {results[0]['torch']}; "
             f"{', '.join(str(r['threads']) for r in results)} torch threads (one process each); "
             f"{machine.cpu_model()}, {os.cpu_count()} CPUs.",
             f"- Reproduce: `{settings['command']}`",
             "- What is timed: the suite's own runners (bench/backends: `eager`, and `compile-net`, the "
             "tutorial's loop around `torch.compile(net)`), training step = zero_grad, forward, MSE loss, "
             "backward, SGD step, on the suite's batch pool; each batch size from an empty Dynamo cache.",
             "- Method (bench/studies/overhead_study.py): (1) without a profiler, each runner's step run as "
             "its stages with a timestamp between them, and its untouched train_step, the four alternating "
             f"in blocks of about {timing.BLOCK_SECONDS * 1e3:.0f} ms (order reversed every round), "
             "medians over blocks of the block means (the stages' medians scaled to the staged step's "
             "median, since medians do not add); (2) under torch.profiler the same staged step, each stage a "
             "record_function span, compile-net built with Inductor's `cpp.enable_kernel_profile` so its "
             "C++ kernels are ranges apart from Inductor's `call`; within a stage each span's self time goes "
             "to the row its name says (Dynamo's `TorchDynamo Cache Lookup`, `Torch-Compiled Region`, "
             "`Pregraph bytecode`, `AOTDispatcher Runtime Wrapper Prologue`, AOTAutograd's "
             "`CompiledFunction` and `CompiledFunctionBackward`, Inductor's "
             "`## Call CompiledFxGraph ... ##`, "
             "the autograd engine's `evaluate_function` and node ranges, SGD's ranges), kernels (aten ops, "
             "Inductor's kernels) whole, the rest of the stage to its Python row, less the study's own "
             "spans' cost (an empty span profiled alongside); (3) each stage's un-profiled time split in "
             "those proportions. The remainder row is the untouched train_step less the staged step, so "
             "each column adds up to the measured step time. Inductor's `call` rows hold its buffer "
             "allocations (its empty_strided calls have no aten range) and frees; the forward's "
             "outside-every-span row holds tensor frees and nn.Module's Python.",
             "- Profiler overhead: torch.profiler (and, for compile-net, its kernel ranges) lengthens every "
             "stage, most at batch 1 (each cell's stage table gives both times). Absolute figures are "
             "therefore un-profiled stage times and only the split inside a stage comes from the profile; "
             "there the profiler's roughly fixed cost per event over-weights spans that are short or have "
             "many children (the cache lookup, the wrappers): read those rows as upper bounds. Where the "
             "instrumented build's kernels run slower than the benchmarked build's (the stage tables), the "
             "kernels' share rises and the outside-kernel rows of that stage lean low. The "
             "un-profiled guard check under each table is the cleaner figure for guard evaluation. A "
             "kernel's own dispatch (inside its aten range) counts as kernel time.",
             f"- Timing settings: {settings['seconds']:g} s of alternating blocks per cell, profile of about "
             f"{settings['profile_seconds']:g} s per backend and cell (5 to 300 steps).", "",
             "## Summary", "", "Microseconds per training step. Outside kernels = the sum of the un-profiled "
             "rows outside kernels (the step less its kernels and the remainder); torch.compile's "
             "guards and wrappers = the cache lookup, region/AOTAutograd "
             "wrapper, Inductor `call` and CompiledFunctionBackward rows. The profiled figures are the "
             "same rows' profiled times unscaled: outside kernels the profiler only adds time, so they "
             "bound the estimates from above. Remainder = the untouched train_step less the staged step "
             "(timing noise, mostly), kept out of outside kernels.", "", summary_table(cells), "",
             "## The split, per thread count and batch size", ""]
    for cell in cells:
        lines += cell_section(cell)
    return "\n".join(lines)


def seconds_type(text):
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def main(argv=None):
    parser = Parser(prog="python -m bench.studies.overhead_study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=cli.positive_list, default=[1, 2],
                        help="torch thread counts, one process each (default 1,2)")
    parser.add_argument("--batch-sizes", type=cli.positive_list, default=[1, 64, 256])
    parser.add_argument("--seconds", type=seconds_type, default=8.0,
                        help="seconds of alternating un-profiled blocks per cell (default 8)")
    parser.add_argument("--profile-seconds", type=seconds_type, default=1.0,
                        help="about this long profiled per backend and cell (default 1)")
    parser.add_argument("--out", type=cli.output_folder, default="results")
    parser.add_argument("--result", help=argparse.SUPPRESS)  # a child's side: measure here, write JSON
    try:
        args = parser.parse_args(argv)
        if args.result and len(args.threads) != 1:
            raise UsageError("--result: a child measures one thread count")
    except (UsageError, argparse.ArgumentTypeError, ValueError) as error:
        print(f"{cli.prog('python -m bench.studies.overhead_study')}: error: {error}", file=sys.stderr)
        return 2
    if args.result:
        torch.set_num_threads(args.threads[0])
        work = lambda: measure_threads(args.batch_sizes, args.seconds, args.profile_seconds)  # noqa: E731
        return process.child(MODULE, work, args.result)
    options = [f"--batch-sizes {','.join(map(str, args.batch_sizes))}", f"--seconds {args.seconds:g}",
               f"--profile-seconds {args.profile_seconds:g}"]
    settings = {"date": datetime.now().astimezone().isoformat(timespec="seconds"), "seconds": args.seconds,
                "profile_seconds": args.profile_seconds,
                "command": f"{PROG} --threads {','.join(map(str, args.threads))} {' '.join(options)} "
                           f"--out {shlex.quote(args.out)}"}
    results = []
    try:
        for threads in args.threads:
            results.append(process.run(MODULE, [*" ".join(options).split(), "--threads", threads],
                                       threads=threads, progress=print))
    except process.ChildFailed as error:
        print(f"{cli.prog('python -m bench.studies.overhead_study')}: error: {error}", file=sys.stderr)
        return 1
    files.write_text_atomic(os.path.join(args.out, "compile_overhead.json"),
                            json.dumps({"settings": settings, "results": results}, indent=1) + "\n")
    files.write_text_atomic(os.path.join(args.out, "compile_overhead.md"), render(results, settings) + "\n")
    print(f"wrote {os.path.join(args.out, 'compile_overhead.md')} and compile_overhead.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
