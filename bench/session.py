"""The state of one benchmark run: the runners it holds, their first calls, and the worker processes
that time them. The pytest suite (bench/conftest.py) and each worker (bench/launch/worker.py) use it."""

import contextlib
import itertools
import os
import time

import model
from bench import backends
from bench.measure import memory, timing

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


class PreparedRunner:
    """One backend's runner for one device and batch size, with what was measured while preparing it,
    outside every timed region: its setup and first-call seconds, the compile-cache hits and misses
    of those first calls, the memory they kept, and its agreement verdict."""

    def __init__(self, runner, setup_seconds, held_bytes):
        self.runner, self.setup_seconds = runner, setup_seconds
        self.first_call_seconds = {}  # "train"/"forward" -> seconds of the runner's first such call
        self.first_call_cache = {}  # "train"/"forward" -> {"hits": n, "misses": n} of compile caches
        self.held_bytes = held_bytes  # resident-set growth over creation and each first call (bench.memory)
        self.agreement = {"agreement": "not checked"}
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

    def pool(self, device, batch_size):
        key = (device, batch_size)
        if key not in self.pools:
            self.pools[key] = model.make_batch_pool(batch_size, device=device)
        return self.pools[key]

    def get(self, backend, device, batch_size):
        """The PreparedRunner of `backend` (skipped with its reason where it cannot run)."""
        reason = backends.unavailable(backend, device)
        if reason:
            import pytest  # here, not at the top: the reports import this module for MODES

            pytest.skip(f"{backend} on {device}: {reason}")
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
        created = {name: self._create(name, device, batch_size) for name in names}
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
            prepared.agreement = {"agreement": agreement.status(result),
                                  "agreement_max_abs_error": result.max_abs_error,
                                  "agreement_worst_rmse_ratio": result.worst_rmse_ratio,
                                  "agreement_worst_max_ratio": result.worst_max_ratio,
                                  "agreement_steps": agreement.DEFAULT_STEPS,
                                  "agreement_batch_size": batch_size}
        verdicts = ", ".join(f"{name} {one.agreement['agreement']}" for name, one in created.items())
        seconds = time.perf_counter() - start
        self.progress(f"{device} batch {batch_size}: agreement checked in {seconds:.1f} s: {verdicts}")


# The agreement check starts every runner from make_net(AGREEMENT_SEED), as its reference does.
AGREEMENT_SEED = 0


def terminal_progress(config):
    """A function that prints one progress line to the terminal while tests run, past pytest's capture."""
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")

    def progress(text):
        if terminal is None:
            return
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            terminal.write_line(f"lenet-bench: {text}")
    return progress


class Measurements:
    """The timed run's manager: for each (threads, device, batch size) group, the first time one of
    its benchmarks asks, it starts the worker processes (bench/launch/worker.py through
    bench/launch/process.py) one after another, each holding eager and every selected backend, and
    keeps what they return. A worker that fails fails that group's benchmarks with its one-line message."""

    def __init__(self, selection, processes, paired_seconds, progress=print):
        self.selection, self.processes, self.progress = selection, processes, progress
        self.seconds = paired_seconds / processes  # --paired-seconds is per benchmark, all processes together
        self.groups = {}  # key -> list of the workers' data, or the ChildFailed that stopped them

    def _collect(self, key, arguments, threads, label):
        from bench.launch import process

        if key not in self.groups:
            results = []
            try:
                for i in range(self.processes):
                    start = time.perf_counter()
                    results.append(process.run("bench.launch.worker", arguments, threads=threads))
                    seconds = time.perf_counter() - start
                    self.progress(f"{label}: worker {i + 1}/{self.processes} done in {seconds:.1f} s")
                self.groups[key] = results
            except process.ChildFailed as error:
                self.groups[key] = error
        if isinstance(self.groups[key], Exception):
            import pytest

            pytest.fail(str(self.groups[key]), pytrace=False)
        return self.groups[key]

    def group(self, threads, device, batch_size):
        """Every worker's data for this group: [{"cells": {backend: {...}}}, ...]."""
        names = [name for name in self.selection["backend"] if not backends.unavailable(name, device)]
        arguments = ["--threads", threads, "--device", device, "--batch-size", batch_size,
                     "--backends", ",".join(names), "--modes", ",".join(self.selection["mode"]),
                     "--seconds", self.seconds]
        return self._collect((threads, device, batch_size), arguments, threads,
                             f"{threads} thread(s), {device} batch {batch_size}")

    def sgemm(self, threads, device, size):
        arguments = ["--threads", threads, "--device", device, "--sgemm", size, "--seconds", self.seconds]
        return self._collect((threads, device, "sgemm", size), arguments, threads,
                             f"{threads} thread(s), {device} sgemm {size}")
