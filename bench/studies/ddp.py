"""Data-parallel training step: the Net under DistributedDataParallel, launched by torchrun.

Every rank trains on its 1/world share of the same global batch; DDP all-reduces the gradients
(mean over ranks) during backward, so the step equals one step on the whole batch (the MSE loss
is a mean, and every shard has the same size). Configurations:

  ddp-eager    the tutorial's loop, the Net wrapped in DDP
  ddp-compile  torch.compile (Inductor, default mode) of the DDP-wrapped Net: its forward and the
               AOTAutograd backward of that forward are compiled; Dynamo's DDPOptimizer splits the
               graph at DDP's bucket boundaries so the all-reduce of one bucket can overlap the
               backward of the next (this Net's 0.25 MB of gradients fit one bucket: one graph).
               The MSE loss, the autograd engine and SGD.step() stay eager. It is NOT the
               compile-step's functional whole-step graph: that one takes gradients with torch.func,
               which bypasses DDP's autograd hooks, so no all-reduce would ever run.

Two ways to run it:
  python -m bench.ddp [--world-sizes 1,2] [--batch-size 64] [--backends ddp-eager,ddp-compile]
      starts torchrun once per world size on 127.0.0.1 (one thread per rank), checks agreement,
      times the step, and saves one pytest-benchmark JSON run under results/ddp/ plus
      results/DDP.md.
  torchrun [--nnodes N --node-rank R --rdzv-backend c10d --rdzv-endpoint HOST:PORT]
           --nproc-per-node P -m bench.ddp [options]
      is one world (any number of machines): rank 0 saves its own run under results/ddp/.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

import torch
import torch.distributed as dist

import model
from bench import backends, cli, files
from bench.cli import Parser, UsageError, positive
from bench.measure import machine

CONFIGS = {"ddp-eager": False, "ddp-compile": True}  # name -> torch.compile the DDP module
# Profiler events that are communication: gloo's and NCCL's collectives and c10d's op wrappers.
COMM_MARKERS = ("gloo", "nccl", "allreduce", "all_reduce", "c10d::")
# What a rank says when another rank went away first (gloo, NCCL): a consequence, not the cause.
PEER_LOST = r"Connection (reset|closed) by peer|remote worker|NCCL communicator was aborted"
LAUNCH_TIMEOUT = 600  # seconds for one torchrun launch, compile included; then it is killed


# ------------------------------------------------------------------------------------ the runner


class Runner:
    """The Net under DDP on this rank, with the Runner surface of bench.backends.

    train_step(x, target) takes the *global* batch, trains on this rank's shard and returns the
    global mean loss (one extra all-reduce, outside the timed step()). With `verify`, after every
    step the parameters of all ranks are gathered and compared bit for bit: a mismatch raises the
    same error on every rank (all see the same gathered data), so no rank is left waiting.
    `fault` injects a bug for the tests: "perturb" moves one parameter of the last rank by one
    ulp after step 2, "sum" all-reduces gradients as a sum instead of a mean, "raise" and "die"
    make the last rank raise or exit at step 3.
    """

    def __init__(self, state_dict, device, dtype=torch.float32, compiled=False, verify=True, fault=None):
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device, self.dtype, self.verify, self.fault = torch.device(device), dtype, verify, fault
        self.net = model.Net().to(device=device, dtype=dtype)
        self.net.load_state_dict(state_dict)
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.ddp = torch.nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        if fault == "sum":  # the wrong gradient scaling the agreement check must catch
            self.ddp.register_comm_hook(None, _sum_hook)
        self.module = torch.compile(self.ddp) if compiled else self.ddp
        self.optimizer = model.make_optimizer(self.ddp.parameters())
        self.steps = 0

    def shard(self, x):
        if x.shape[0] % self.world:
            raise ValueError(f"batch size {x.shape[0]} does not split evenly over world size {self.world}")
        n = x.shape[0] // self.world
        return x[self.rank * n : (self.rank + 1) * n]

    def step(self, x, target):
        """The timed step on this rank's shard: zero_grad, forward, loss, backward (+ all-reduce), SGD."""
        self.steps += 1
        if self.fault in ("raise", "die") and self.rank == self.world - 1 and self.steps == 3:
            print(
                f"injecting fault '{self.fault}' on rank {self.rank} at step {self.steps} "
                f"(unix time {time.time():.3f})",
                flush=True,
            )
            if self.fault == "die":
                os._exit(3)  # no message, no cleanup: as a killed or crashed process
            raise RankFailed(f"injected fault on rank {self.rank} at step {self.steps}")
        self.optimizer.zero_grad()
        loss = model.loss_fn(self.module(x), target)
        loss.backward()
        self.optimizer.step()
        if self.fault == "perturb" and self.rank == self.world - 1 and self.steps == 2:
            with torch.no_grad():
                p = self.net.fc3.bias
                p[0] = torch.nextafter(p[0], p[0] + 1)
        return loss.detach()

    def train_step(self, x, target):
        model.check_input(x, target, dtype=self.dtype, device=self.device)
        try:
            loss = self.step(self.shard(x), self.shard(target))
        except Exception as error:
            # Not a verdict on this backend but a dead rank: the others wait in an all-reduce, so
            # it must stop the world (bench.agreement would record an Exception and go on).
            raise RankFailed(f"{type(error).__name__}: {error}") from error
        dist.all_reduce(loss, op=dist.ReduceOp.SUM)
        if self.verify:
            check_identical(self.net, self.steps)
        return loss / self.world

    @torch.no_grad()
    def forward(self, x):  # the wrapped Net, eager: inference has nothing to all-reduce
        model.check_input(x, dtype=self.dtype, device=self.device)
        return self.net(x)

    def parameters(self):
        return {k: v.detach() for k, v in self.net.named_parameters()}

    def gradients(self):  # after the all-reduce: the mean over ranks
        return {k: v.grad for k, v in self.net.named_parameters()}


