"""The state of one benchmark run: the runners it holds, their first calls, and the worker processes
that time them. The pytest suite (bench/conftest.py) and each worker (bench/launch/worker.py) use it;
it imports no pytest (a runner that cannot be made raises Unavailable, a failed group ChildFailed)."""

import itertools
import os
import random
import statistics
import time

import torch

import model
from bench import backends, record
from bench.measure import memory, noise, timing

BATCH_SIZES = [1, 64, 256]
MODES = ["train", "forward"]


def all_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def one_call(runner, mode_name, pool, device, start=0):
    """The callable that warm-up and timing call: one training step or one forward pass of `runner`
    on the pool's next batch (from batch `start` on), waiting for the device where it must."""
    batches = itertools.islice(itertools.cycle(pool), start, None)
    if mode_name == "train":
        return timing.synchronized(lambda: runner.train_step(*next(batches)), device)
    return timing.synchronized(lambda: runner.forward(next(batches)[0]), device)


def time_paired(call, baseline, device, seconds=timing.PAIRED_SECONDS, phases=None, **block_options):
    """How the suite times one cell, for the worker and every study: `call` (warm) paired with
    `baseline` (warm eager) after a settled heap, under the recompile guard and the noise monitor,
    then the call's memory and a finite check. A record.ModeTiming; its seconds go into `phases`."""
    phases, start = {} if phases is None else phases, time.perf_counter()
    timing.settle_heap()
    # What the warm-up compiled is what is timed: a torch.compile recompilation in the rounds
    # (a guard that fails on a round's batch or state) raises instead of being timed.
    with torch.compiler.set_stance("fail_on_recompile"):
        monitor = noise.Monitor().start()
        blocks = timing.paired_blocks(call, baseline, seconds, **block_options)
        noisy = monitor.stop()
        middle = time.perf_counter()
        peak = memory.peak_over_call(call, device)
        finite = bool(torch.isfinite(call()).all())
    phases["timing"] = phases.get("timing", 0.0) + middle - start
    phases["memory"] = phases.get("memory", 0.0) + time.perf_counter() - middle
    return record.ModeTiming(**blocks, finite=finite, noise=noisy, memory=peak)


class PreparedRunner:
    """One backend's runner for one device and batch size, with what was measured while preparing it,
    outside every timed region: its setup and first-call seconds, the compile-cache hits and misses
    of those first calls, the memory they kept, and its agreement verdict."""

    def __init__(self, runner, setup_seconds, held_bytes):
        self.runner, self.setup_seconds = runner, setup_seconds
        self.first_call_seconds = {}  # "train"/"forward" -> seconds of the runner's first such call
        self.first_call_cache = {}  # "train"/"forward" -> {"hits": n, "misses": n} of compile caches
        self.held_bytes = held_bytes  # resident-set growth over creation and each first call (bench.memory)
        self.agreement = record.Agreement()
        self.label, self.progress = "", lambda text: None  # for progress lines


def _compile_cache_counts(runner):
    """Inductor's FX graph cache and AOTInductor's library cache, hits and misses so far."""
    import torch

    inductor = torch._dynamo.utils.counters["inductor"]
    info = getattr(runner, "info", {})
    return (inductor["fxgraph_cache_hit"] + info.get("library_hit", 0),
            inductor["fxgraph_cache_miss"] + info.get("library_miss", 0))


class FirstCalls:
    """Wraps a runner to time its first train_step and first forward, and the compile-cache hits and
    misses during them: whoever calls first (the agreement check, or the warm-up before timing)."""

    def __init__(self, prepared):
        self._prepared = prepared
        runner = prepared.runner
        self.parameters, self.gradients = runner.parameters, runner.gradients
        self.train_step = self._first("train", runner.train_step)
        self.forward = self._first("forward", runner.forward)

    def _first(self, mode, method):
        def call(*args):
            prepared = self._prepared
            if mode in prepared.first_call_seconds:
                return method(*args)
            hits, misses = _compile_cache_counts(prepared.runner)
            resident = memory.resident_bytes()
            start = time.perf_counter()
            result = method(*args)
            prepared.first_call_seconds[mode] = time.perf_counter() - start
            prepared.held_bytes = _add_growth(prepared.held_bytes, resident)
            new_hits, new_misses = _compile_cache_counts(prepared.runner)
            prepared.first_call_cache[mode] = {"hits": new_hits - hits, "misses": new_misses - misses}
            cached = (f", compile cache: {new_misses - misses} built, {new_hits - hits} loaded"
                      if new_hits - hits or new_misses - misses else "")
            seconds = prepared.first_call_seconds[mode]
            prepared.progress(f"{prepared.label}: first {mode} call {seconds:.1f} s{cached}")
            return result
        return call


