"""One rank of bench.ddp under torchrun: the Net under DistributedDataParallel (Runner), its
agreement check, its timed rounds and, on rank 0, every rank's timings gathered into benchmarks
laid out as pytest-benchmark's; bench/studies/ddp.py hands them to the launcher or saves them.
"""

import datetime
import math
import os
import time

import torch
import torch.distributed as dist

import model
from bench.cli import UsageError
from bench.measure import machine, timing

DDP_CONFIGS = {"ddp-eager": False, "ddp-compile": True}  # name -> torch.compile the DDP module
# Profiler events that are communication: gloo's and NCCL's collectives and c10d's op wrappers.
COMM_MARKERS = ("gloo", "nccl", "allreduce", "all_reduce", "c10d::")


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


# ------------------------------------------------------------------------------------ the rank


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
    step = timing.synchronized(lambda: runner.step(x, target), device)
    first_call = timing.timed_block(step, 1)  # compile and first-call allocation
    estimate = timing.timed_block(step, 5) / 5
    rounds = torch.tensor([max(10, min(20000, int(seconds / estimate)))], device=device)
    dist.broadcast(rounds, 0)  # rank 0's count for everyone
    dist.barrier()
    times = timing.timed_calls(step, int(rounds))

    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    n = max(5, min(50, int(rounds) // 4))
    dist.barrier()
    with profile(activities=activities) as prof:
        wall = timing.timed_block(step, n)
    share, names = comm_share(prof, wall)
    check_identical(runner.net, runner.steps)  # the timed steps too left the ranks identical
    return {"times": times, "first_call": first_call, "comm_share": share, "comm_events": names}


def run_rank(args):
    """This rank's part of the run under torchrun: {"benchmarks": [...] (rank 0's only), "failed":
    [one line per configuration that failed its agreement check, the same on every rank]}."""
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
        compiled = DDP_CONFIGS[name]

        def factory(state_dict, dev, dtype, compiled=compiled):
            return Runner(state_dict, device, dtype, compiled=compiled, fault=args.fault)

        result = agreement.check(
            [], args.device, steps=args.steps, batch_size=args.batch_size, extra={name: factory}
        )[0]
        verdict = agreement.status(result)
        detail = result.error or next(
            (f"{r.quantity} at step {r.step}: {r.note}" for r in result.rows if not r.passed), ""
        )
        if rank == 0:
            print(
                f"{name} world {world}: agreement over {args.steps} steps: {verdict} (max abs error "
                f"{nan_if_none(result.max_abs_error):.3g}, "
                f"worst RMSE ratio {nan_if_none(result.worst_rmse_ratio):.3g})",
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
            part["benchmarks"].append(benchmark_entry(name, args, world, everyone, result))
            median = part["benchmarks"][-1]["stats"]["median"]
            print(
                f"{name} world {world}: median step {median * 1e3:.3g} ms over {len(m['times'])} rounds, "
                f"communication {m['comm_share']:.0%} of the step",
                flush=True,
            )
    dist.destroy_process_group()
    return part


def nan_if_none(value):
    return math.nan if value is None else value


def benchmark_entry(name, args, world, measured, result):
    """One benchmark laid out as pytest-benchmark's Metadata.as_dict(); a round's time is the
    slowest rank's (the step is done when every rank is). `result` is the agreement check's."""
    from pytest_benchmark.stats import Stats

    from bench.measure import agreement

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
        # the path before bench/ddp.py moved to bench/studies/: a saved run's identity stays the same
        "fullname": f"bench/ddp.py::test_ddp_train_step[{args.device}-{args.batch_size}-{backend}]",
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
            "agreement": agreement.status(result),
            "agreement_steps": args.steps,
            "agreement_max_abs_error": result.max_abs_error,
            "agreement_worst_rmse_ratio": result.worst_rmse_ratio,
            "agreement_worst_max_ratio": result.worst_max_ratio,
        },
        "options": {"timer": "perf_counter", "max_time": args.seconds, "warmup": True, "disable_gc": False},
        "stats": {**stats.as_dict(), "data": times, "iterations": 1},
    }
