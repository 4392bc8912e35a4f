"""torchrun on this machine: one launch per world size, rank 0's results back as data.

The ranks run `python -m <module> <arguments> --result FILE` under torchrun (c10d rendezvous on
127.0.0.1, no restarts); rank 0 writes its results to FILE as one JSON document, as a child of
bench/launch/process.py does. Unlike there, a launch that exits non-zero may still have results
(a verdict that failed after the timing): they are returned with its one-line error.
"""

import os
import re
import socket
import subprocess
import sys
import tempfile

from bench.launch import process

LAUNCH_TIMEOUT = 600  # seconds for one torchrun launch, compile included; then it is stopped
STOP_TIMEOUT = 60  # seconds torchrun has to stop its ranks (it gives them 30 s before SIGKILL)
# What a rank says when another rank went away first (gloo, NCCL): a consequence, not the cause.
PEER_LOST = r"Connection (reset|closed) by peer|remote worker|NCCL communicator was aborted"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def torchrun_command(port, module, arguments, nproc, nnodes=1, node_rank=0, rdzv_id=None):
    """torchrun on 127.0.0.1 running `python -m module *arguments` as every rank: c10d rendezvous,
    no restarts."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes),
            "--node-rank", str(node_rank), "--nproc-per-node", str(nproc),
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
            "--rdzv-id", rdzv_id or f"bench-ddp-{os.getpid()}", "--local-addr", "127.0.0.1",
            "--max-restarts", "0", "--monitor-interval", "0.5", "-m", module, *map(str, arguments)]


def launch(module, arguments, world, threads, prefix, port=None, timeout=LAUNCH_TIMEOUT):
    """torchrun `world` ranks of `module` on this machine, the ranks' output passed through.
    Returns (exit status, one-line error or None, rank 0's results or None). `prefix` starts the
    one-line errors the ranks print (failure_summary)."""
    # All traffic on the loopback; OMP_NUM_THREADS set so torchrun does not print its banner about it.
    env = process.environment(threads, {"GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo"})
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as folder:
        result = os.path.join(folder, f"world{world}.json")
        command = torchrun_command(port or free_port(), module, [*arguments, "--result", result], nproc=world)
        proc = subprocess.Popen(command, env=env, stdout=sys.stdout, stderr=subprocess.PIPE, text=True)

        def stop():
            # SIGTERM, not SIGKILL: torchrun's agent then stops its ranks (each in a session of its
            # own, out of reach of a signal to torchrun's group). A rank left behind would hold the
            # stderr pipe open, and this wait with it, and keep its cores busy.
            proc.terminate()
            try:
                proc.communicate(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        try:
            _, err = proc.communicate(timeout=timeout)
            status = proc.returncode
            error = f"world size {world}: " + failure_summary(err, prefix) if status else None
        except subprocess.TimeoutExpired:
            stop()
            status, error = 1, f"world size {world}: no result within {timeout} s; stopped"
        except BaseException:
            stop()
            raise
        try:
            data = process.read_result(result)
        except FileNotFoundError:
            data = None
    return status, error, data


def failure_summary(err, prefix):
    """One line from torchrun's stderr, naming the rank that failed first. A rank's own one-line
    error (a line starting with `prefix`) wins, unless it only says that a peer went away (gloo's
    "Connection reset by peer"): then the rank that exited without a word (killed, crashed) is the cause."""
    lines = [line.strip() for line in err.splitlines()]
    ours = [line.removeprefix(prefix) for line in lines if line.startswith(prefix)]
    primary = [line for line in ours if not re.search(PEER_LOST, line)]
    if primary:
        return primary[0]
    # torchrun's summary: "rank : 1 (local_rank: 1)" then "exitcode : 3 (pid: ...)" per failed rank
    # torchrun lists the ranks it stopped (SIGTERM, -15) under "Failures:" first and the one that
    # failed first under "Root Cause (first observed failure):" last: that one leads.
    failed, rank, root = [], None, False
    for line in lines:
        if line.startswith("Root Cause"):
            root = True
        elif line.startswith("rank ") and ":" in line:
            rank = line.split(":", 1)[1].split("(")[0].strip()
        elif line.startswith("exitcode ") and rank is not None:
            code = line.split(":", 1)[1].split("(pid")[0].strip()
            failed.insert(0 if root else len(failed), (rank, code))
            rank = None
    silent = [
        (rank, code) for rank, code in failed if not any(line.startswith(f"rank {rank}:") for line in ours)
    ]
    if silent:
        rank, code = silent[0]
        return (
            f"rank {rank} exited with code {code} without a message (killed or crashed); "
            "the other ranks were stopped"
        )
    if ours:
        return ours[0]
    tail = [line for line in lines if line]
    return tail[-1] if tail else "torchrun failed without a message"