def _add_growth(total, before):
    """total + (resident set now - before), None when either cannot be read."""
    after = memory.resident_bytes()
    return None if None in (total, before, after) else total + after - before


class Unavailable(Exception):
    """A configuration cannot run on this device here; the message says why."""


class RunnerCache:
    """One runner per backend, device and batch size, made the first time a benchmark of that
    device and batch size runs. Its creation, first calls (compilation) and its agreement check
    happen then, outside every timed region. The agreement check trains the very runners that are
    timed, at the batch size they are timed at, beside the float64 reference: its verdict travels
    with their timings, and a FAIL fails their benchmarks (bench/test_benchmarks.py)."""

    def __init__(self, check_agreement, selected=None, progress=print):
        self.check_agreement = check_agreement
        self.selected = selected or list(backends.DEFAULT_CONFIGS)
        self.progress = progress
        self.prepared = {}  # (backend, device, batch_size) -> PreparedRunner
        self.pools = {}  # (device, batch_size) -> the batches every runner cycles through
        self.phase_seconds = {"create": 0.0, "agreement": 0.0}  # where preparing runners spent its time

    def pool(self, device, batch_size):
        key = (device, batch_size)
        if key not in self.pools:
            self.pools[key] = model.make_batch_pool(batch_size, device=device)
        return self.pools[key]

    def get(self, backend, device, batch_size):
        """The PreparedRunner of `backend` (skipped with its reason where it cannot run)."""
        reason = backends.unavailable(backend, device)
        if reason:
            raise Unavailable(f"{backend} on {device}: {reason}")
        if (backend, device, batch_size) not in self.prepared:
            self._prepare(device, batch_size, [backend])
        return self.prepared[(backend, device, batch_size)]

    def _create(self, backend, device, batch_size):
        resident = memory.resident_bytes()
        start = time.perf_counter()
        runner = backends.create(backend, model.make_net(seed=AGREEMENT_SEED).state_dict(), device=device)
        prepared = PreparedRunner(runner, time.perf_counter() - start, _add_growth(0, resident))
        prepared.label, prepared.progress = f"{device} batch {batch_size}: {backend}", self.progress
        self.prepared[(backend, device, batch_size)] = prepared
        self.progress(f"{device} batch {batch_size}: {backend} created in {prepared.setup_seconds:.1f} s")
        return prepared

    def _prepare(self, device, batch_size, wanted):
        """Create the runners of every selected backend (or just `wanted`) at this device and batch
        size and, when timing, check them all in one lockstep run against float64."""
        names = [name for name in dict.fromkeys([*self.selected, *wanted])
                 if not backends.unavailable(name, device)
                 and (name, device, batch_size) not in self.prepared]
        if not self.check_agreement:
            names = [name for name in names if name in wanted]
        start = time.perf_counter()
        created = {name: self._create(name, device, batch_size) for name in names}
        self.phase_seconds["create"] += time.perf_counter() - start
        if not self.check_agreement or not created:
            return
        from bench.measure import agreement

        self.progress(f"{device} batch {batch_size}: checking {', '.join(created)} against float64 eager "
                      f"for {agreement.DEFAULT_STEPS} steps (the first steps compile)")
        start = time.perf_counter()
        extra = {name: (lambda state, dev, dtype, one=one: FirstCalls(one)) for name, one in created.items()}
        for result in agreement.check([], device=device, steps=agreement.DEFAULT_STEPS, batch_size=batch_size,
                                      seed=AGREEMENT_SEED, extra=extra):
            prepared = created[result.backend]
            prepared.agreement = record.Agreement(
                verdict=agreement.status(result), max_abs_error=result.max_abs_error,
                worst_rmse_ratio=result.worst_rmse_ratio, worst_max_ratio=result.worst_max_ratio,
                steps=agreement.DEFAULT_STEPS, batch_size=batch_size)
        verdicts = ", ".join(f"{name} {one.agreement.verdict}" for name, one in created.items())
        seconds = time.perf_counter() - start
        self.phase_seconds["agreement"] += seconds
        self.progress(f"{device} batch {batch_size}: agreement checked in {seconds:.1f} s: {verdicts}")


# The agreement check starts every runner from make_net(AGREEMENT_SEED), as its reference does.
AGREEMENT_SEED = 0


