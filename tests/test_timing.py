"""Paired timing, machine noise and memory figures, on a simulated clock where timing matters:
no test here depends on how fast this machine happens to be."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from bench.measure import memory, noise, timing


class Clock:
    """A simulated machine: each call costs its work times the machine's slowness at that moment."""

    def __init__(self, slowness=lambda t: 1.0):
        self.now, self.slowness, self.log = 0.0, slowness, []

    def __call__(self):
        return self.now

    def work(self, name, seconds):
        def call():
            self.log.append(name)
            self.now += seconds * self.slowness(self.now)
        return call


@pytest.fixture
def clock(monkeypatch):
    simulated = Clock(slowness=lambda t: 1.0 + t / 2.0)  # the machine slows down 2x over two seconds
    monkeypatch.setattr(timing.time, "perf_counter", simulated)
    return simulated


def test_a_backend_slowed_by_10_percent_is_seen_through_a_drifting_machine(clock):
    eager, slowed = clock.work("eager", 1e-3), clock.work("backend", 1.1e-3)
    info = timing.summarize([timing.paired_blocks(slowed, eager, seconds=2.0)])
    assert info["speedup"] == pytest.approx(1 / 1.1, rel=0.01)
    assert info["speedup_high"] < 0.95  # the interval clears 1: slower, decided


def test_eager_against_itself_reads_one(clock):
    eager = clock.work("eager", 1e-3)
    info = timing.summarize([timing.paired_blocks(eager, eager, seconds=2.0)])
    assert info["speedup_low"] <= 1.0 <= info["speedup_high"]
    assert info["speedup"] == pytest.approx(1.0, rel=0.01)


def runs(log):
    """The call log as [name, count] runs of the same name."""
    merged = []
    for name in log:
        if merged and merged[-1][0] == name:
            merged[-1][1] += 1
        else:
            merged.append([name, 1])
    return merged


def test_blocks_alternate_in_order_e_b_b_e(clock, monkeypatch):
    eager, backend = clock.work("E", 1e-3), clock.work("B", 2e-3)
    monkeypatch.setattr(timing, "seconds_per_call", lambda call: 2e-3 if call is backend else 1e-3)
    blocks = timing.paired_blocks(backend, eager, seconds=1.0, block_seconds=0.01)
    info = timing.summarize([blocks])
    assert info["pairs"] == 50 and info["block_calls"] == 5 and info["baseline_block_calls"] == 10
    assert len(blocks["call_times"]) == 50 * 5 and blocks["call_times"][0] == pytest.approx(2e-3, rel=0.1)
    # E0 B0 | B1 E1 | E2 B2 | ... | B49 E49: neighbouring blocks of one side merge into runs of two
    body = runs(clock.log)
    assert [name for name, _ in body] == ["E", "B"] * 25 + ["E"]
    assert [count for name, count in body if name == "E"] == [10] + [20] * 24 + [10]
    assert [count for name, count in body if name == "B"] == [10] * 25


def test_a_block_holds_several_calls_at_every_batch_size(clock):
    slow_eager, slow_backend = clock.work("E", 0.2), clock.work("B", 0.3)  # batch 256: longer than a block
    info = timing.summarize([timing.paired_blocks(slow_backend, slow_eager, seconds=1.0)])
    assert info["block_calls"] == info["baseline_block_calls"] == timing.MIN_BLOCK_CALLS >= 3
    assert info["pairs"] >= timing.MIN_PAIRS


def test_the_process_interval_covers_a_per_process_offset():
    """Three processes read 2.0, 2.0 and 2.4, each tightly: the interval of the pairs pooled as one
    process is narrow and misses a fresh process's 2.4; the t interval over processes covers it."""
    rng = np.random.default_rng(0)
    processes = [level + 0.02 * rng.standard_normal(30) for level in (2.0, 2.0, 2.4)]
    pooled = timing.median_interval(np.concatenate(processes))
    median, low, high = timing.process_interval(processes)
    assert pooled[2] < 2.3  # within-process intervals do not cover the odd process
    assert low <= 2.0 and high >= 2.35 and low <= median <= high
    one = timing.process_interval(processes[:1])  # one process: the pairs' own bootstrap
    assert one[2] - one[1] < 0.05


