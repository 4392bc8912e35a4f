"""Run work in a fresh process and read back its results as data (torchrun's ranks are started by
bench/launch/torchrun.py, on the same protocol).

A child is `python -m <module> <arguments> --result FILE`: it writes its results to FILE as one
JSON document and exits 0, or prints its traceback and then one line `<module>: error: ...` on
stderr and exits non-zero (`child` is that side of it). What the child prints reaches the
parent line by line as it happens (`progress`) and a log file; a failure's one-line message names
that log, which keeps the whole traceback. The child's environment is a small one (`environment`):
what Python, the compilers and torch's runtimes need, this checkout first on PYTHONPATH, and
`threads` as OMP_NUM_THREADS so its OpenMP pool is made at that size before torch starts; other
variables pass only when named (`inherit`), as pyperf's workers do.
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import traceback

from bench import REPO, files

CHILD_TIMEOUT = 900.0  # seconds for one child, cold compilation included; then it is killed


class ChildFailed(Exception):
    """A child exited without results; the message is one line naming it and why."""


def last_line(text):
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


# What a child gets of this process's environment: names, and prefixes ending in "_" or "*".
PASSED = ["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_*", "TZ", "TMPDIR", "TEMP", "TMP", "SHELL",
          "LD_LIBRARY_PATH", "LD_PRELOAD", "CC", "CXX", "CPATH", "LIBRARY_PATH", "VIRTUAL_ENV",
          "CONDA_PREFIX",
          "PYTHONHOME", "TORCH*", "TORCHINDUCTOR_*", "INDUCTOR_*", "TRITON_*", "CUDA_*", "NVIDIA_*", "NCCL_*",
          "OPENBLAS_*", "MKL_*", "KMP_*", "ORT_*", "LENET_BENCH_*"]


def passed(name, inherit=()):
    """Whether a child gets variable `name`: it is in PASSED (or matches a prefix there) or in `inherit`."""
    return any(name == p or (p.endswith("*") and name.startswith(p[:-1])) for p in [*PASSED, *inherit])


def environment(threads=None, env=None, inherit=()):
    """A child's environment: the variables of this one that `passed` lets through, this checkout
    first on PYTHONPATH, OMP_NUM_THREADS set to `threads` when given, and the variables in `env`."""
    merged = {name: value for name, value in os.environ.items() if passed(name, inherit)}
    merged["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
    if threads is not None:
        merged["OMP_NUM_THREADS"] = str(threads)
    merged.update(env or {})
    return merged


def log_folder():
    """Where children's logs go: a folder of this user's under the temporary directory."""
    folder = os.path.join(tempfile.gettempdir(), "lenet-bench-logs")
    os.makedirs(folder, exist_ok=True)
    return folder


def read_result(path):
    """The JSON document a child left at `path`; OSError or ValueError when there is none."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def run(module, arguments, threads=None, timeout=CHILD_TIMEOUT, env=None, progress=None, inherit=()):
    """Run `python -m module *arguments --result FILE` and return the JSON data it wrote to FILE.
    Each line the child prints goes to `progress` as it comes and to a log file, kept when the child
    fails (its path is in the ChildFailed message) and removed when it succeeds."""
    command = [sys.executable, "-m", module, *map(str, arguments)]
    name = f"{module} {' '.join(map(str, arguments))}"
    fd, log = tempfile.mkstemp(dir=log_folder(), prefix=f"{module.rsplit('.', 1)[-1]}-", suffix=".log")
    with tempfile.TemporaryDirectory(prefix="lenet-bench-child-") as folder, os.fdopen(fd, "w") as log_file:
        result = os.path.join(folder, "result.json")
        log_file.write(f"$ {' '.join(command)} --result {result}\n")
        child = subprocess.Popen([*command, "--result", result], env=environment(threads, env, inherit),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, errors="replace")
        lines = []
        reader = threading.Thread(target=_follow, args=(child.stdout, log_file, lines, progress), daemon=True)
        reader.start()
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            reader.join(5)
            raise ChildFailed(f"child `{name}` gave no result within {timeout:g} s and was killed "
                              f"(its output: {log})") from None
        reader.join()
        if child.returncode != 0:
            raise ChildFailed(f"child `{name}` failed (exit status {child.returncode}; its output: {log}): "
                              f"{last_line(''.join(lines[-20:]))}")
        try:
            data = read_result(result)
        except (OSError, ValueError) as error:
            raise ChildFailed(f"child `{name}` exited 0 but left no readable result ({error}; its output: "
                              f"{log})") from None
    os.unlink(log)
    return data


def _follow(stream, log_file, lines, progress):
    """Copy the child's lines to its log and to `progress` as they come; keep them for the message."""
    for line in stream:
        log_file.write(line)
        log_file.flush()
        lines.append(line)
        if progress is not None and line.strip():
            progress(line.rstrip("\n"))


def write_result(path, data):
    """The child's results, whole or absent (a killed child leaves no half document)."""
    files.write_text_atomic(path, json.dumps(data, default=str))


def child(module, work, result):
    """The child's side of `run`: write what `work()` returns to `result` and return 0, or print the
    traceback (for the log) and then one line `<module>: error: <exception>: <its first line>`
    (for the message) and return 1."""
    try:
        write_result(result, work())
    except Exception as error:
        traceback.print_exc(file=sys.stderr)
        first_line = (str(error).splitlines() or [""])[0]
        print(f"{module}: error: {error.__class__.__name__}: {first_line}", file=sys.stderr, flush=True)
        return 1
    return 0
