"""The timed benchmarks: one training step and one forward pass, per backend x batch x device.

Run with `pytest bench/ --benchmark-only`. Each runner is created, checked against float64 and
warmed up (compilation, first-call allocation) outside the timed rounds; those times are
recorded apart. The timed rounds alternate with eager's in blocks (bench/timing.py), every call
takes the next batch of a pre-generated pool, and each benchmark records the machine's noise
while it ran and the memory of one call.
"""

import itertools

import pytest
import torch

from bench import backends, harness, memory, noise, timing
from bench.conftest import PAIRED_SECONDS, FirstCalls

WARMUP_CALLS = 3
BASELINE = "eager"


def mode(name):
    def mark(function):
        function.mode = name
        return function
    return mark


def timed_call(step, device):
    """The callable pytest-benchmark times: one unit of work, and on CUDA a wait for it to end."""
    if torch.device(device).type == "cuda":
        def call():
            result = step()
            backends.synchronize(device)
            return result
        return call
    return step


def unit(runner, mode_name, pool, device):
    """One timed unit of `runner`: a training step or a forward pass on the pool's next batch."""
    batches = itertools.cycle(pool)
    if mode_name == "train":
        return timed_call(lambda: runner.train_step(*next(batches)), device)
    return timed_call(lambda: runner.forward(next(batches)[0]), device)


def run_benchmark(benchmark, runner_cache, mode_name, backend, batch_size, device, paired_seconds=None):
    cell = runner_cache.get(backend, device, batch_size)
    pool = runner_cache.pool(device, batch_size)
    first = unit(FirstCalls(cell), mode_name, pool, device)
    for _ in range(WARMUP_CALLS):  # the first call compiles or allocates, when nothing did before
        first()
    call = unit(cell.runner, mode_name, pool, device)
    flops = harness.count_flops(mode_name, batch_size)
    benchmark.group = f"{mode_name} {device} batch={batch_size}"
    benchmark.extra_info.update(
        backend=backend,
        mode=mode_name,
        device=device,
        batch_size=batch_size,
        flops=flops,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        batch_pool=len(pool),
        setup_seconds=cell.setup_seconds,
        first_call_seconds=cell.first_call_seconds.get(mode_name),
        first_call_cache=cell.first_call_cache.get(mode_name),
        held_bytes=cell.held_bytes,
        **cell.agreement,
        **{f"backend_{k}": v for k, v in getattr(cell.runner, "info", {}).items()},
    )
    harness.settle_heap()
    # What was compiled in the warm-up is what is timed: a torch.compile recompilation in the
    # rounds (a guard that fails on a round's batch or state) raises instead of being timed.
    with torch.compiler.set_stance("fail_on_recompile"):
        if getattr(benchmark, "disabled", True):  # --benchmark-disable: one untimed call, as a test
            result = benchmark(call)
        else:
            baseline = call if backend == BASELINE else unit(
                runner_cache.get(BASELINE, device, batch_size).runner, mode_name, pool, device)
            monitor = noise.Monitor().start()
            seconds = paired_seconds or timing.PAIRED_SECONDS
            benchmark.extra_info.update(timing.paired(benchmark, call, baseline, seconds))
            benchmark.extra_info.update(monitor.stop())
            benchmark.extra_info.update(memory.peak_over_call(call, device))
            result = call()
    assert torch.isfinite(result).all(), f"{backend} produced non-finite values"
    verdict = cell.agreement["agreement"]
    if verdict.startswith("FAIL"):  # after the timings: they are saved, with the verdict in extra_info
        ratios = [cell.agreement.get(f"agreement_worst_{k}_ratio") for k in ("rmse", "max")]
        rmse, largest = (f"{r:.3g}" if isinstance(r, float) else "-" for r in ratios)
        pytest.fail(f"{backend} on {device} at batch {batch_size}: agreement with float64 {verdict} (worst "
                    f"RMSE ratio {rmse}, worst largest element error ratio {largest}); timings saved, marked",
                    pytrace=False)


@mode("train")
def test_train_step(benchmark, runner_cache, backend, batch_size, device, request):
    run_benchmark(benchmark, runner_cache, "train", backend, batch_size, device,
                  request.config.stash[PAIRED_SECONDS])


@mode("forward")
def test_forward(benchmark, runner_cache, backend, batch_size, device, request):
    run_benchmark(benchmark, runner_cache, "forward", backend, batch_size, device,
                  request.config.stash[PAIRED_SECONDS])


@pytest.mark.parametrize("size", [1024])
def test_sgemm(benchmark, device, size):
    """The machine's reference throughput: one large float32 matrix multiply, same run."""
    reason = backends.unavailable("eager", device)
    if reason:
        pytest.skip(reason)
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    call = timed_call(lambda: torch.mm(a, b), device)
    for _ in range(WARMUP_CALLS):
        call()
    benchmark.group = f"sgemm {device}"
    benchmark.extra_info.update(mode="sgemm", device=device, size=size, flops=2 * size**3,
                                threads=torch.get_num_threads(), torch=torch.__version__)
    benchmark(call)
