"""Run work in a fresh process and read back its results as data (torchrun's ranks are started by
bench/launch/torchrun.py, on the same protocol).

A child is `python -m <module> <arguments> --result FILE`: it writes its results to FILE as one
JSON document and exits 0, or prints one line `<module>: error: ...` on stderr and exits non-zero
(`child` is that side of it). The child imports this checkout's code (PYTHONPATH set to it), and
`threads` is given to it as OMP_NUM_THREADS so its OpenMP pool is made at that size before torch
starts.
"""

import json
import os
import subprocess
import sys
import tempfile

from bench import REPO, files

CHILD_TIMEOUT = 900.0  # seconds for one child, cold compilation included; then it is killed


class ChildFailed(Exception):
    """A child exited without results; the message is one line naming it and why."""


def last_line(text):
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def environment(threads=None, env=None):
    """A child's environment: this one, with this checkout first on PYTHONPATH, OMP_NUM_THREADS set
    to `threads` when given, and the variables in `env` (TORCHINDUCTOR_CACHE_DIR, ...)."""
    merged = dict(os.environ)
    merged["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, merged.get("PYTHONPATH")]))
    if threads is not None:
        merged["OMP_NUM_THREADS"] = str(threads)
    merged.update(env or {})
    return merged


def read_result(path):
    """The JSON document a child left at `path`; OSError or ValueError when there is none."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def run(module, arguments, threads=None, timeout=CHILD_TIMEOUT, env=None):
    """Run `python -m module *arguments --result FILE` and return the JSON data it wrote to FILE."""
    command = [sys.executable, "-m", module, *map(str, arguments)]
    name = f"{module} {' '.join(map(str, arguments))}"
    with tempfile.TemporaryDirectory(prefix="lenet-bench-child-") as folder:
        result = os.path.join(folder, "result.json")
        try:
            done = subprocess.run([*command, "--result", result], env=environment(threads, env),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:  # subprocess.run has killed it
            raise ChildFailed(f"child `{name}` gave no result within {timeout:g} s "
                               "and was killed") from None
        if done.returncode != 0:
            raise ChildFailed(f"child `{name}` failed (exit status {done.returncode}): "
                               f"{last_line(done.stderr)}")
        try:
            return read_result(result)
        except (OSError, ValueError) as error:
            raise ChildFailed(f"child `{name}` exited 0 but left no readable result ({error})") from None


def write_result(path, data):
    """The child's results, whole or absent (a killed child leaves no half document)."""
    files.write_text_atomic(path, json.dumps(data, default=str))


def child(module, work, result):
    """The child's side of `run`: write what `work()` returns to `result` and return 0, or print
    one line `<module>: error: <exception>: <its first line>` and return 1 (no traceback)."""
    try:
        write_result(result, work())
    except Exception as error:
        first_line = (str(error).splitlines() or [""])[0]
        print(f"{module}: error: {error.__class__.__name__}: {first_line}", file=sys.stderr)
        return 1
    return 0
