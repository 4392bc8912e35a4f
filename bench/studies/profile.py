"""Where a training step's time goes, per backend and batch size: results/PROFILE.md.

    python -m bench.profile                                  # every CPU backend, batch 1 and 256
    python -m bench.profile --backends eager,onnxruntime --batch-sizes 1 --steps 5 --out /tmp/p

For each backend and batch size, after a warm-up, the same process times `--steps` training
steps without any profiler (three rounds), profiles `--steps` more, and times two more unprofiled
rounds (wall = the median of the five round means). The profiler: torch.profiler (CPU activities,
`key_averages()`) for the torch backends, ONNX Runtime's own profiler (its per-node JSON trace,
summed by op type) for onnxruntime. The configurations whose kernels Inductor generates
(backends.kernels) are compiled with Inductor's `cpp.enable_kernel_profile`, so each generated
C++ kernel shows up as its own range. Those ranges cost time of their own (PROFILE.md's
"instrumentation slowdown" column gives it per backend and batch size), so for these backends
the build the benchmarks time is timed apart, without them, before the instrumented build is built.

"Op self time" is the time spent inside the ops themselves: aten operators (their self time,
children excluded), Inductor's generated kernels and the aten kernels they call, ONNX Runtime's
nodes. Every figure refers to the build the benchmarks time: coverage = op self time per step
(measured on the instrumented, profiled build) / the benchmarked build's wall time per step, and
an op's share is its self time over that same wall time. What coverage leaves is time outside
every kernel, labelled by what the backend's architecture has there (backends.outside_kernels:
Python and dispatch for eager, none for aotinductor or onnxruntime). Instrumentation inflates the kernel
times too (a few microseconds per range), so at batch 1 coverage leans high; where the kernels
alone exceed the benchmarked wall time, the report says so and names no remainder.

The ORT trace files are written into a temporary folder and removed. PROFILE.md is written
atomically; nothing else in --out is touched.
"""

import collections
import functools
import json
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime

import torch

import model
from bench import backends, cli
from bench.cli import Parser, UsageError, backend_list, positive, positive_list
from bench.files import write_atomic
from bench.measure import timing
from bench.reporting.format import markdown_table, pct, us

DEFAULT_BATCH_SIZES = [1, 256]
DEFAULT_STEPS = 20
WARMUP_STEPS = 5  # TorchScript's profiling executor specialises on its first runs
TIMING_ROUNDS = (3, 2)  # unprofiled timing rounds before and after the profiled steps
TOP_OPS = 8

# Ranges that wrap ops rather than being ops: their self time is overhead outside any kernel.
KERNEL_NAME = re.compile(r"^(aten::|prim::|aoti_torch_)|cpp_fused|^graph_\d+_|^triton_")

# (category, pattern on the op name), first match wins; for the one-line summary.
CATEGORIES = [
    ("Inductor fused kernels", re.compile(r"cpp_fused|triton_")),  # first: their names list the ops fused
    ("convolution backward", re.compile(r"conv\w*backward|ConvGrad|ConvTranspose", re.I)),
    ("convolution", re.compile(r"conv", re.I)),  # in ONNX Runtime also the weight gradients' Conv
    ("matmul (linear layers)", re.compile(r"(^|::|_)(addmm|mm|bmm|matmul)(_out)?$|Gemm|MatMul", re.I)),
    ("max-pool", re.compile(r"max_?pool|amax", re.I)),
    ("shape, copy and allocation ops", re.compile(
        r"::(t|transpose|view|_?unsafe_view|as_strided|reshape|expand|detach|empty\w*|copy_|clone|"
        r"contiguous|resize_|select|slice|stack|cat|permute|squeeze|unsqueeze|zeros\w*|fill_|zero_|"
        r"_to_copy|to|resolve_conj|resolve_neg|alias|numpy_T|_reshape_alias)$|"
        r"^(Shape|Slice|Unsqueeze|Squeeze|Reshape|Concat|Cast|Identity|Transpose|Expand|Gather|"
        r"ConstantOfShape|Flatten|MemcpyToHost|MemcpyFromHost)$")),
    ("reductions", re.compile(r"::(sum|mean|amax|max)$|^Reduce", re.I)),
]
OTHER = "elementwise and other ops"

