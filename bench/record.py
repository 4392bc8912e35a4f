"""What a worker process measured, as typed records: written by bench/launch/worker.py, read back
by the benchmark replay (bench/test_benchmarks.py), with a schema version so a reader knows what
it holds; and what a saved run holds per cell (RunRow), as bench/runs/load.py reads it back for
the reports and compare. Also the one rule for an agreement verdict: `failed` and `verified`.

A worker's JSON document is `WorkerRecord.to_json()`; `WorkerRecord.from_json` reads it and every
earlier shape (schema 1: the untyped dict of 40b1ffe and before, which had no "schema" key).
"""

import dataclasses
import math
from dataclasses import dataclass, field

SCHEMA = 2

PASS = "pass"
NOT_CHECKED = "not checked"


def failed(verdict):
    """Whether an agreement verdict says the backend computes something else than float64 eager
    ("FAIL", "FAIL: error", "FAIL: non-finite"); "skipped" and "not checked" are not failures."""
    return str(verdict).startswith("FAIL")


def verified(verdict):
    """Whether the verdict is a pass: the only one whose speedup a target or a verdict may use."""
    return verdict == PASS


@dataclass
class Agreement:
    """One runner's agreement check against float64 eager (bench/measure/agreement.py), as saved
    with its timings (the extra_info keys are the field names prefixed with `agreement_`)."""

    verdict: str = NOT_CHECKED
    max_abs_error: float | None = None
    worst_rmse_ratio: float | None = None
    worst_max_ratio: float | None = None
    steps: int | None = None
    batch_size: int | None = None

    @property
    def failed(self):
        return failed(self.verdict)

    def extra_info(self):
        """The benchmark's extra_info entries: `agreement` and `agreement_<field>`."""
        info = {"agreement": self.verdict}
        info.update({f"agreement_{k}": v for k, v in dataclasses.asdict(self).items() if k != "verdict"})
        return info

    @classmethod
    def from_extra_info(cls, info):
        return cls(verdict=info.get("agreement", NOT_CHECKED),
                   **{k: info.get(f"agreement_{k}") for k in ("max_abs_error", "worst_rmse_ratio",
                                                               "worst_max_ratio", "steps", "batch_size")})


@dataclass
class ModeTiming:
    """One backend's paired timing in one mode (train or forward), with what was read around it."""

    call_times: list  # seconds of every timed call of the backend: pytest-benchmark's rounds
    call_blocks: list  # seconds of each of the backend's blocks
    baseline_blocks: list  # seconds of each of eager's blocks (block i pairs with call_blocks[i])
    block_calls: int
    baseline_block_calls: int
    block_seconds: float
    finite: bool = True
    noise: dict = field(default_factory=dict)  # noise_* keys of bench/measure/noise.py
    memory: dict = field(default_factory=dict)  # memory_* keys of bench/measure/memory.py

    def blocks(self):
        """The paired blocks as bench/measure/timing.py's pair_ratios and summarize take them."""
        return {"call_times": self.call_times, "call_blocks": self.call_blocks,
                "baseline_blocks": self.baseline_blocks, "block_calls": self.block_calls,
                "baseline_block_calls": self.baseline_block_calls, "block_seconds": self.block_seconds}

    @classmethod
    def from_dict(cls, data):
        data = dict(data)
        extra = {k: data.pop(k) for k in list(data) if k.startswith(("noise_", "memory_"))}
        timing = cls(**{k: data.pop(k) for k in list(data) if k in cls.__dataclass_fields__})
        timing.noise.update({k: v for k, v in extra.items() if k.startswith("noise_")})
        timing.memory.update({k: v for k, v in extra.items() if k.startswith("memory_")})
        return timing


@dataclass
class CellRecord:
    """One backend in one worker: how its runner was made and checked, and its timings per mode."""

    setup_seconds: float | None
    agreement: Agreement
    info: dict  # the runner's own facts (compiled regions, graph breaks, ...): backend_* in extra_info
    modes: dict  # mode -> ModeTiming
    first_call_seconds: dict = field(default_factory=dict)  # mode -> seconds of its first call
    first_call_cache: dict = field(default_factory=dict)  # mode -> {"hits": n, "misses": n}
    held_bytes: float | None = None  # resident-set growth over creation and first calls

    @classmethod
    def from_dict(cls, data):
        agreement = data.get("agreement") or {}
        return cls(setup_seconds=data.get("setup_seconds"), agreement=Agreement.from_extra_info(agreement),
                   info=data.get("info") or {},
                   modes={mode: ModeTiming.from_dict(m) for mode, m in (data.get("modes") or {}).items()},
                   first_call_seconds=data.get("first_call_seconds") or {},
                   first_call_cache=data.get("first_call_cache") or {}, held_bytes=data.get("held_bytes"))