class RankFailed(BaseException):
    """A rank cannot go on: the whole run must stop, not only this backend's check."""


def _sum_hook(state, bucket):
    """A DDP comm hook that sums the gradients of the ranks (DDP's own divides by the world size)."""
    future = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
    return future.then(lambda f: f.value()[0])


def check_identical(net, step):
    """Raise on every rank unless all ranks hold bit-identical parameters."""
    names = [name for name, _ in net.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()]).view(torch.int32)  # compare bits
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    for rank, other in enumerate(gathered[1:], 1):
        if not torch.equal(other, gathered[0]):
            first = int((other != gathered[0]).nonzero()[0])
            sizes = torch.tensor([p.numel() for p in net.parameters()]).cumsum(0)
            name = names[int((sizes <= first).sum())]
            raise RuntimeError(
                f"parameters differ across ranks after step {step}: rank {rank} != rank 0 in {name}"
            )


# ------------------------------------------------------------------------------------ the worker


def comm_share(prof, wall):
    """Share of `wall` seconds during which a communication op ran on this rank: the union of the
    intervals of every profiler event whose name names a collective (COMM_MARKERS), on any thread
    (gloo runs its all-reduce on its own thread, overlapping backward), over the wall time."""
    spans = sorted(
        (e.time_range.start, e.time_range.end)
        for e in prof.events()
        if any(m in e.name.lower() for m in COMM_MARKERS)
    )
    busy, end = 0.0, -math.inf
    for start, stop in spans:  # microseconds
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    return busy / 1e6 / wall, sorted(
        {e.name for e in prof.events() if any(m in e.name.lower() for m in COMM_MARKERS)}
    )


