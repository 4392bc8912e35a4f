"""Paired timing: a backend's calls interleaved with eager's, in blocks, one ratio per pair.

On a shared machine the speed of everything drifts over seconds, so a speedup from eager timed
at one moment and the backend at another moves from run to run. Here the two alternate in blocks
of about BLOCK_SECONDS each, in the order E B | B E | E B | ..., so each pair of neighbouring
blocks sees the same phase of the machine and the order does not favour either side. Each pair
gives one ratio (eager's time per call over the backend's).

Blocks, not single calls: alternating call by call puts the other backend's data in the caches
before every call and reads a different ratio (results/block_length.md measures it). A block
holds at least MIN_BLOCK_CALLS calls, at every batch size.

Part of the noise is fixed for the life of a process (its placement and memory layout, the
machine's phase while it ran), so a run times each cell in several worker processes, spread over
the run (bench/session.py), and the processes are the independent units: each gives one median
of its pairs, the speedup is their geometric mean, and its 95% interval is Student's t over
their logarithms (Kalibera and Jones's top level; docs/method.md says why and how it was
calibrated). One process alone gets the bootstrap interval of its own pairs.

`paired_blocks` is the measurement (it returns data); `record` hands the per-call times of the
timed side to pytest-benchmark as its rounds, so its statistics and saved runs hold them.
timed_calls, timed_block and timed_for are the loops every timed region here and in the studies
runs on, after `warm`; `synchronized` makes a callable wait for its device.
"""

import contextlib
import gc
import math
import time

import numpy as np
import torch
from scipy import stats

from bench import backends

BLOCK_SECONDS = 0.05
PAIRED_SECONDS = 1.2  # both sides together, per benchmark, over all its processes
MIN_PAIRS = 6  # per process: whole E B | B E cycles, enough to bootstrap within it
OVERRUN = 3  # a process stops pairing, after whole cycles and MIN_PAIRS, past OVERRUN x its budget
MIN_BLOCK_CALLS = 3  # several calls per block at every batch size (one call per block reads cache effects)
WARMUP_CALLS = 3  # untimed calls before timing: the first compiles or allocates, when nothing did before
CONFIDENCE = 0.95
RESAMPLES = 4000  # bootstrap resamples of one process's pairs


def seconds_per_call(call, budget=0.02):
    """A rough per-call time from calls already warm: enough to size the blocks."""
    start = time.perf_counter()
    count = len(timed_for(call, budget))
    return (time.perf_counter() - start) / count


def calls_per_block(per_call, block_seconds=BLOCK_SECONDS, min_calls=MIN_BLOCK_CALLS):
    return max(min_calls, round(block_seconds / per_call))


def synchronized(call, device):
    """The callable to time on `device`: `call`, and on CUDA a wait for the work it queued to end
    (a CUDA timing that does not wait measures the launch, not the work)."""
    if torch.device(device).type != "cuda":
        return call

    def waited():
        result = call()
        backends.synchronize(device)
        return result
    return waited


def warm(call, calls=WARMUP_CALLS):
    """Call `call` `calls` times, untimed, and return it: the calls to time come after these."""
    for _ in range(calls):
        call()
    return call


def timed_calls(call, count):
    """The seconds of each of `count` calls, each timed on its own like pytest-benchmark's rounds."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def timed_block(call, count):
    """Seconds spent inside `count` calls."""
    return sum(timed_calls(call, count))


def timed_for(call, seconds, min_calls=1):
    """The seconds of each call of `call`, called one after another until `seconds` have passed
    and it was called at least `min_calls` times."""
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < min_calls:
        times += timed_calls(call, 1)
    return times


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


def process_interval(groups, confidence=CONFIDENCE):
    """(speedup, low, high) over ratios grouped by process: the geometric mean of the processes'
    medians and Student's t interval over their logarithms, the processes being the independent
    units (with one process: median_interval of its pairs)."""
    groups = [group for group in groups if len(group)]
    if len(groups) < 2:
        return median_interval(groups[0] if groups else [], confidence)
    logs = np.log([np.median(group) for group in groups])
    half = stats.t.ppf((1 + confidence) / 2, logs.size - 1) * logs.std(ddof=1) / math.sqrt(logs.size)
    return tuple(float(math.exp(logs.mean() + d)) for d in (0.0, -half, half))


def change_interval(base_groups, cand_groups, confidence=CONFIDENCE):
    """(low, high) of base speedup / candidate speedup - 1 from two runs' ratios grouped by process:
    Welch's t interval on the difference of the mean log process medians."""
    base, cand = (np.log([np.median(g) for g in groups if len(g)]) for groups in (base_groups, cand_groups))
    va, vb = base.var(ddof=1) / base.size, cand.var(ddof=1) / cand.size
    df = (va + vb) ** 2 / (va**2 / (base.size - 1) + vb**2 / (cand.size - 1)) if va + vb > 0 else 1.0
    half = stats.t.ppf((1 + confidence) / 2, df) * math.sqrt(va + vb)
    diff = base.mean() - cand.mean()
    return math.expm1(diff - half), math.expm1(diff + half)