def test_the_change_interval_holds_zero_for_the_same_processes_and_not_for_a_20_percent_slowdown():
    rng = np.random.default_rng(1)
    base = [level + 0.01 * rng.standard_normal(20) for level in (2.0, 2.04, 1.97, 2.02)]
    same = [group * 1.0 for group in base[::-1]]
    slower = [group / 1.2 for group in base]
    low, high = timing.change_interval(base, same)
    assert low < 0 < high
    low, high = timing.change_interval(base, slower)
    assert 0.1 < low < 0.2 < high < 0.3


def test_pytest_benchmark_records_the_replayed_call_times(tmp_path):
    """Through pytest-benchmark itself (its fixture, its --benchmark-timer option and its JSON), so
    that a release that reads its clock differently fails here, not silently in the results."""
    (tmp_path / "test_replay.py").write_text(
        "from bench.measure import timing\n"
        "def test_it(benchmark):\n"
        "    timing.record(benchmark, [1e-3, 2e-3, 5e-4])\n")
    out = tmp_path / "out.json"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path),
                             "--rootdir", str(tmp_path), f"--benchmark-timer={timing.REPLAY_TIMER}",
                             f"--benchmark-json={out}"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    [bench] = json.loads(out.read_text())["benchmarks"]
    assert bench["stats"]["data"] == pytest.approx([1e-3, 2e-3, 5e-4])
    assert timing.replay_clock.durations is None and timing.replay_clock() > 0  # perf_counter again


def test_median_interval_covers_the_median_and_narrows_with_more_pairs():
    rng = np.random.default_rng(1)
    few = timing.median_interval(2.0 + 0.1 * rng.standard_normal(10))
    many = timing.median_interval(2.0 + 0.1 * rng.standard_normal(400))
    for median, low, high in (few, many):
        assert low <= median <= high
    assert many[2] - many[1] < few[2] - few[1]
    assert all(np.isnan(timing.median_interval([])))  # no pairs, no figure


def test_noise_monitor_reads_shares_of_the_machine():
    monitor = noise.Monitor().start()
    sum(range(200_000))
    info = monitor.stop()
    for key in ("noise_others_cpu", "noise_steal"):
        assert info[key] is None or 0.0 <= info[key] <= 1.0
    assert noise.is_noisy({"noise_others_cpu": 0.2, "noise_steal": 0.0}) is True
    assert noise.is_noisy({"noise_others_cpu": 0.01, "noise_steal": 0.01}) is False
    assert noise.is_noisy({}) is None


def test_peak_memory_sees_an_allocation_inside_the_call():
    if memory.resident_bytes() is None:
        pytest.skip("no /proc/self/status here")
    size = 64 * 2**20

    def allocate():
        buffer = torch.ones(size // 4)  # written, so resident
        return buffer.sum()

    info = memory.peak_over_call(allocate)
    if info["memory_peak_bytes"] is None:
        pytest.skip("/proc/self/clear_refs is not writable here")
    assert info["memory_peak_bytes"] >= 0.9 * size
    assert memory.peak_over_call(lambda: None)["memory_peak_bytes"] < 0.5 * size


def test_pairing_stops_when_the_machine_slows_far_past_its_sizing(monkeypatch):
    """Sized on a quick machine (10 pairs of 50 ms blocks for 1 s), then 20x slower: the process
    stops at the first whole cycle past OVERRUN x its budget that has MIN_PAIRS pairs, instead of
    running all 10 pairs 20x as long."""
    simulated = Clock(slowness=lambda t: 1.0 if t < 0.05 else 20.0)
    monkeypatch.setattr(timing.time, "perf_counter", simulated)
    eager, backend = simulated.work("E", 1e-3), simulated.work("B", 1e-3)
    blocks = timing.paired_blocks(backend, eager, seconds=1.0)
    assert blocks["block_calls"] == blocks["baseline_block_calls"] == 50
    assert len(blocks["call_blocks"]) == len(blocks["baseline_blocks"]) == timing.MIN_PAIRS < 10


def test_timed_for_calls_until_its_seconds_and_its_minimum_have_passed(clock):
    times = timing.timed_for(clock.work("B", 0.01), seconds=0.05)
    assert len(times) >= 4 and sum(times) >= 0.05 and all(t >= 0.01 for t in times)
    assert len(timing.timed_for(clock.work("B", 0.01), seconds=0.0, min_calls=7)) == 7

