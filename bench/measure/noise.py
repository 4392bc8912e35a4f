"""What the machine was doing while a benchmark ran: other processes' CPU time, steal, the clock.

Linux only (/proc); elsewhere every figure is None. Jiffies tick at 100 Hz, so over a two-second
benchmark on two CPUs one tick is 0.25% of the machine.

Noise that no counter here sees (a neighbour's memory traffic on the same host, cache
contention, a throttled clock the VM does not report) still moves timings, with steal near zero.
A clean mark means no visible noise, not a quiet machine.
"""

import os
import time

# A cell is marked noisy when other processes used more than this share of the machine's CPU
# time, or the hypervisor stole more than this, while it ran.
NOISY_SHARE = 0.05
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _system_jiffies():
    """(busy, steal, total) jiffies of all CPUs since boot, from the first line of /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + idle + iowait + steal


def _own_jiffies():
    """This process's CPU time (all its threads) in jiffies."""
    times = os.times()
    return (times.user + times.system) * CLOCK_TICKS


def _clock_mhz():
    """The CPUs' current clocks as /proc/cpuinfo reports them (static on many VMs)."""
    try:
        with open("/proc/cpuinfo") as f:
            values = [float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")]
        return values or None
    except (OSError, ValueError):
        return None


class Monitor:
    """Samples the counters at start() and stop(); stop() returns the shares over the interval."""

    def start(self):
        try:
            self._system = _system_jiffies()
        except (OSError, ValueError):
            self._system = None
        self._own, self._wall, self._clock = _own_jiffies(), time.perf_counter(), _clock_mhz()
        return self

    def stop(self):
        clock = _clock_mhz()
        result = {"noise_others_cpu": None, "noise_steal": None,
                  "noise_seconds": time.perf_counter() - self._wall,
                  "cpu_mhz_min": min(self._clock + clock) if self._clock and clock else None,
                  "cpu_mhz_max": max(self._clock + clock) if self._clock and clock else None}
        if self._system is None:
            return result
        busy, steal, total = (b - a for a, b in zip(self._system, _system_jiffies()))
        if total > 0:
            others = max(0.0, busy - (_own_jiffies() - self._own))
            result["noise_others_cpu"] = others / total
            result["noise_steal"] = steal / total
        return result


def load_average():
    """The machine's 1-minute load average: how many processes were running or waiting for a CPU."""
    return os.getloadavg()[0]


def is_noisy(info):
    """True when a benchmark's recorded noise crosses NOISY_SHARE; None when it was not recorded."""
    shares = [info.get("noise_others_cpu"), info.get("noise_steal")]
    if all(share is None for share in shares):
        return None
    return any(share is not None and share > NOISY_SHARE for share in shares)