# Kernel groups for the comparison with eager, first match wins. An Inductor kernel's name lists the
# aten ops fused into it; one that holds a pool (forward or backward) counts as pooling, whatever
# elementwise work (ReLU, its mask, a bias-gradient sum) is fused with it. A convolution lowered to
# im2col (compile-step-im2col, aotinductor) runs its arithmetic as matmul and its slicing as
# elementwise kernels: the groups say which kernels run, not which layer of the Net they serve.
KERNEL_GROUPS = [
    ("pooling", re.compile(r"max_?pool|amax|MaxUnpool", re.I)),
    ("convolution", re.compile(r"conv|Col2Im|Im2Col", re.I)),
    ("matmul", re.compile(r"(^|::|_)(addmm|mm|bmm|matmul)(_out)?$|Gemm|MatMul", re.I)),
]
ELEMENTWISE = "elementwise and other kernels"
GROUP_NAMES = [name for name, _ in KERNEL_GROUPS] + [ELEMENTWISE]


def kernel_group(op):
    return next((name for name, pattern in KERNEL_GROUPS if pattern.search(op)), ELEMENTWISE)


def available_backends(device="cpu"):
    """(runnable, {name: why not}) over every configured backend."""
    runnable, skipped = [], {}
    for name in backends.CONFIGS:
        reason = backends.unavailable(name, device)
        if reason:
            skipped[name] = reason
        else:
            runnable.append(name)
    return runnable, skipped


# -----------------------------------------------------------------------------
# measuring

def round_means(step, steps, rounds):
    """The mean time of `steps` back-to-back steps, in seconds, for each of `rounds` rounds."""
    return [timing.timed_block(step, steps) / steps for _ in range(rounds)]


def is_kernel(name):
    return bool(KERNEL_NAME.search(name))


def torch_ops(step, steps):
    """{op name: (calls, self seconds)} over `steps` profiled steps, and the profiled wall time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]):  # discarded: the profiler's own first-use costs
        for _ in range(min(steps, 2)):
            step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        wall = timing.timed_block(step, steps)
    ops, overhead = {}, {}
    for event in prof.key_averages():
        entry = (event.count, event.self_cpu_time_total * 1e-6)
        kernel = is_kernel(event.key) and not getattr(event, "is_user_annotation", False)
        (ops if kernel else overhead)[event.key] = entry
    return ops, overhead, wall


def ort_node_times(trace, steps):
    """{op type: (calls, seconds)} from an ONNX Runtime profile trace, over its last `steps` runs."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in trace
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(runs) < steps:
        raise RuntimeError(f"ONNX Runtime trace holds {len(runs)} runs, expected at least {steps}")
    first = runs[-steps][0]
    ops = collections.defaultdict(lambda: [0, 0.0])
    for event in trace:
        if event.get("cat") == "Node" and event.get("ts", -1) >= first:
            op = event.get("args", {}).get("op_name") or event["name"]
            ops[op][0] += 1
            ops[op][1] += event["dur"] * 1e-6
    return {op: tuple(value) for op, value in ops.items()}


def ort_ops(state, x, target, steps, folder, name="onnxruntime"):
    """Profile `steps` training steps of a fresh, profiled Runner of onnxruntime configuration
    `name` (after a warm-up)."""
    runner = backends.create(name, state, "cpu", profile_prefix=os.path.join(folder, "ort"))
    try:
        timing.warm(functools.partial(runner.train_step, x, target), WARMUP_STEPS)
        wall = timing.timed_block(functools.partial(runner.train_step, x, target), steps)
        path = runner.train_session.end_profiling()
        with open(path, encoding="utf-8") as f:
            trace = json.load(f)
    finally:
        del runner  # the forward session writes its own (empty) trace into `folder` as it goes
    return ort_node_times(trace, steps), {}, wall