class Measurements:
    """The timed run's manager. The first time a benchmark asks for its group's data, it runs every
    worker of the run: for each of `processes` rounds, one worker process per (threads, device,
    batch size) group and one per sgemm, the groups in a new random order each round, so a group's
    processes are spread over the run (the machine's drift over the run lands inside each cell's
    interval, not between cells) and no group always follows the same one. Each worker
    (bench/launch/worker.py, through bench/launch/process.py) holds eager and every selected
    backend; its lines stream to `progress` as they come. A group whose worker fails is left out
    of later rounds, and its benchmarks get the ChildFailed."""

    def __init__(self, selection, processes, paired_seconds, progress=print, inherit=(), sgemm_size=1024):
        self.selection, self.processes, self.progress = selection, processes, progress
        self.inherit, self.sgemm_size = inherit, sgemm_size
        self.seconds = paired_seconds / processes  # --paired-seconds is per benchmark, all processes together
        self.groups = None  # key -> [WorkerRecord, ...], or the ChildFailed that stopped the group
        self.timeline = []  # (round, key, seconds) of every worker, in the order they ran

    def plan(self):
        """key -> (worker arguments, threads, label) of every group of the run."""
        groups = {}
        for threads in self.selection["threads"]:
            for device in self.selection["device"]:
                if backends.device_unavailable(device):
                    continue
                names = [n for n in self.selection["backend"] if not backends.unavailable(n, device)]
                for batch_size in self.selection["batch_size"]:
                    groups[(threads, device, batch_size)] = (
                        ["--threads", threads, "--device", device, "--batch-size", batch_size,
                         "--backends", ",".join(names), "--modes", ",".join(self.selection["mode"]),
                         "--seconds", self.seconds],
                        threads, f"{threads} thread(s), {device} batch {batch_size}")
                if self.sgemm_size:
                    groups[(threads, device, "sgemm", self.sgemm_size)] = (
                        ["--threads", threads, "--device", device, "--sgemm", self.sgemm_size,
                         "--seconds", self.seconds], threads, f"{threads} thread(s), {device} sgemm")
        return groups

    def run_all(self):
        from bench.launch import process

        plan = self.plan()
        self.groups = {key: [] for key in plan}
        total, done, start = len(plan) * self.processes, 0, time.perf_counter()
        last = {}  # group -> its latest worker's seconds: what the estimate of the time left sums
        for round_index in range(self.processes):
            order = list(plan)
            random.shuffle(order)
            for position, key in enumerate(order):
                if isinstance(self.groups[key], Exception):
                    total -= 1
                    continue
                arguments, threads, label = plan[key]
                began = time.perf_counter()
                try:
                    data = process.run("bench.launch.worker", arguments, threads=threads,
                                       progress=self.progress, inherit=self.inherit)
                    self.groups[key].append(record.WorkerRecord.from_json(data))
                except process.ChildFailed as error:
                    self.groups[key] = error
                seconds = last[key] = time.perf_counter() - began
                self.timeline.append((round_index, key, seconds))
                done += 1
                ahead = [k for k in order[position + 1:] + list(plan) * (self.processes - round_index - 1)
                         if not isinstance(self.groups[k], Exception)]
                typical = statistics.median(last.values())
                left = sum(last.get(k, typical) for k in ahead)
                elapsed = time.perf_counter() - start
                self.progress(f"run: {done}/{total} workers done ({label}, round {round_index + 1}/"
                              f"{self.processes}, {seconds:.1f} s); {elapsed:.0f} s so far, "
                              f"about {left:.0f} s left")

    def worker_log(self):
        """Every worker of the run in the order it ran: its round, group, wall seconds seen from here
        and the phases it reported (bench/launch/worker.py), for the saved run's lenet_bench entry."""
        phases = {}
        for key, workers in self.groups.items():
            for i, worker in enumerate(workers if isinstance(workers, list) else []):
                phases[(key, i)] = worker.phases
        log, seen = [], {}
        for round_index, key, seconds in self.timeline:
            i = seen[key] = seen.get(key, -1) + 1
            log.append({"round": round_index, "group": list(key), "seconds": round(seconds, 2),
                        "phases": phases.get((key, i), {})})
        return log

    def _collect(self, key):
        if self.groups is None:
            self.run_all()
        data = self.groups.get(key)
        if data is None:
            raise KeyError(f"group {key} is not in this run's selection")
        if isinstance(data, Exception):
            raise data
        return data

    def group(self, threads, device, batch_size):
        """Every worker's WorkerRecord for this group (ChildFailed when its worker failed)."""
        return self._collect((threads, device, batch_size))

    def sgemm(self, threads, device, size):
        return self._collect((threads, device, "sgemm", size))
