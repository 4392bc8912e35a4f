"""Start one worker process and read back what it measured (the data-parallel step's torchrun
launcher is bench/studies/ddp.py).

A worker is `python -m <module> <arguments> --result FILE`: it writes its results to FILE as one
JSON document and exits 0, or prints one line `<module>: error: ...` on stderr and exits non-zero.
The worker imports this checkout's code (PYTHONPATH set to it), and `threads` is given to it as
OMP_NUM_THREADS so its OpenMP pool is made at that size before torch starts.
"""

import json
import os
import subprocess
import sys
import tempfile

from bench import REPO

WORKER_TIMEOUT = 900.0  # seconds for one worker, cold compilation included; then it is killed


class WorkerFailed(Exception):
    """A worker exited without results; the message is one line naming it and why."""


def last_line(text):
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def run(module, arguments, threads=None, timeout=WORKER_TIMEOUT):
    """Run `python -m module *arguments --result FILE` and return the JSON data it wrote to FILE."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", module, *map(str, arguments)]
    name = f"{module} {' '.join(map(str, arguments))}"
    with tempfile.TemporaryDirectory(prefix="lenet-bench-worker-") as folder:
        result = os.path.join(folder, "result.json")
        try:
            done = subprocess.run([*command, "--result", result], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:  # subprocess.run has killed it
            raise WorkerFailed(f"worker `{name}` gave no result within {timeout:g} s "
                               "and was killed") from None
        if done.returncode != 0:
            raise WorkerFailed(f"worker `{name}` failed (exit status {done.returncode}): "
                               f"{last_line(done.stderr)}")
        try:
            with open(result, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, json.JSONDecodeError) as error:
            raise WorkerFailed(f"worker `{name}` exited 0 but left no readable result ({error})") from None