def profile_backend(name, batch_sizes, steps, folder):
    """One result dict per batch size for backend `name`."""
    state = model.make_net().state_dict()
    results = []
    # Inductor's per-kernel profiling ranges cost time of their own (the report's instrumentation
    # slowdown), so the build the benchmarks time is timed first, apart.
    kernel_profile = backends.kernels(name) == "inductor"
    benchmarked_wall = {}
    if kernel_profile:
        import torch._inductor.config as inductor_config

        torch._dynamo.reset()  # a build compiled earlier in this process must not be reused
        plain = backends.create(name, state, "cpu")
        for batch in batch_sizes:
            x, target = model.make_batch(batch)
            step = functools.partial(plain.train_step, x, target)
            timing.warm(step, WARMUP_STEPS)
            timing.settle_heap()
            benchmarked_wall[batch] = statistics.median(round_means(step, steps, sum(TIMING_ROUNDS)))
        del plain
        # Dynamo would otherwise hand the plain build's compiled step to the next runner.
        torch._dynamo.reset()
        inductor_config.cpp.enable_kernel_profile = True  # one RECORD_FUNCTION range per kernel
    try:
        runner = backends.create(name, state, "cpu")
        for batch in batch_sizes:
            x, target = model.make_batch(batch)
            step = functools.partial(runner.train_step, x, target)

            warmup = timing.timed_block(step, WARMUP_STEPS)
            timing.settle_heap()
            means = round_means(step, steps, TIMING_ROUNDS[0])
            if backends.kernels(name) == "onnxruntime":
                ops, overhead, profiled = ort_ops(state, x, target, steps, folder, name)
                tool = "ONNX Runtime profiler (per-node trace, summed by op type)"
            else:
                ops, overhead, profiled = torch_ops(step, steps)
                tool = "torch.profiler (CPU), key_averages()"
            # rounds on both sides of the profiled steps, so a drift in machine speed shows in both
            wall = statistics.median(means + round_means(step, steps, TIMING_ROUNDS[1]))
            results.append(summarise(name, batch, steps, wall, profiled / steps, ops, overhead, warmup, tool,
                                     benchmarked_wall.get(batch, wall)))
    finally:
        if kernel_profile:
            inductor_config.cpp.enable_kernel_profile = False
    return results


def summarise(name, batch, steps, wall, profiled_wall, ops, overhead, warmup, tool, benchmarked_wall=None):
    """wall: the profiled build's step without the profiler; benchmarked_wall: the build the benchmarks
    time (default: the same build, for backends profiled without instrumenting their kernels)."""
    benchmarked_wall = wall if benchmarked_wall is None else benchmarked_wall
    per_step = {op: (calls / steps, seconds / steps) for op, (calls, seconds) in ops.items()}
    kernel = sum(seconds for _, seconds in per_step.values())
    top = sorted(per_step.items(), key=lambda item: -item[1][1])
    categories = collections.Counter()
    for op, (_, seconds) in per_step.items():
        label = next((label for label, pattern in CATEGORIES if pattern.search(op)), OTHER)
        categories[label] += seconds
    groups = dict.fromkeys(GROUP_NAMES, 0.0)
    for op, (_, seconds) in per_step.items():
        groups[kernel_group(op)] += seconds
    overhead_top = sorted(((op, seconds / steps) for op, (_, seconds) in overhead.items()),
                          key=lambda item: -item[1])[:3]
    return {
        "backend": name, "batch": batch, "steps": steps, "wall": wall, "profiled_wall": profiled_wall,
        "benchmarked_wall": benchmarked_wall, "kernel": kernel, "coverage": kernel / benchmarked_wall,
        "outside_kernels": backends.outside_kernels(name), "top": top, "categories": categories.most_common(),
        "overhead_top": overhead_top, "warmup": warmup, "tool": tool, "groups": groups,
    }


# -----------------------------------------------------------------------------
# output

def op_label(name, width=72):
    """An op's name for the tables: Inductor's per-graph prefix dropped, long fused names shortened."""
    name = re.sub(r"^graph_\d+_", "", name)
    return name if len(name) <= width else name[: width - 12] + "..." + name[-9:]


def where_line(result):
    bench = result["benchmarked_wall"]
    parts = ", ".join(f"{label} {pct(seconds / bench)}" for label, seconds in result["categories"][:3])
    line = (f"**Where the time goes:** {parts} of the benchmarked build's step. Op self times cover "
            f"{pct(result['coverage'])} of the benchmarked build's wall time")
    if result["coverage"] <= 1:
        line += f"; the other {pct(1 - result['coverage'])} is outside kernels: {result['outside_kernels']}."
    else:
        line += ("; the instrumented kernels alone exceed the benchmarked step: instrumentation inflates "
                 "the kernel times too, so the time outside kernels cannot be read from this profile.")
    slowdown = result["profiled_wall"] / bench
    if slowdown > 1.5:
        line += (f" Instrumented and profiled, this step takes {slowdown:.1f}x as long: read the shares as "
                 f"upper bounds.")
    return line


def signed_us(seconds):
    return ("+" if seconds >= 0 else "-") + us(abs(seconds))


def outside_time(result):
    """Time per step outside every kernel in the profiled build (its wall time without the profiler,
    timed in the same rounds as its profile, less its kernels' self time), or None where the kernels
    alone exceed that wall time (then it cannot be read from the profile)."""
    rest = result["wall"] - result["kernel"]
    return rest if rest >= 0 else None