def measure(runner, x, target, seconds, device):
    """Warm up, then time a number of rounds that every rank agrees on (a rank that stopped
    early would leave the others waiting in an all-reduce)."""
    start = time.perf_counter()
    runner.step(x, target)  # compile and first-call allocation
    backends.synchronize(device)
    first_call = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(5):
        runner.step(x, target)
    backends.synchronize(device)
    estimate = (time.perf_counter() - start) / 5
    rounds = torch.tensor([max(10, min(20000, int(seconds / estimate)))], device=device)
    dist.broadcast(rounds, 0)  # rank 0's count for everyone
    times = []
    dist.barrier()
    for _ in range(int(rounds)):
        start = time.perf_counter()
        runner.step(x, target)
        backends.synchronize(device)
        times.append(time.perf_counter() - start)

    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    n = max(5, min(50, int(rounds) // 4))
    dist.barrier()
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(n):
            runner.step(x, target)
        backends.synchronize(device)
        wall = time.perf_counter() - start
    share, names = comm_share(prof, wall)
    check_identical(runner.net, runner.steps)  # the timed steps too left the ranks identical
    return {"times": times, "first_call": first_call, "comm_share": share, "comm_events": names}


def worker(args):
    """One rank under torchrun; returns the exit status."""
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local_rank}" if args.device == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.set_num_threads(args.threads)
    dist.init_process_group(
        args.dist_backend,
        timeout=datetime.timedelta(seconds=args.timeout),
        device_id=device if device.type == "cuda" else None,
    )
    world = dist.get_world_size()
    if args.batch_size % world:
        raise UsageError(f"--batch-size {args.batch_size} does not split evenly over world size {world}")
    from bench.measure import agreement

    part = {"benchmarks": [], "failed": []}
    for name in args.backends:
        compiled = CONFIGS[name]

        def factory(state_dict, dev, dtype, compiled=compiled):
            return Runner(state_dict, device, dtype, compiled=compiled, fault=args.fault)

        result = agreement.check(
            [], args.device, steps=args.steps, batch_size=args.batch_size, extra={name: factory}
        )[0]
        verdict = agreement.status(result)
        worst = max((r.rmse_ratio for r in result.rows if r.rmse_ratio is not None), default=math.nan)
        detail = result.error or next(
            (f"{r.quantity} at step {r.step}: {r.note}" for r in result.rows if not r.passed), ""
        )
        if rank == 0:
            print(
                f"{name} world {world}: agreement over {args.steps} steps: {verdict} (max abs error "
                f"{math.nan if result.max_abs_error is None else result.max_abs_error:.3g}, "
                f"worst RMSE ratio {worst:.3g})",
                flush=True,
            )
        if not result.passed:
            part["failed"].append(f"{name} world {world}: agreement {verdict}: {detail}")
        if args.check_only:
            continue

        x, target = model.make_batch(args.batch_size, seed=1, device=device)
        runner = factory(model.make_net(0).state_dict(), device, torch.float32)
        runner.verify = False
        m = measure(runner, runner.shard(x), runner.shard(target), args.seconds, device)
        everyone = [None] * world
        dist.all_gather_object(everyone, m)
        if rank == 0:
            part["benchmarks"].append(
                benchmark_entry(name, args, world, everyone, verdict, result.max_abs_error)
            )
            median = part["benchmarks"][-1]["stats"]["median"]
            print(
                f"{name} world {world}: median step {median * 1e3:.3g} ms over {len(m['times'])} rounds, "
                f"communication {m['comm_share']:.0%} of the step",
                flush=True,
            )
    dist.destroy_process_group()
    if rank == 0:
        if args.part:  # the launcher merges the world sizes into one run
            files.write_text_atomic(args.part, json.dumps(part))
        elif part["benchmarks"]:
            print(f"saved {save_run(args.out, part['benchmarks'])}")
    if part["failed"]:
        if rank == 0:  # every rank reached the same verdict; one says so
            print("bench.ddp: " + "; ".join(part["failed"]), file=sys.stderr)
        return 1
    return 0


def benchmark_entry(name, args, world, measured, verdict, max_error):
    """One benchmark laid out as pytest-benchmark's Metadata.as_dict(); a round's time is the
    slowest rank's (the step is done when every rank is)."""
    from pytest_benchmark.stats import Stats

    stats = Stats()
    times = [max(ts) for ts in zip(*(m["times"] for m in measured))]
    for t in times:
        stats.update(t)
    backend = f"{name}-w{world}"  # one row per world size: the report keys rows by backend
    params = {"device": args.device, "batch_size": args.batch_size, "backend": backend}
    medians = [sorted(m["times"])[len(m["times"]) // 2] for m in measured]
    return {
        "group": f"ddp train {args.device} batch={args.batch_size}",
        "name": f"test_ddp_train_step[{args.device}-{args.batch_size}-{backend}]",
        "fullname": f"bench/studies/ddp.py::test_ddp_train_step[{args.device}-{args.batch_size}-{backend}]",
        "params": params,
        "param": f"{args.device}-{args.batch_size}-{backend}",
        "extra_info": {
            "backend": backend,
            "config": name,
            "mode": "train",
            "device": args.device,
            "batch_size": args.batch_size,
            "world_size": world,
            "per_rank_batch": args.batch_size // world,
            "dist_backend": args.dist_backend,
            "flops": machine.count_flops("train", args.batch_size),
            "threads": args.threads,
            "torch": torch.__version__,
            "first_call_seconds": max(m["first_call"] for m in measured),
            "rank_median_seconds": medians,
            "comm_share": [m["comm_share"] for m in measured],
            "comm_events": measured[0]["comm_events"],
            "agreement": verdict,
            "agreement_steps": args.steps,
            "agreement_max_abs_error": max_error,
        },
        "options": {"timer": "perf_counter", "max_time": args.seconds, "warmup": True, "disable_gc": False},
        "stats": {**stats.as_dict(), "data": times, "iterations": 1},
    }


def save_run(out, benchmarks):
    """Save a run as NNNN_<commit>_<time>_<pid>.json under out/ddp, never replacing a file: the
    whole file is written aside, then hard-linked to a name that does not exist yet."""
    from pytest_benchmark.utils import get_commit_info

    commit = get_commit_info()
    now = datetime.datetime.now(datetime.UTC)
    run = {
        "machine_info": machine.machine_info(),
        "commit_info": commit,
        "benchmarks": benchmarks,
        "datetime": now.isoformat(),
        "version": machine.package_version("pytest-benchmark"),
    }
    folder = os.path.join(out, "ddp")
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".run-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(run, f, indent=4)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, files.file_mode())
        dirty = "_uncommitted-changes" if commit.get("dirty") else ""
        while True:
            numbers = [int(n[:4]) for n in os.listdir(folder) if n[:4].isdigit()]
            path = os.path.join(
                folder,
                f"{max(numbers, default=0) + 1:04d}_{commit.get('id', 'unversioned')}_"
                f"{now:%Y%m%d_%H%M%S}{dirty}_{os.getpid()}.json",
            )
            try:
                os.link(tmp, path)
                return path
            except FileExistsError:
                continue  # another run took the number first
    finally:
        os.unlink(tmp)


# ------------------------------------------------------------------------------------ the launcher


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


def torchrun_command(port, worker_args, nproc, nnodes=1, node_rank=0, rdzv_id=None):
    """torchrun on 127.0.0.1 running this module as the worker: c10d rendezvous, no restarts."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes),
            "--node-rank", str(node_rank), "--nproc-per-node", str(nproc),
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
            "--rdzv-id", rdzv_id or f"bench-ddp-{os.getpid()}", "--local-addr", "127.0.0.1",
            "--max-restarts", "0", "--monitor-interval", "0.5", "-m", "bench.studies.ddp", *worker_args]


def launch(args, world, part):
    """torchrun for one world size on this machine; returns (exit status, one-line error or None)."""
    port = args.port or free_port()
    cmd = torchrun_command(
        port,
        [
            "--batch-size",
            str(args.batch_size),
            "--backends",
            ",".join(args.backends),
            "--device",
            args.device,
            "--dist-backend",
            args.dist_backend,
            "--threads",
            str(args.threads),
            "--steps",
            str(args.steps),
            "--seconds",
            str(args.seconds),
            "--timeout",
            str(args.timeout),
            "--part",
            part,
        ]
        + (["--check-only"] if args.check_only else [])
        + (["--fault", args.fault] if args.fault else []),
        nproc=world,
    )
    # All traffic on the loopback; OMP_NUM_THREADS set so torchrun does not print its banner about it.
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "GLOO_SOCKET_IFNAME": "lo",
        "NCCL_SOCKET_IFNAME": "lo",
    }
    proc = subprocess.Popen(cmd, env=env, stdout=sys.stdout, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return 1, f"world size {world}: no result within {LAUNCH_TIMEOUT} s; stopped"
    if proc.returncode == 0:
        return 0, None
    return proc.returncode, f"world size {world}: " + failure_summary(err)


def failure_summary(err):
    """One line from torchrun's stderr, naming the rank that failed first. A rank's own one-line
    error wins, unless it only says that a peer went away (gloo's "Connection reset by peer"):
    then the rank that exited without a word (killed, crashed) is the cause."""
    lines = [line.strip() for line in err.splitlines()]
    ours = [line.removeprefix("bench.ddp: ") for line in lines if line.startswith("bench.ddp: ")]
    primary = [line for line in ours if not re.search(PEER_LOST, line)]
    if primary:
        return primary[0]
    # torchrun's summary: "rank : 1 (local_rank: 1)" then "exitcode : 3 (pid: ...)" per failed rank
    failed, rank = [], None
    for line in lines:
        if line.startswith("rank ") and ":" in line:
            rank = line.split(":", 1)[1].split("(")[0].strip()
        elif line.startswith("exitcode ") and rank is not None:
            failed.append((rank, line.split(":", 1)[1].split("(pid")[0].strip()))
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


def write_report(path, run_path, benchmarks):
    rows = {(b["extra_info"]["config"], b["extra_info"]["world_size"]): b for b in benchmarks}
    first = benchmarks[0]["extra_info"]
    link = os.path.relpath(run_path, os.path.dirname(os.path.abspath(path)))
    lines = [
        "# Data-parallel training step (DDP)",
        "",
        f"From [{os.path.basename(run_path)}]({link}): "
        f"`python -m bench.ddp` on {machine.cpu_model()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, {first['dist_backend']} on {first['device']}, "
        f"{first['threads']} thread(s) per rank, global batch {first['batch_size']} split evenly over "
        "the ranks. Step time is the median over rounds of the slowest rank's step (zero_grad, forward, "
        "loss, backward with the gradient all-reduce, SGD update).",
        "",
        "<!-- summary:start -->",
        "| config | world size | batch per rank | median step | samples/s | speedup vs world 1 "
        "| scaling efficiency | communication share (per rank) | agreement |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, world), b in sorted(rows.items()):
        info, median = b["extra_info"], b["stats"]["median"]
        base = rows.get((name, 1))
        speedup = base["stats"]["median"] / median if base else math.nan
        shares = ", ".join(f"{s:.0%}" for s in info["comm_share"])
        lines.append(
            f"| {name} | {world} | {info['per_rank_batch']} | {median * 1e3:.3g} ms "
            f"| {info['batch_size'] / median:,.0f} | {speedup:.2f}x | {speedup / world:.0%} | {shares} "
            f"| {info['agreement']} |"
        )
    events = sorted({e for b in benchmarks for e in b["extra_info"]["comm_events"]})
    lines += [
        "<!-- summary:end -->",
        "",
        "- **Scaling efficiency** = throughput at world size N / (N x throughput at world size 1) = "
        "t(1) / (N x t(N)) for the same global batch (strong scaling); the speedup column is t(1) / t(N).",
        "- **Communication share**: torch.profiler over a few steps after the timed rounds; the union of the "
        "time intervals of every event whose name names a collective ("
        + ", ".join(f"`{e}`" for e in events)
        + "), on any thread, divided by the wall time of those steps. Gloo runs DDP's all-reduce on its own "
        "thread while backward goes on, so this is the time communication was in flight, overlapped or not, "
        "not the time the step waited for it. It includes the profiler's own overhead.",
        f"- **Agreement**: {first['agreement_steps']} steps on the global batch, every rank's parameters "
        "compared bit for bit after every step, and loss, gradients, parameters and output compared with "
        "eager float64 on the whole batch by bench/measure/agreement.py's criterion.",
        f"- {first['threads']} thread(s) per rank: world size 2 uses two cores, world size 1 one. On the "
        "project's shared 2-core VMs a timing moves by up to 2x between runs (design.md, Noise): read one "
        "run's ratios as rough.",
    ]
    files.write_text_atomic(path, "\n".join(lines) + "\n")


def launcher(args):
    if args.device == "cuda" and max(args.world_sizes) > torch.cuda.device_count():
        raise UsageError(
            f"--world-sizes {max(args.world_sizes)} needs as many GPUs, found {torch.cuda.device_count()}"
        )
    if args.port and port_in_use(args.port):
        raise UsageError(f"--port {args.port}: 127.0.0.1:{args.port} is already in use")
    benchmarks, failed = [], []
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        for world in args.world_sizes:
            part = os.path.join(tmp, f"world{world}.json")
            status, error = launch(args, world, part)
            if error:
                failed.append(error)
            if os.path.exists(part):
                benchmarks += json.load(open(part))["benchmarks"]
            if status and not os.path.exists(part):
                break  # it did not finish: a fault, not a verdict; do not go on to the next world size
    if benchmarks:
        path = save_run(args.out, benchmarks)
        write_report(os.path.join(args.out, "DDP.md"), path, benchmarks)
        print(f"saved {path} and {os.path.join(args.out, 'DDP.md')}")
    if failed:
        print("bench.ddp: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


def parse(argv, under_torchrun=False):
    p = Parser(prog="python -m bench.ddp", description=__doc__.split("\n\n")[0])
    p.add_argument("--world-sizes", type=cli.positive_list, default=[1, 2], help="launcher only")
    p.add_argument(
        "--batch-size", type=positive, default=64, help="global batch, split evenly over the ranks"
    )
    p.add_argument("--backends", default="ddp-eager,ddp-compile", help=", ".join(CONFIGS))
    p.add_argument("--device", choices=backends.DEVICES, default="cpu")
    p.add_argument("--dist-backend", choices=["gloo", "nccl"], help="default: gloo on cpu, nccl on cuda")
    p.add_argument("--threads", type=positive, default=1, help="torch threads per rank")
    p.add_argument("--steps", type=positive, default=agreement_steps(), help="agreement steps")
    p.add_argument("--seconds", type=float, default=2.0, help="timed rounds per configuration, about")
    p.add_argument("--timeout", type=positive, default=60, help="process-group timeout, seconds")
    p.add_argument(
        "--port", type=positive, help="rendezvous port on 127.0.0.1 (launcher; default: a free one)"
    )
    p.add_argument("--out", type=cli.output_folder, default="results")
    p.add_argument("--check-only", action="store_true", help="agreement only, no timing")
    p.add_argument("--fault", choices=["perturb", "sum", "raise", "die"], help="inject a bug (for the tests)")
    p.add_argument("--part", help="internal: where rank 0 leaves its results for the launcher")
    args = p.parse_args(argv)
    args.backends = [n.strip() for n in args.backends.split(",") if n.strip()]
    for name in args.backends or [""]:
        if name not in CONFIGS:
            raise UsageError(f"--backends: unknown {name!r}; choose from: {', '.join(CONFIGS)}")
    args.dist_backend = args.dist_backend or ("nccl" if args.device == "cuda" else "gloo")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device cuda: {backends.device_unavailable('cuda')}")
    if args.dist_backend == "nccl":
        if args.device != "cuda":
            raise UsageError(
                "--dist-backend nccl needs --device cuda (NCCL runs on GPUs only; use gloo on cpu)"
            )
        if not dist.is_nccl_available():
            raise UsageError("--dist-backend nccl: this torch build has no NCCL")
    if not dist.is_available() or (args.dist_backend == "gloo" and not dist.is_gloo_available()):
        raise UsageError(
            f"--dist-backend {args.dist_backend}: this torch build has no {args.dist_backend} backend"
        )
    if not args.seconds > 0:
        raise UsageError(f"--seconds: expected a positive number, got {args.seconds}")
    for world in [] if under_torchrun else args.world_sizes:  # a worker checks its own world size
        if args.batch_size % world:
            raise UsageError(f"--batch-size {args.batch_size} does not split evenly over world size {world}")
    return args


def agreement_steps():
    from bench.measure import agreement

    return agreement.DEFAULT_STEPS


def main(argv=None):
    under_torchrun = "TORCHELASTIC_RUN_ID" in os.environ and "RANK" in os.environ
    try:
        args = parse(sys.argv[1:] if argv is None else argv, under_torchrun)
        return worker(args) if under_torchrun else launcher(args)
    except UsageError as error:
        print(f"bench.ddp: {error}", file=sys.stderr)
        return 2
    except (Exception, RankFailed) as error:  # one line per rank, no traceback; torchrun stops the others
        rank = f"rank {os.environ['RANK']}: " if under_torchrun else ""
        name = "" if isinstance(error, RankFailed) else f"{type(error).__name__}: "
        print(f"bench.ddp: {rank}{name}{error}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
