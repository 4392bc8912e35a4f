"""`lenet-bench versions`: the suite across torch releases, one virtual environment per release.

For each release it makes (or reuses) a venv under --venvs, installs this checkout into it with
that torch and constraints.txt's other pins, runs the test command and the benchmark command as the
README gives it (both thread counts, 3 worker processes per cell; the `--quick` runs, one process at
one thread count each, are steps to ask for) and keeps each benchmark run in the normal run store,
tagged with the release it ran on (its JSON's lenet_bench.versions entry; machine_info.torch is
torch's own version string). What each step did is written to <venv>/lenet-bench-versions.json,
so a second call resumes where the first stopped; `--torch 2.14.1` runs one release.
`lenet-bench versions --report` writes results/versions.md and its chart from the saved runs.

The benchmark runs are made with a storage folder of their own (so that they do not refresh
results/REPORT.md) and then saved into the run store with bench.runs.store.save_numbered.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from bench.cli import Parser, UsageError, prog

RELEASES = ("2.11.0", "2.12.1", "2.13.0", "2.14.1", "2.15.0")  # the newest patch of each minor
STEPS = ("install", "tests", "bench-default", "bench-1thread", "bench-allcores", "zero-grad", "repro")
# The quick runs are left out unless asked for: one process per cell, their intervals miss the
# process-to-process noise, and bench-default times the same cells at both thread counts with it.
DEFAULT_STEPS = ("install", "tests", "bench-default", "zero-grad", "repro")
QUICK_STEPS = ("bench-1thread", "bench-allcores")
UNPINNED = ("torch==", "setuptools==")  # constraints.txt lines the matrix leaves out (see below)
STATE_FILE = "lenet-bench-versions.json"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_VENVS = os.path.join(tempfile.gettempdir(), "lenet-venvs")
DEFAULT_STORE = os.path.join(ROOT, "results", "benchmarks")
TEST_COMMAND = ["-m", "pytest", "tests", "bench", "--benchmark-disable", "-q"]
BENCH_COMMAND = ["-m", "pytest", "bench", "--benchmark-only"]  # the README's: 1 and all cores, 3 processes

HELP_EPILOG = """\
disk and time per release (2-core AMD EPYC VM, shared; measured 2026-12-06/07, docs/versions.md):
  a venv with PyPI's torch (the CUDA build; it runs on the CPU) is 5.6-6.4 GB and installs in
  under 3 minutes; with the CPU wheel (2.13.0+cpu, on this machine's disk) 1.6 GB.  The default
  benchmark command (bench-default) took 668-870 s of pytest session a release (runs 0039-0043);
  the test command 472-504 s (2.14.1, 2.15.0) to 866-894 s (2.11.0, 2.12.1, beside other work).
  About 6 GB and 25-35 minutes a release with the default steps; a --quick run is 2.5-3 minutes.

examples:
  lenet-bench versions --torch 2.14.1            # one release, the default steps
  lenet-bench versions --dry-run                 # what would run, and what is already done
  lenet-bench versions --report                  # results/versions.md and its chart from saved runs
"""


def parse_args(argv):
    parser = Parser(prog="lenet-bench versions", description=__doc__.split("\n\n")[0],
                    epilog=HELP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch", action="append", default=None, metavar="VERSION",
                        help="a release to run (repeat or comma-separate; default all: "
                        f"{', '.join(RELEASES)})")
    parser.add_argument("--steps", default=",".join(DEFAULT_STEPS),
                        help=f"which steps, comma-separated, of {', '.join(STEPS)} (default %(default)s: "
                        "the --quick runs bench-1thread and bench-allcores only when named)")
    parser.add_argument("--redo", default="",
                        help="steps to run again though recorded as done (comma-separated)")
    parser.add_argument("--venvs", default=DEFAULT_VENVS, help="folder of the venvs, one torch-VERSION each "
                        "(default %(default)s)")
    parser.add_argument("--store", default=DEFAULT_STORE, help="the run store (default results/benchmarks)")
    parser.add_argument("--lock", default=None, metavar="FILE",
                        help="run the tests under `flock -s FILE` and the timed runs under `flock -x FILE`")
    parser.add_argument("--ignore-pip-config", action="store_true",
                        help="install with PIP_CONFIG_FILE=/dev/null (a pip config that caps torch)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and what is done; run nothing")
    parser.add_argument("--report", action="store_true",
                        help="write results/versions.md and results/versions.png from the saved runs")
    args = parser.parse_args(argv)
    releases = []
    for item in args.torch or [",".join(RELEASES)]:
        for version in filter(None, (part.strip() for part in item.split(","))):
            if not all(part.isdigit() for part in version.split(".")) or version.count(".") != 2:
                raise UsageError(f"--torch: expected a release like 2.14.1, got {version!r}")
            releases.append(version)
    if not releases:
        raise UsageError("--torch: no release given")
    args.releases = list(dict.fromkeys(releases))
    for name in ("steps", "redo"):
        chosen = [s for s in getattr(args, name).split(",") if s]
        unknown = [s for s in chosen if s not in STEPS]
        if unknown:
            raise UsageError(f"--{name}: unknown step {unknown[0]!r} (choose from {', '.join(STEPS)})")
        setattr(args, name, chosen)
    if not args.steps and not args.report:
        raise UsageError("--steps: no step given")
    return args


def venv_dir(venvs, version):
    return os.path.join(venvs, f"torch-{version}")


def python_of(venv):
    return os.path.join(venv, "bin", "python")


def all_cores():
    return os.cpu_count() or 1


def read_state(venv):
    try:
        with open(os.path.join(venv, STATE_FILE)) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"steps": {}}
    except (OSError, ValueError) as error:
        raise UsageError(f"{os.path.join(venv, STATE_FILE)}: unreadable ({error}); "
                         "remove it to start over") from None


def write_state(venv, state):
    path = os.path.join(venv, STATE_FILE)
    os.makedirs(venv, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(state, f, indent=2)
    os.replace(path + ".tmp", path)


def constraints_without_torch(venvs):
    """constraints.txt's pins without torch (the release is what varies) and without setuptools, which
    torch 2.12 caps below 82 at run time while the pin is 84 (measured: pip's ResolutionImpossible)."""
    with open(os.path.join(ROOT, "constraints.txt")) as f:
        lines = [line for line in f if not line.split("#")[0].strip().startswith(UNPINNED)]
    path = os.path.join(venvs, "constraints-without-torch.txt")
    with open(path, "w") as f:
        f.writelines(lines)
    return path


def locked(command, lock, exclusive):
    return (["flock", "-x" if exclusive else "-s", lock] if lock else []) + command


def plan(args, version, state):
    """The steps still to run for `version`: (step, [(command, extra environment)]) in order."""
    venv = venv_dir(args.venvs, version)
    python = python_of(venv)
    done = {step for step, record in state["steps"].items() if record.get("ok")}
    todo = []
    for step in args.steps:
        if step in done and step not in args.redo:
            continue
        if step == "install":
            env = {"PIP_CONFIG_FILE": os.devnull} if args.ignore_pip_config else {}
            todo.append((step, [([sys.executable, "-m", "venv", venv], {}),
                                (locked([python, "-m", "pip", "install", f"torch=={version}", "-e", ".[dev]",
                                         "-c", os.path.join(args.venvs, "constraints-without-torch.txt")],
                                        args.lock, False), env)]))
        elif step == "tests":
            todo.append((step, [(locked([python, *TEST_COMMAND], args.lock, False), {})]))
        elif step == "bench-default":  # as the README runs it: the suite picks 1 and all cores itself
            storage = os.path.join(venv, "runs", step)
            todo.append((step, [(locked([python, *BENCH_COMMAND, f"--benchmark-storage={storage}"],
                                        args.lock, True), {})]))
        elif step in QUICK_STEPS:
            threads = 1 if step == "bench-1thread" else all_cores()
            storage = os.path.join(venv, "runs", step)
            todo.append((step, [(locked([python, *BENCH_COMMAND, "--quick", "--threads", str(threads),
                                         f"--benchmark-storage={storage}"], args.lock, True), {})]))
        elif step == "zero-grad":
            todo.append((step, [(locked([python, "-m", "bench.versions_probe"], args.lock, False), {})]))
        elif step == "repro":
            scripts = sorted(glob.glob(os.path.join(ROOT, "repro", "*zero*", "*.py")))
            todo.append((step, [(locked([python, script], args.lock, False), {}) for script in scripts]))
    return todo


def subprocess_runner(command, env, log):
    """Run `command` in the repository root with `env` added, its output appended to `log`."""
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        return subprocess.call(command, cwd=ROOT, env={**os.environ, **env}, stdout=out,
                               stderr=subprocess.STDOUT)


def installed_torch(venv):
    try:
        out = subprocess.run([python_of(venv), "-c", "import torch, onnxruntime; "
                              "print(torch.__version__, onnxruntime.__version__)"],
                             capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.split() if out.returncode == 0 else None


def last_summary(log):
    """pytest's closing line ('=== 188 passed, 53 skipped in 383.0s ==='), or ''."""
    try:
        with open(log, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    summaries = [line for line in lines if (" passed" in line or " failed" in line or " error" in line)
                 and " in " in line]
    return summaries[-1].strip("= ") if summaries else ""


def last_json(log):
    """The last line of `log` that is a JSON object, parsed, or None."""
    for line in reversed(tail(log, 200).splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def tail(log, count):
    try:
        with open(log, errors="replace") as f:
            return "".join(f.readlines()[-count:])
    except OSError:
        return ""


def keep_run(storage, store, version, step, seconds):
    """Move the run a benchmark step saved in its own storage into the run store, tagged."""
    from bench.runs.store import save_numbered

    saved = sorted(glob.glob(os.path.join(storage, "**", "*.json"), recursive=True))
    if not saved:
        return None
    path = saved[-1]
    with open(path) as f:
        run = json.load(f)
    cells = [bench.get("extra_info", {}) for bench in run.get("benchmarks", [])]
    run.setdefault("lenet_bench", {})["versions"] = {
        "torch_release": version, "step": step, "torch": run.get("machine_info", {}).get("torch"),
        "onnxruntime": run.get("machine_info", {}).get("onnxruntime"), "command_seconds": round(seconds, 1),
        # the form of the run, for the report to prefer the default one (3 processes) over --quick
        "processes": max((cell.get("processes") or 0 for cell in cells), default=None) or None,
        "threads": sorted({cell["threads"] for cell in cells if cell.get("threads")})}
    folder = os.path.join(store, os.path.basename(os.path.dirname(path)))
    name = os.path.basename(path)[5:-5]  # NNNN_<name>.json: numbered again in the store
    kept = save_numbered(folder, name, json.dumps(run, indent=4))
    shutil.move(path, path + ".kept")
    return kept


def run_release(args, version, runner, out=print):
    venv = venv_dir(args.venvs, version)
    os.makedirs(args.venvs, exist_ok=True)
    state = read_state(venv) if os.path.isdir(venv) else {"steps": {}}
    if "install" in args.steps and "install" not in state["steps"] and os.path.isdir(venv):
        found = installed_torch(venv)  # a venv made by hand or by an earlier tool: reuse it
        if found and found[0].split("+")[0] == version:
            state["steps"]["install"] = {"ok": True, "reused": True, "torch": found[0],
                                         "onnxruntime": found[1]}
            if not args.dry_run:
                write_state(venv, state)
    todo = plan(args, version, state)
    for step, record in state["steps"].items():
        if step in args.steps and not any(step == name for name, _ in todo):
            out(f"torch {version}: {step} done ({record.get('summary') or record.get('run') or 'ok'})")
    if args.dry_run:
        for step, commands in todo:
            for command, env in commands:
                prefix = "".join(f"{k}={v} " for k, v in env.items())
                out(f"torch {version}: {step}: {prefix}{' '.join(command)}")
        return True
    constraints_without_torch(args.venvs)
    ok_all = True
    for step, commands in todo:
        log = os.path.join(args.venvs, f"torch-{version}-{step}.log")
        if os.path.exists(log):
            os.replace(log, log + ".previous")
        start = time.time()
        codes = []
        for command, env in commands:  # a step stops at its first failing command
            codes.append(runner(command, env, log))
            if codes[-1] != 0:
                break
        seconds = time.time() - start
        record = {"ok": all(code == 0 for code in codes), "returncodes": codes, "seconds": round(seconds, 1),
                  "log": log, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if step == "tests":
            record["summary"] = last_summary(log)
        if step == "zero-grad":
            record["probe"] = last_json(log)
            record["summary"] = record["probe"] and ("defect: zero convolution gradients"
                                                     if record["probe"]["defect"] else "no defect")
        if step == "repro":
            record["output"] = tail(log, 40)
        if step.startswith("bench-"):
            kept = keep_run(os.path.join(venv, "runs", step), args.store, version, step, seconds)
            record["run"] = kept and os.path.relpath(kept, ROOT)
            record["ok"] = record["ok"] and bool(kept)
        if step == "install" and record["ok"]:
            found = installed_torch(venv)
            record.update(torch=found and found[0], onnxruntime=found and found[1])
        state = read_state(venv)
        state["steps"][step] = record
        write_state(venv, state)
        out(f"torch {version}: {step} {'ok' if record['ok'] else 'FAILED'} in {seconds:.0f} s "
            f"({record.get('summary') or record.get('run') or log})")
        ok_all = ok_all and record["ok"]
        if step == "install" and not record["ok"]:
            return False  # nothing else can run without the venv
    return ok_all


def main(argv=None, runner=subprocess_runner, out=print):
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        if args.report:
            from bench import versions_report

            versions_report.write(args.store, os.path.join(ROOT, "results"), args.venvs, out=out)
            return 0
        results = [run_release(args, version, runner, out) for version in args.releases]
    except UsageError as error:
        print(f"{prog('lenet-bench versions')}: error: {error}", file=sys.stderr)
        return 2
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
