"""The timed benchmarks: one training step and one forward pass, per backend x batch x device x
thread count.

Run with `pytest bench/ --benchmark-only`. The timing happens in worker processes
(bench/launch/worker.py, started through bench/launch/process.py by bench/session.py's Measurements), several
per cell, each at its thread count: each creates its runners, checks them against float64 and
warms them up (compilation, first-call allocation) outside the timed rounds, then alternates
every backend's calls with eager's in blocks (bench/measure/timing.py). Here each benchmark hands the
per-call times of all its processes to pytest-benchmark as its rounds and records the speedup
over all processes, the first-call and setup times, memory, noise and agreement beside them.

Under --benchmark-disable (the test suite) nothing is timed: each cell's runner makes one call
in this process, after the same agreement check.
"""

import statistics

import pytest
import torch

from bench import backends, record
from bench.launch.process import ChildFailed
from bench.measure import machine, timing
from bench.measure.timing import warm
from bench.session import FirstCalls, one_call


def mode(name):
    def mark(function):
        function.mode = name
        return function
    return mark


def largest(values):
    """The largest of the processes' figures (memory, noise), None when none was read."""
    values = [v for v in values if isinstance(v, (int, float))]
    return max(values) if values else None


def measured_info(workers, backend, mode_name):
    """extra_info of one cell, and its rounds, from its worker processes' WorkerRecords."""
    cells = [worker.cells[backend] for worker in workers]
    modes = [cell.modes[mode_name] for cell in cells]
    first = cells[0]  # the first process filled the compile caches: its first calls show cold or warm
    info = timing.summarize([m.blocks() for m in modes])
    held = [c.held_bytes for c in cells]
    worst = next((c.agreement for c in cells if c.agreement.failed), first.agreement)  # a FAIL anywhere
    info.update(
        setup_seconds=first.setup_seconds,
        first_call_seconds=first.first_call_seconds.get(mode_name),
        first_call_cache=first.first_call_cache.get(mode_name),
        process_first_call_seconds=[cell.first_call_seconds.get(mode_name) for cell in cells],
        held_bytes=statistics.median(held) if all(isinstance(h, (int, float)) for h in held) else None,
        finite=all(m.finite for m in modes),
        **worst.extra_info(),
        **{f"backend_{k}": v for k, v in first.info.items()},
    )
    for key in {**modes[0].noise, **modes[0].memory}:
        if key.startswith(("noise_", "memory_")):
            info[key] = largest({**m.noise, **m.memory}.get(key) for m in modes)
    return info, [t for m in modes for t in m.call_times]


def run_benchmark(benchmark, runner_cache, mode_name, backend, batch_size, device, threads=None,
                  measurements=None):
    reason = backends.unavailable(backend, device)
    if reason:
        pytest.skip(f"{backend} on {device}: {reason}")
    flops = machine.count_flops(mode_name, batch_size)
    threads = threads or torch.get_num_threads()
    benchmark.group = f"{mode_name} {device} batch={batch_size} threads={threads}"
    benchmark.extra_info.update(backend=backend, mode=mode_name, device=device, batch_size=batch_size,
                                flops=flops, threads=threads, torch=torch.__version__)
    if getattr(benchmark, "disabled", True):  # --benchmark-disable: one untimed call here, as a test
        prepared = runner_cache.get(backend, device, batch_size)
        pool = runner_cache.pool(device, batch_size)
        warm(one_call(FirstCalls(prepared), mode_name, pool, device))
        benchmark.extra_info.update(batch_pool=len(pool), **prepared.agreement.extra_info())
        # as around the timed rounds (bench/launch/worker.py)
        with torch.compiler.set_stance("fail_on_recompile"):
            result = benchmark(one_call(prepared.runner, mode_name, pool, device))
        assert torch.isfinite(result).all(), f"{backend} produced non-finite values"
    else:
        try:
            workers = measurements.group(threads, device, batch_size)
        except ChildFailed as error:
            pytest.fail(str(error), pytrace=False)
        info, call_times = measured_info(workers, backend, mode_name)
        benchmark.extra_info.update(info)
        timing.record(benchmark, call_times)
        assert info["finite"], f"{backend} produced non-finite values"
    verdict = benchmark.extra_info["agreement"]
    if record.failed(verdict):  # after the timings: they are saved, with the verdict in extra_info
        ratios = [benchmark.extra_info.get(f"agreement_worst_{k}_ratio") for k in ("rmse", "max")]
        rmse, largest_error = (f"{r:.3g}" if isinstance(r, float) else "-" for r in ratios)
        pytest.fail(f"{backend} on {device} at batch {batch_size}: agreement with float64 {verdict} (worst "
                    f"RMSE ratio {rmse}, worst largest element error ratio {largest_error}); timings saved, "
                    "marked", pytrace=False)


@mode("train")
def test_train_step(benchmark, runner_cache, measurements, backend, batch_size, device, threads):
    run_benchmark(benchmark, runner_cache, "train", backend, batch_size, device, threads, measurements)


@mode("forward")
def test_forward(benchmark, runner_cache, measurements, backend, batch_size, device, threads):
    run_benchmark(benchmark, runner_cache, "forward", backend, batch_size, device, threads, measurements)


@pytest.mark.parametrize("size", [1024])
def test_sgemm(benchmark, measurements, device, threads, size):
    """The machine's reference throughput: one large float32 matrix multiply, in worker processes at
    each thread count like the cells; its rounds are every process's calls, so its spread is known."""
    reason = backends.device_unavailable(device)
    if reason:
        pytest.skip(reason)
    benchmark.group = f"sgemm {device} threads={threads}"
    benchmark.extra_info.update(mode="sgemm", device=device, size=size, flops=2 * size**3,
                                threads=threads, torch=torch.__version__)
    if getattr(benchmark, "disabled", True):
        a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
        benchmark(timing.synchronized(lambda: torch.mm(a, b), device))
        return
    try:
        processes = [worker.sgemm_call_times for worker in measurements.sgemm(threads, device, size)]
    except ChildFailed as error:
        pytest.fail(str(error), pytrace=False)
    benchmark.extra_info.update(processes=len(processes),
                                process_medians=[statistics.median(times) for times in processes])
    timing.record(benchmark, [t for times in processes for t in times])