@dataclass
class WorkerRecord:
    """Everything one worker process returns: its cells, or an sgemm's call times."""

    threads: int
    device: str
    batch_size: int | None = None
    cells: dict = field(default_factory=dict)  # backend -> CellRecord
    sgemm_call_times: list | None = None
    seconds: float | None = None  # the worker's own wall time, start to result
    phases: dict = field(default_factory=dict)  # phase -> seconds: where the worker's time went
    schema: int = SCHEMA

    def to_json(self):
        data = dataclasses.asdict(self)
        for cell in data["cells"].values():  # the agreement as extra_info reads it
            cell["agreement"] = Agreement(**cell["agreement"]).extra_info()
        return data

    @classmethod
    def from_json(cls, data):
        """A worker's document of this schema or an earlier one."""
        if data.get("schema", 1) > SCHEMA:
            raise ValueError(f"worker record of schema {data['schema']}, newer than this code's {SCHEMA}")
        sgemm = data.get("sgemm_call_times")
        if sgemm is None and isinstance(data.get("sgemm"), dict):  # schema 1
            sgemm = data["sgemm"].get("call_times")
        return cls(threads=data["threads"], device=data["device"], batch_size=data.get("batch_size"),
                   cells={name: CellRecord.from_dict(cell)
                          for name, cell in (data.get("cells") or {}).items()},
                   sgemm_call_times=sgemm, seconds=data.get("seconds"), phases=data.get("phases") or {})


@dataclass
class RunRow:
    """One cell of a saved run (one pytest-benchmark entry and its extra_info, as
    bench/test_benchmarks.py wrote it), typed: what the reports and compare read. Fields a run of an
    older schema did not record are None (or empty)."""

    mode: str
    device: str
    batch: int
    backend: str
    threads: int
    flops: float
    median: float  # pytest-benchmark's median of the rounds, seconds
    iqr: float
    q1: float
    q3: float
    rounds: int | None
    name: str
    setup: float | None = None
    first_call: float | None = None
    first_call_cache: dict | None = None
    agreement: str | None = None  # the verdict; None in a run saved before the check
    max_error: float | None = None
    worst_rmse_ratio: float | None = None
    worst_max_ratio: float | None = None
    paired: tuple | None = None  # (median, low, high) of the paired speedup against eager
    noisy: bool = False
    others_cpu: float | None = None
    steal: float | None = None
    peak_bytes: float | None = None
    held_bytes: float | None = None
    options: dict = field(default_factory=dict)  # the runner's backend_* facts
    processes: int = 1
    process_speedups: list | None = None
    pair_ratios: list | None = None
    paired_time: float | None = None  # the backend's seconds per call inside the pairs
    time: float | None = None  # seconds per call, from the same pairing as `paired` (the loader sets it)

    @classmethod
    def from_benchmark(cls, bench, backend, threads, paired, noisy):
        """The row of one saved benchmark; `backend` its current name, `threads` with the run's
        default filled in, `paired` and `noisy` as the loader reads them. Raises KeyError, TypeError
        or ValueError on a malformed entry."""
        info, stats = bench["extra_info"], bench["stats"]
        median = float(stats["median"])
        if not median > 0:
            raise ValueError(f"non-positive median {median}")
        return cls(
            mode=info["mode"], device=str(info["device"]), batch=int(info["batch_size"]), backend=backend,
            threads=threads, flops=float(info["flops"]), median=median,
            iqr=float(stats.get("iqr", math.nan)), q1=float(stats.get("q1", median)),
            q3=float(stats.get("q3", median)), rounds=stats.get("rounds"), name=bench.get("name", "?"),
            setup=info.get("setup_seconds"), first_call=info.get("first_call_seconds"),
            first_call_cache=info.get("first_call_cache"), agreement=info.get("agreement"),
            max_error=info.get("agreement_max_abs_error"),
            worst_rmse_ratio=info.get("agreement_worst_rmse_ratio"),
            worst_max_ratio=info.get("agreement_worst_max_ratio"), paired=paired, noisy=noisy,
            others_cpu=info.get("noise_others_cpu"), steal=info.get("noise_steal"),
            peak_bytes=info.get("memory_peak_bytes"), held_bytes=info.get("held_bytes"),
            options={k: v for k, v in info.items() if k.startswith("backend_")},
            processes=info.get("processes", 1), process_speedups=info.get("process_speedups"),
            pair_ratios=info.get("pair_ratios"), paired_time=info.get("paired_seconds_per_call"))
