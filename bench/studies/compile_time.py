"""Compile time, cold and warm: results/compile_time.json and results/compile_time.md.

    python -m bench.compile_time    # compile-net, compile-step, compile-step-im2col, aotinductor, onnxruntime
    python -m bench.compile_time --backends compile-step --batch-size 1 --out /tmp/ct

Each backend runs in two fresh Python processes (bench/studies/compile_time_child.py, started
through bench/launch/process.py) that share one TORCHINDUCTOR_CACHE_DIR, a new empty temporary
folder per backend:

  cold  the folder is empty: Dynamo traces, AOTAutograd and Inductor compile, the C++ compiler runs.
  warm  the same folder again: Inductor's FX-graph cache (and AOTAutograd's cache, and the compiled
        kernels on disk) can hit, while Dynamo still traces in the new process; aotinductor loads
        the libraries it keeps in that folder, after tracing the step to find their names.

Each process times building the runner (for onnxruntime: the ONNX export and the session creation,
from the Runner's own `export_seconds` and `session_seconds`), the first `train_step` (for
torch.compile: compiling the step), the first `forward` after it (compiling the inference graph;
for onnxruntime: rebuilding its forward session with the trained weights), and one later call of
each for scale. Inductor's cache hit/miss counters are recorded from the same process, so a
"warm" row that did not hit shows it. Both files are written atomically; nothing else is touched.
"""

import json
import os
import sys
import tempfile
import time
from datetime import datetime

from bench import backends, cli
from bench.cli import Parser, UsageError, backend_list, positive
from bench.files import write_atomic
from bench.launch import process
from bench.reporting.format import markdown_table, ms, secs, text_table

DEFAULT_BACKENDS = ["compile-net", "compile-step", "compile-step-im2col", "aotinductor", "onnxruntime"]
DEFAULT_BATCH_SIZE = 64
CHILD_TIMEOUT = 600  # seconds per process


def measure(backend, batch_size, cache_dir):
    """Run one fresh process for `backend` with TORCHINDUCTOR_CACHE_DIR=cache_dir; its result row.

    On failure the row holds "error" (the launcher's one line: the child's error) and no timings.
    """
    start = time.perf_counter()
    try:
        row = process.run("bench.studies.compile_time_child", [backend, batch_size], timeout=CHILD_TIMEOUT,
                          env={"TORCHINDUCTOR_CACHE_DIR": cache_dir})
    except process.ChildFailed as error:
        return {"error": str(error), "process_s": time.perf_counter() - start}
    row["process_s"] = time.perf_counter() - start
    return row


def run(backend_names, batch_size, measure_one=measure):
    """Cold then warm rows for each backend; each backend gets its own fresh Inductor cache folder."""
    rows = []
    for name in backend_names:
        with tempfile.TemporaryDirectory(prefix=f"lenet-inductor-{name}-") as cache_dir:
            for run_kind in ("cold", "warm"):
                if run_kind == "cold" and os.listdir(cache_dir):
                    raise RuntimeError(f"{cache_dir} is not empty before the cold run")
                row = {"backend": name, "run": run_kind, "batch_size": batch_size}
                row.update(measure_one(name, batch_size, cache_dir))
                rows.append(row)
                print(f"{name:13s} {run_kind}: " + (row["error"] if "error" in row else
                      f"first train_step {secs(row.get('first_train_step_s'))} s, "
                      f"first forward {secs(row.get('first_forward_s'))} s"), flush=True)
    return rows


# -----------------------------------------------------------------------------
# output

def cache_text(row):
    """Inductor's FX-graph and AOTAutograd cache hits and misses in that process, and
    aotinductor's library cache."""
    cache = row.get("cache") or {}
    parts = []
    for label, prefix in (("FX graph", "inductor.fxgraph_cache_"),
                          ("AOTAutograd", "aot_autograd.autograd_cache_"),
                          ("AOTInductor library", "aotinductor.library_")):
        hit, miss = cache.get(prefix + "hit", 0), cache.get(prefix + "miss", 0)
        if hit or miss:
            parts.append(f"{label} {hit} hit / {miss} miss")
    return "; ".join(parts) or "-"


