"""The timed benchmarks: one training step and one forward pass, per backend x batch x device.

Run with `pytest bench/ --benchmark-only`. Each benchmark first warms up its runner
(compilation, first-call allocation) outside the timed rounds and records that time apart.
"""

import time

import pytest
import torch

import model
from bench import backends, harness

WARMUP_CALLS = 3


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


def run_benchmark(benchmark, runner_cache, mode_name, backend, batch_size, device):
    runner, setup_seconds, agreement = runner_cache.get(backend, device)
    x, target = model.make_batch(batch_size, device=device)
    if mode_name == "train":
        call = timed_call(lambda: runner.train_step(x, target), device)
    else:
        call = timed_call(lambda: runner.forward(x), device)

    start = time.perf_counter()
    call()  # the first call compiles or allocates: timed on its own, never with the rounds
    first_call_seconds = time.perf_counter() - start
    for _ in range(WARMUP_CALLS - 1):
        call()

    benchmark.group = f"{mode_name} {device} batch={batch_size}"
    benchmark.extra_info.update(
        backend=backend,
        mode=mode_name,
        device=device,
        batch_size=batch_size,
        flops=harness.count_flops(mode_name, batch_size),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        setup_seconds=setup_seconds,
        first_call_seconds=first_call_seconds,
        **agreement,
        **{f"backend_{k}": v for k, v in getattr(runner, "info", {}).items()},
    )
    harness.settle_heap()
    result = benchmark(call)
    assert torch.isfinite(result).all(), f"{backend} produced non-finite values"


@mode("train")
def test_train_step(benchmark, runner_cache, backend, batch_size, device):
    run_benchmark(benchmark, runner_cache, "train", backend, batch_size, device)


@mode("forward")
def test_forward(benchmark, runner_cache, backend, batch_size, device):
    run_benchmark(benchmark, runner_cache, "forward", backend, batch_size, device)


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