def alternating_blocks(calls, block_calls, rounds, keep_going=None):
    """Blocks of `block_calls[name]` calls of each callable in `calls` in turn, the order reversed
    every other round (A B | B A | A B ...): neighbouring blocks share a phase of the machine, and
    going first favours no side. Before each even round `keep_going(round)`, when given, may stop
    it. Returns {name: [the per-call seconds of each of its blocks]}; calls must be warm."""
    order = list(calls)
    blocks = {name: [] for name in order}
    for r in range(rounds):
        if r % 2 == 0 and keep_going is not None and not keep_going(r):
            break
        for name in order if r % 2 == 0 else order[::-1]:
            blocks[name].append(timed_calls(calls[name], block_calls[name]))
    return blocks


def paired_blocks(call, baseline, seconds=PAIRED_SECONDS, block_seconds=BLOCK_SECONDS,
                  min_block_calls=MIN_BLOCK_CALLS):
    """Time `call` in blocks alternating with blocks of `baseline` (E B | B E | ...), from calls
    already warm. Returns the data: the seconds of every timed call of `call` (its rounds), each
    block's total on both sides (block i of one side pairs with block i of the other), and the
    calls per block. `baseline` may be another runner of the same backend (an A/A). On a machine
    that slows down past the blocks' sizing (a neighbour holding the other core of a two-thread
    team) it stops after OVERRUN x `seconds`, with at least MIN_PAIRS pairs, so a run stays bounded."""
    block_seconds = min(block_seconds, seconds / (2 * MIN_PAIRS))  # short runs: shorter blocks, not fewer
    per_call, per_baseline = seconds_per_call(call), seconds_per_call(baseline)
    k_call, k_base = (calls_per_block(per, block_seconds, min_block_calls)
                      for per in (per_call, per_baseline))
    pair_seconds = k_call * per_call + k_base * per_baseline  # whole calls: a block can outlast its aim
    pairs = max(MIN_PAIRS, round(seconds / pair_seconds))
    pairs += pairs % 2  # whole E B | B E cycles
    start = time.perf_counter()

    def keep_going(pair):
        return pair < MIN_PAIRS or time.perf_counter() - start <= OVERRUN * seconds
    blocks = alternating_blocks({"baseline": baseline, "call": call}, {"baseline": k_base, "call": k_call},
                                pairs, keep_going)
    return {"call_times": [t for block in blocks["call"] for t in block],
            "call_blocks": [sum(block) for block in blocks["call"]],
            "baseline_blocks": [sum(block) for block in blocks["baseline"]],
            "block_calls": k_call, "baseline_block_calls": k_base, "block_seconds": block_seconds}


def pair_ratios(blocks):
    """Eager's time per call over the backend's, one per pair of neighbouring blocks."""
    k_call, k_base = blocks["block_calls"], blocks["baseline_block_calls"]
    return [(base / k_base) / (mine / k_call)
            for base, mine in zip(blocks["baseline_blocks"], blocks["call_blocks"])]


def summarize(processes):
    """The extra_info entries of one cell from its processes' paired_blocks: the speedup and its
    interval over processes (process_interval), and the backend's and eager's time per call inside those
    same pairs (their medians over all pairs), so a row's time agrees with its speedup."""
    ratios = [pair_ratios(blocks) for blocks in processes]
    median, low, high = process_interval(ratios)
    mine = [b / p["block_calls"] for p in processes for b in p["call_blocks"]]
    eager = [b / p["baseline_block_calls"] for p in processes for b in p["baseline_blocks"]]
    return {"speedup": median, "speedup_low": low, "speedup_high": high,
            "pairs": sum(map(len, ratios)), "processes": len(processes),
            "process_speedups": [float(np.median(r)) for r in ratios],
            "pair_ratios": [[round(r, 5) for r in group] for group in ratios],
            "paired_seconds_per_call": float(np.median(mine)),
            "paired_baseline_seconds_per_call": float(np.median(eager)),
            "block_calls": processes[0]["block_calls"],
            "baseline_block_calls": processes[0]["baseline_block_calls"],
            "block_seconds": processes[0]["block_seconds"], "confidence": CONFIDENCE}


class ReplayClock:
    """pytest-benchmark's clock for the suite (its public --benchmark-timer option, set in
    pyproject.toml's addopts to bench.measure.timing.replay_clock): perf_counter, except inside
    record(), where it replays durations measured in the worker processes. Read twice per round
    (start, end), it advances by the next duration between the two reads."""

    __name__ = "replay_clock"

    def __init__(self):
        self.durations = None

    def __call__(self):
        if self.durations is None:
            return time.perf_counter()
        if self.reads % 2:
            self.now += self.durations[self.reads // 2]
        self.reads += 1
        return self.now

    @contextlib.contextmanager
    def replaying(self, durations):
        self.durations, self.now, self.reads = list(durations), 0.0, 0
        try:
            yield
        finally:
            self.durations = None


replay_clock = ReplayClock()
REPLAY_TIMER = f"{__name__}.replay_clock"  # what --benchmark-timer must name


def record(benchmark, durations):
    """Give pytest-benchmark `durations` (seconds, one per call, measured in worker processes) as
    its rounds: its statistics, its saved runs and its own compare then hold them."""
    with replay_clock.replaying(durations):
        benchmark.pedantic(lambda: None, rounds=len(durations), iterations=1, warmup_rounds=0)


def settle_heap():
    """Collect, then freeze what is on the heap out of the garbage collector; call before timing.

    Objects earlier benchmarks left (traced graphs, sessions, compiled code) would make every
    collection during the timed rounds walk them too, slowing whichever backend allocates the
    most Python objects per call (eager) by what ran before it. What the timed calls allocate
    is still collected as usual."""
    gc.collect()
    gc.freeze()