HEADER = ["backend", "run", "setup s", "export s", "session s", "first train_step s", "first forward s",
          "later train_step ms", "later forward ms", "process s", "Inductor cache"]


def table_rows(rows):
    out = []
    for row in rows:
        if "error" in row:
            out.append([row["backend"], row["run"], f"error: {row['error']}"] + [""] * (len(HEADER) - 3))
            continue
        out.append([row["backend"], row["run"], secs(row.get("create_s")), secs(row.get("export_s")),
                    secs(row.get("session_s")), secs(row.get("first_train_step_s")),
                    secs(row.get("first_forward_s")), ms(row.get("next_train_step_s")),
                    ms(row.get("next_forward_s")), secs(row.get("process_s")), cache_text(row)])
    return out


def render_markdown(data):
    s = data["settings"]
    return "\n".join([
        "# Compile time, cold and warm",
        "",
        f"- Date: {s['date']}; torch {s.get('torch', '?')}, {s.get('threads', '?')} torch threads, "
        f"batch {s['batch_size']}, CPU",
        f"- Reproduce: `{s['command']}`",
        "- Each row is one fresh Python process. *cold*: TORCHINDUCTOR_CACHE_DIR is a new empty folder; "
        "*warm*: a second process with the same folder, so Inductor's FX-graph and AOTAutograd caches "
        "and its compiled kernels can hit (Dynamo still traces anew in every process).",
        "- setup: building the runner (onnxruntime: ONNX export + session creation, split in the next two "
        "columns). first train_step / first forward: the first call of each, which for torch.compile is "
        "the compilation (the forward is its own graph, compiled on its first call after training; for "
        "onnxruntime the first forward rebuilds its inference session with the trained weights). "
        "later: the next call, for scale. process: the whole child process, Python start-up and imports "
        "included.",
        "",
        markdown_table(HEADER, table_rows(data["rows"])),
        "",
    ])


def parse_args(argv):
    parser = Parser(prog="python -m bench.compile_time", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=None,
                        help=f"comma-separated (default: those of {','.join(DEFAULT_BACKENDS)} available "
                             f"on CPU); choices: {', '.join(backends.CONFIGS)}")
    parser.add_argument("--batch-size", type=positive, default=DEFAULT_BATCH_SIZE,
                        help="batch size of the compiled step (default: %(default)s)")
    parser.add_argument("--out", type=cli.output_folder, default="results",
                        help="folder for compile_time.json and compile_time.md (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.backends is None:
        args.backends = [name for name in DEFAULT_BACKENDS if not backends.unavailable(name, "cpu")]
        return args
    args.backends = backend_list(args.backends)
    return args


def main(argv=None, measure_one=None):
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as error:
        print(f"{cli.prog('python -m bench.compile_time')}: error: {error}", file=sys.stderr)
        return 2
    command = (f"PYTHONPATH=. python -m bench.compile_time --backends {','.join(args.backends)} "
               f"--batch-size {args.batch_size}")
    rows = run(args.backends, args.batch_size, measure_one or measure)
    good = [row for row in rows if "error" not in row]
    settings = {"date": datetime.now().astimezone().isoformat(timespec="seconds"),
                "batch_size": args.batch_size, "backends": args.backends, "command": command,
                "python": sys.version.split()[0],
                "torch": good[0].get("torch") if good else None,
                "threads": good[0].get("threads") if good else None}
    data = {"settings": settings, "rows": rows}
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, "compile_time.json")
    md_path = os.path.join(args.out, "compile_time.md")
    write_atomic(json_path, lambda f: f.write((json.dumps(data, indent=2) + "\n").encode()))
    write_atomic(md_path, lambda f: f.write(render_markdown(data).encode()))
    print()
    print(text_table(HEADER, table_rows(rows)))
    print(f"wrote {json_path} and {md_path}")
    return 1 if len(good) < len(rows) else 0


if __name__ == "__main__":
    sys.exit(main())