def group_comparison(results):
    """Per batch size: every backend's kernel groups and time outside kernels, us per step, beside
    eager's from the same profile run, and where each loses most against it."""
    eager = {r["batch"]: r for r in results if r["backend"] == backends.EAGER}
    lines = []
    for batch in sorted(eager):
        base = eager[batch]
        base_outside = outside_time(base)
        rows, losses = [], []
        for r in (r for r in results if r["batch"] == batch):
            ratio = base["benchmarked_wall"] / r["benchmarked_wall"]
            cells = [r["backend"], us(r["benchmarked_wall"]), f"{ratio:.2f}x", us(r["wall"])]
            deltas = {}
            for group in GROUP_NAMES:
                mine, theirs = r["groups"][group], base["groups"][group]
                deltas[group] = mine - theirs
                cells.append(us(mine) if r is base else f"{us(mine)} ({signed_us(mine - theirs)})")
            outside = outside_time(r)
            if outside is None:
                cells.append("- (kernels exceed the step)")
            elif r is base or base_outside is None:
                cells.append(us(outside))
            else:
                deltas["outside kernels"] = outside - base_outside
                cells.append(f"{us(outside)} ({signed_us(outside - base_outside)})")
            rows.append(cells)
            lost = sorted(((d, g) for g, d in deltas.items() if d > 0), reverse=True)
            if r is not base and lost:
                losses.append(f"- {r['backend']}: " + ", ".join(f"{g} {signed_us(d)}" for d, g in lost[:3])
                              + " us/step")
        lines += [f"### Batch {batch}", "",
                  markdown_table(["backend", "benchmarked us/step", "eager's time / this",
                                  "profiled build us/step", *GROUP_NAMES, "outside kernels"], rows), ""]
        if losses:
            lines += ["Where each spends more than eager (the largest differences, us per step):", "",
                      *losses, ""]
    if not lines:
        return []
    return ["## Kernel groups against eager", "",
            "Microseconds per step in each kernel group (op self times from the profiled build, as "
            "above), the difference from eager's in the same run in brackets; outside kernels = the "
            "profiled build's wall time per step without the profiler (timed in the same rounds as its "
            "profile; for the Inductor configurations the build with per-kernel ranges) less every "
            "kernel's self time. Groups by op name: "
            "pooling = any kernel with a max-pool (forward or backward, with whatever Inductor fused into "
            "it), convolution = aten's or ONNX Runtime's convolution kernels (forward, backward, Col2Im), "
            "matmul = mm/addmm/bmm/Gemm/MatMul (the linear layers, and the convolutions lowered to im2col), "
            "everything else elementwise and other. The step ratio is eager's benchmarked step over this "
            "one, timed one after the other, not paired: on a loaded machine such figures move by up to "
            "2x between phases (compare a row's benchmarked and profiled-build times, the same code but "
            "for the kernel ranges), so read the differences where they are large; the benchmarks' "
            "paired speedups are the measure of speed.", "",
            *lines]


