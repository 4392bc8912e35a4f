"""Paired timing: a backend's timed rounds interleaved with eager's, in blocks, one ratio per pair.

On a shared machine the speed of everything drifts by tens of percent over seconds (see
../shared/design.md, "Noise"), so a speedup from eager timed at one moment and the backend at
another moves from run to run. Here the two alternate in blocks of about BLOCK_SECONDS each,
in the order E B | B E | E B | ..., so each pair of neighbouring blocks sees the same phase of
the machine and the order does not favour either side. Each pair gives one ratio (eager's time
per call over the backend's); the speedup is their median, with a bootstrap 95% interval.

Blocks, not single calls: alternating call by call puts the other backend's data in the caches
before every call and reads a different ratio (results/block_length.md measures it).

pytest-benchmark still times the backend's calls: they are its rounds (`benchmark.pedantic`),
and eager's blocks run in its untimed `setup` hook, so its statistics stay the absolute figures.
"""

import math
import time

import numpy as np

BLOCK_SECONDS = 0.05
PAIRED_SECONDS = 2.0  # both sides together, per benchmark
MIN_PAIRS = 10
CONFIDENCE = 0.95
RESAMPLES = 4000


def seconds_per_call(call, budget=0.02):
    """A rough per-call time from calls already warm: enough to size the blocks."""
    count, start = 0, time.perf_counter()
    while True:
        call()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget:
            return elapsed / count


def calls_per_block(per_call, block_seconds=BLOCK_SECONDS):
    return max(1, round(block_seconds / per_call))


def timed_block(call, count):
    """Seconds spent inside `count` calls, each timed on its own like pytest-benchmark's rounds."""
    total = 0.0
    for _ in range(count):
        start = time.perf_counter()
        call()
        total += time.perf_counter() - start
    return total


def median_interval(ratios, confidence=CONFIDENCE, resamples=RESAMPLES, seed=0):
    """(median, low, high): the median of the paired ratios and its percentile-bootstrap interval,
    resampling whole pairs (a pair shares a phase of the machine; pairs are the independent units)."""
    values = np.asarray(ratios, dtype=float)
    if values.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    medians = np.median(values[rng.integers(0, values.size, (resamples, values.size))], axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(medians, [tail, 1 - tail])
    return float(np.median(values)), float(low), float(high)


def paired(benchmark, call, baseline, seconds=PAIRED_SECONDS, block_seconds=BLOCK_SECONDS):
    """Time `call` with pytest-benchmark in blocks alternating with blocks of `baseline`.

    Returns the extra_info entries: speedup (baseline time / call time) median and interval,
    number of pairs, calls per block on each side. `baseline` may be `call` itself (eager
    against eager: a check that the method reads 1.0)."""
    block_seconds = min(block_seconds, seconds / (2 * MIN_PAIRS))  # short runs: shorter blocks, not fewer
    per_call, per_baseline = seconds_per_call(call), seconds_per_call(baseline)
    k_call, k_base = calls_per_block(per_call, block_seconds), calls_per_block(per_baseline, block_seconds)
    pair_seconds = k_call * per_call + k_base * per_baseline  # whole calls: a block can outlast its aim
    pairs = max(MIN_PAIRS, round(seconds / pair_seconds))
    pairs += pairs % 2  # whole E B | B E cycles
    baseline_blocks = []
    rounds_started = 0

    def setup():  # runs before every timed round, untimed
        nonlocal rounds_started
        block, position = divmod(rounds_started, k_call)
        rounds_started += 1
        if position == 0 and block % 2 == 0:
            if block > 0:  # the odd block before this one ended: its eager block comes after it
                baseline_blocks.append(timed_block(baseline, k_base))
            baseline_blocks.append(timed_block(baseline, k_base))

    benchmark.pedantic(call, setup=setup, rounds=pairs * k_call, iterations=1, warmup_rounds=0)
    baseline_blocks.append(timed_block(baseline, k_base))  # the last block is odd: eager after it
    rounds = benchmark.stats.stats.data
    call_blocks = [sum(rounds[i:i + k_call]) for i in range(0, len(rounds), k_call)]
    ratios = [(base / k_base) / (mine / k_call) for base, mine in zip(baseline_blocks, call_blocks)]
    median, low, high = median_interval(ratios)
    return {"speedup": median, "speedup_low": low, "speedup_high": high, "pairs": len(ratios),
            "block_calls": k_call, "baseline_block_calls": k_base, "block_seconds": block_seconds,
            "confidence": CONFIDENCE}
