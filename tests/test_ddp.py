"""bench.ddp: agreement and its failures, two node agents, faults, bad input, saved results.

Every run that needs processes is started at once by the `runs` fixture (each torchrun launch
spends most of its time importing torch), all on 127.0.0.1, all with a timeout; the tests then
read their results. World size 2, batch 8, eager DDP, a few steps: compile under DDP is checked
by the command itself (python -m bench.ddp), not here.
"""

import glob
import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from bench.launch.torchrun import failure_summary, free_port, launch, torchrun_command
from bench.runs import load, store
from bench.studies import ddp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 300  # seconds per process: far more than they need, but a hang must fail, not block CI
# A process-group timeout far longer than the stop we require: a rank that is stopped within
# STOP_BOUND of a fault was stopped by torchrun, not by the collective timing out.
PG_TIMEOUT = "600"
STOP_BOUND = 60
SMALL = ["--batch-size", "8", "--backends", "ddp-eager", "--timeout", PG_TIMEOUT]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}


def torchrun(port, *args, nnodes=1, nproc=2, node_rank=0):
    return torchrun_command(port, "bench.studies.ddp", list(args), nproc, nnodes=nnodes, node_rank=node_rank,
                            rdzv_id=f"test-{port}")


def launcher(*args):
    return [sys.executable, "-m", "bench.ddp", *args]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{name: (exit status, stdout, stderr, seconds, out folder)} for every process below, run together."""
    out = str(tmp_path_factory.mktemp("ddp"))
    node_port = free_port()
    commands = {
        # two node agents with different node ranks meet through the c10d rendezvous on 127.0.0.1
        "node0": torchrun(node_port, "--check-only", "--steps", "20", *SMALL, nnodes=2, nproc=1, node_rank=0),
        "node1": torchrun(node_port, "--check-only", "--steps", "20", *SMALL, nnodes=2, nproc=1, node_rank=1),
        "perturb": torchrun(free_port(), "--check-only", "--steps", "3", "--fault", "perturb", *SMALL),
        "sum": torchrun(free_port(), "--check-only", "--steps", "3", "--fault", "sum", *SMALL),
        "raise": launcher("--world-sizes", "2", "--check-only", "--steps", "5", "--fault", "raise", *SMALL),
        "die": launcher("--world-sizes", "2", "--check-only", "--steps", "5", "--fault", "die", *SMALL),
        "command": launcher("--world-sizes", "1,2", "--steps", "2", "--seconds", "0.2", "--out", out, *SMALL),
    }
    # The full command (world sizes 1 and 2, timed) runs after the others: beside six other torchrun
    # launches on a 2-core machine its rank 0 was killed (-15) in about one full test run in three.
    last = {"command": commands.pop("command")}
    results = {}
    for batch in (commands, last):
        results.update(run_together(batch))
    return {name: (*result, out) for name, result in results.items()}


def run_together(commands):
    """{name: (exit status, stdout, stderr, end time)} of commands started at once."""
    procs = {
        name: (
            subprocess.Popen(
                cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            ),
            time.time(),
        )
        for name, cmd in commands.items()
    }
    results = {}
    for name, (proc, start) in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=max(1, TIMEOUT - (time.time() - start)))
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            stderr += f"\n[test] killed after {TIMEOUT} s"
        results[name] = (proc.returncode, stdout, stderr, time.time())
    return results


def test_two_node_agents_and_world_2_agrees_with_float64_whole_batch(runs):
    for node in ("node0", "node1"):
        status, stdout, stderr, *_ = runs[node]
        assert status == 0, stderr[-2000:]
    # rank 0 (on whichever node the rendezvous made rank 0) reports the verdict over 20 steps
    verdicts = runs["node0"][1] + runs["node1"][1]
    assert re.search(r"ddp-eager world 2: agreement over 20 steps: pass", verdicts), verdicts


def test_a_rank_with_different_parameters_fails(runs):
    status, stdout, stderr, *_ = runs["perturb"]
    assert status == 1, stderr[-2000:]
    assert "parameters differ across ranks after step 2: rank 1 != rank 0 in fc3.bias" in stderr
    assert "FAIL" in stdout


def test_gradients_summed_instead_of_averaged_fail(runs):
    status, stdout, stderr, *_ = runs["sum"]
    assert status == 1, stderr[-2000:]
    assert re.search(r"agreement FAIL: grad \S+ at step 1: too far from float64", stderr), stderr[-2000:]


def fault_time(stdout):
    match = re.search(r"injecting fault '\w+' on rank 1 at step 3 \(unix time ([\d.]+)\)", stdout)
    assert match, stdout
    return float(match.group(1))


def test_a_rank_that_raises_stops_the_world_with_one_message(runs):
    status, stdout, stderr, end, _ = runs["raise"]
    assert status == 1
    assert stderr.strip().splitlines() == [
        "bench.ddp: world size 2: rank 1: injected fault on rank 1 at step 3"
    ], stderr[-2000:]
    assert end - fault_time(stdout) < STOP_BOUND  # the process-group timeout is 600 s


def test_a_rank_that_dies_stops_the_world_with_one_message(runs):
    status, stdout, stderr, end, _ = runs["die"]
    assert status == 1
    assert stderr.strip().splitlines() == [
        "bench.ddp: world size 2: rank 1 exited with code 3 without a message (killed or crashed); "
        "the other ranks were stopped"
    ], stderr[-2000:]
    assert end - fault_time(stdout) < STOP_BOUND


def test_the_command_saves_a_run_the_report_reads(runs):
    status, stdout, stderr, _, out = runs["command"]
    assert status == 0, stderr[-6000:]
    [path] = glob.glob(os.path.join(out, "ddp", "0001_*.json"))
    run = load.read_run(path)
    assert {key[3] for key in run["rows"]} == {"ddp-eager-w1", "ddp-eager-w2"}
    for bench in json.load(open(path))["benchmarks"]:
        info = bench["extra_info"]
        assert info["mode"] == "train" and info["batch_size"] == 8 and info["threads"] == 1
        assert info["agreement"] == "pass" and len(info["rank_median_seconds"]) == info["world_size"]
        assert info["agreement_worst_rmse_ratio"] > 0 and info["agreement_worst_max_ratio"] > 0
        assert 0 < info["comm_share"][0] < 1 and bench["stats"]["median"] > 0
    text = open(os.path.join(out, "DDP.md")).read()
    assert "| ddp-eager | 2 | 4 |" in text
    # a second save never replaces the first
    second = store.save_run(os.path.join(out, "ddp"), [])
    assert os.path.basename(second).startswith("0002_") and os.path.exists(path)


def test_a_launch_past_its_timeout_stops_torchrun_and_every_rank(tmp_path, monkeypatch):
    """A hung world: the launch returns its one line at the timeout, and no rank is left running
    (a rank left behind would keep the stderr pipe, and so the launcher, waiting)."""
    marker = f"hung_rank_{os.getpid()}"
    (tmp_path / f"{marker}.py").write_text("import time\ntime.sleep(150)\n")  # outlasts timeout + STOP_BOUND
    paths = [str(tmp_path), os.environ.get("PYTHONPATH")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, paths)))
    start = time.perf_counter()
    status, error, data = launch(marker, [], world=2, threads=1, prefix="x: ", timeout=20)
    assert (status, data) == (1, None) and error == "world size 2: no result within 20 s; stopped"
    assert time.perf_counter() - start < 20 + STOP_BOUND
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    assert not left, f"ranks still running: {left}"


# torchrun's summary when rank 1 aborted at exit and torchrun then stopped rank 0 (trimmed)
TORCHRUN_SUMMARY = """terminate called without an active exception
W1129 02:48:13.272000 8158 api.py:1028] Sending process 8162 closing signal SIGTERM
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
bench.ddp FAILED
------------------------------------------------------------
Failures:
[1]:
  time      : 2026-11-29_02:48:13
  host      : localhost
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 8162)  (SIGTERM)
  error_file: <N/A>
  traceback : Signal 15 (SIGTERM) received by PID 8162
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-11-29_02:48:13
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : -6 (pid: 8163)  (SIGABRT)
  error_file: <N/A>
  traceback : Signal 6 (SIGABRT) received by PID 8163
============================================================
"""


def test_the_failure_names_torchruns_root_cause_not_a_rank_it_stopped():
    summary = failure_summary(TORCHRUN_SUMMARY, "bench.ddp: ")
    assert summary.startswith("rank 1 exited with code -6 without a message")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "7"], "--batch-size 7 does not split evenly over world size 2"),
        (["--dist-backend", "nccl"], "--dist-backend nccl needs --device cuda"),
        (["--backends", "ddp-nope"], "--backends: unknown backend 'ddp-nope'"),
        (["--seconds", "0"], "--seconds: expected a positive number"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, args, message):
    assert ddp.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bench.ddp: {message}") and err.count("\n") == 1, err


def test_no_cuda_is_refused_with_its_reason(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert ddp.main(["--device", "cuda"]) == 2
    assert capsys.readouterr().err.startswith("bench.ddp: --device cuda: CUDA is not available")


def test_a_port_in_use_is_refused(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert ddp.main(["--port", str(port)]) == 2
    assert capsys.readouterr().err == f"bench.ddp: --port {port}: 127.0.0.1:{port} is already in use\n"