def render(results, skipped, settings):
    lines = [
        "# Where the training step's time goes",
        "",
        f"- Date: {settings['date']}; torch {torch.__version__}, {settings['threads']} torch threads, "
        f"{os.cpu_count()} CPUs",
        f"- Reproduce: `{settings['command']}`",
        f"- Each backend and batch size: {WARMUP_STEPS} warm-up steps; {settings['steps']} steps timed "
        f"without a profiler {TIMING_ROUNDS[0]} times before and {TIMING_ROUNDS[1]} times after "
        f"{settings['steps']} profiled steps (wall = the median of those {sum(TIMING_ROUNDS)} per-step "
        f"means), all in one process.",
        "- Every share and coverage is of the **benchmarked build's** wall time per step (the build the "
        "benchmarks time, without profiler or instrumentation). Coverage = the sum of all op self times "
        "per step / that wall time; what it leaves is time outside every kernel, labelled per backend by "
        "what its architecture has there (aotinductor and onnxruntime have no Python in their step). "
        "The op self times come from the instrumented, profiled build: Inductor backends (the compile-* "
        "configurations, aotinductor) are built apart with `cpp.enable_kernel_profile`, one range per "
        "generated kernel, and ONNX Runtime's profiler records memory and thread statistics per node. "
        "Instrumentation slows the kernels too, so at batch 1 coverage leans high, and where the kernels "
        "alone exceed the benchmarked wall time no remainder is given.",
        "",
    ]
    if skipped:
        lines += ["Skipped: " + "; ".join(f"{name} ({reason})" for name, reason in skipped.items()), ""]
    summary = []
    for r in results:
        bench = r["benchmarked_wall"]
        top = f"`{op_label(r['top'][0][0], 40)}` {pct(r['top'][0][1][1] / bench)}" if r["top"] else "-"
        outside = "-" if r["coverage"] > 1 else f"{pct(1 - r['coverage'])}: {r['outside_kernels']}"
        summary.append([r["backend"], r["batch"], us(bench), us(r["wall"]), us(r["profiled_wall"]),
                        f"{r['profiled_wall'] / bench:.2f}x", us(r["kernel"]), pct(r["coverage"]), outside,
                        top])
    lines += ["## Summary", "",
              markdown_table(["backend", "batch", "benchmarked build us/step",
                              "instrumented build us/step (no profiler)", "instrumented + profiled us/step",
                              "instrumentation slowdown", "op self us/step (instrumented)",
                              "coverage (of benchmarked wall)", "outside kernels (of benchmarked wall)",
                              "top op (share of benchmarked wall)"], summary), ""]
    lines += group_comparison(results)
    for r in results:
        bench = r["benchmarked_wall"]
        rows = [[f"`{op_label(op)}`", f"{calls:g}", us(seconds), pct(seconds / bench)]
                for op, (calls, seconds) in r["top"][:TOP_OPS]]
        instrumented = ""
        if bench != r["wall"]:
            instrumented = (f" The build profiled here has Inductor's per-kernel ranges compiled in and "
                            f"takes "
                            f"{us(r['wall'])} us per step without the profiler.")
        lines += [f"## {r['backend']}, batch {r['batch']}", "",
                  f"Wall time per step of the benchmarked build: {us(bench)} us; instrumented and profiled: "
                  f"{us(r['profiled_wall'])} us.{instrumented} Tool: {r['tool']}.", "",
                  markdown_table(["op", "calls/step", "self us/step", "share of benchmarked wall"], rows), ""]
        if r["overhead_top"]:
            lines += ["Largest non-op ranges (self time, us/step): "
                      + ", ".join(f"`{op}` {us(seconds)}" for op, seconds in r["overhead_top"]), ""]
        lines += [where_line(r), ""]
    return "\n".join(lines)


def parse_args(argv):
    parser = Parser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=None,
                        help=f"comma-separated (default: every one available on CPU); "
                             f"choices: {', '.join(backends.CONFIGS)}")
    parser.add_argument("--batch-sizes", type=positive_list, default=DEFAULT_BATCH_SIZES,
                        help="comma-separated positive batch sizes (default: 1,256)")
    parser.add_argument("--steps", type=positive, default=DEFAULT_STEPS,
                        help="training steps timed and profiled (default: %(default)s)")
    parser.add_argument("--threads", type=positive, default=None,
                        help="torch intra-op threads (default: torch's own choice)")
    parser.add_argument("--out", type=cli.output_folder, default="results",
                        help="folder for PROFILE.md (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.backends is None:
        args.backends, args.skipped = available_backends("cpu")
    else:
        args.backends, args.skipped = backend_list(args.backends), {}
    return args


def main(argv=None):
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as error:
        print(f"{cli.prog('python -m bench.profile')}: error: {error}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    command = ("PYTHONPATH=. python -m bench.profile --backends " + ",".join(args.backends)
               + f" --batch-sizes {','.join(map(str, args.batch_sizes))} --steps {args.steps}"
               + (f" --threads {args.threads}" if args.threads else ""))
    settings = {"date": datetime.now().astimezone().isoformat(timespec="seconds"),
                "threads": torch.get_num_threads(), "steps": args.steps, "command": command}
    results = []
    with tempfile.TemporaryDirectory(prefix="lenet-ort-profile-") as folder:
        for name in args.backends:
            start = time.perf_counter()
            for r in profile_backend(name, args.batch_sizes, args.steps, folder):
                results.append(r)
                top = r["top"][0] if r["top"] else ("-", (0, 0.0))
                print(f"{name:13s} batch {r['batch']:4d}: {us(r['benchmarked_wall']):>8s} us/step "
                      f"benchmarked, "
                      f"{us(r['wall']):>8s} instrumented, coverage {pct(r['coverage'])}, "
                      f"top {top[0]} {pct(top[1][1] / r['benchmarked_wall'])}")
            print(f"{name}: {time.perf_counter() - start:.1f} s")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "PROFILE.md")
    text = render(results, args.skipped, settings)
    write_atomic(path, lambda f: f.write(text.encode()))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
