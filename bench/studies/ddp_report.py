"""bench.ddp's report: DDP.md, the data-parallel step's table from one saved run."""

import math
import os

import torch

from bench import files
from bench.measure import machine
from bench.reporting.format import ms


def write_report(path, run_path, benchmarks):
    """DDP.md at `path`: one row per configuration and world size of the run saved at `run_path`."""
    rows = {(b["extra_info"]["config"], b["extra_info"]["world_size"]): b for b in benchmarks}
    first = benchmarks[0]["extra_info"]
    link = os.path.relpath(run_path, os.path.dirname(os.path.abspath(path)))
    lines = [
        "# Data-parallel training step (DDP)",
        "",
        f"From [{os.path.basename(run_path)}]({link}): "
        f"`python -m bench.ddp` on {machine.cpu_model()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, {first['dist_backend']} on {first['device']}, "
        f"{first['threads']} thread(s) per rank, global batch {first['batch_size']} split evenly over "
        "the ranks. Step time is the median over rounds of the slowest rank's step (zero_grad, forward, "
        "loss, backward with the gradient all-reduce, SGD update).",
        "",
        "<!-- summary:start -->",
        "| config | world size | batch per rank | median step | samples/s | speedup vs world 1 "
        "| scaling efficiency | communication share (per rank) | agreement |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, world), b in sorted(rows.items()):
        info, median = b["extra_info"], b["stats"]["median"]
        base = rows.get((name, 1))
        speedup = base["stats"]["median"] / median if base else math.nan
        shares = ", ".join(f"{s:.0%}" for s in info["comm_share"])
        lines.append(
            f"| {name} | {world} | {info['per_rank_batch']} | {ms(median)} ms "
            f"| {info['batch_size'] / median:,.0f} | {speedup:.2f}x | {speedup / world:.0%} | {shares} "
            f"| {info['agreement']} |"
        )
    events = sorted({e for b in benchmarks for e in b["extra_info"]["comm_events"]})
    lines += [
        "<!-- summary:end -->",
        "",
        "- **Scaling efficiency** = throughput at world size N / (N x throughput at world size 1) = "
        "t(1) / (N x t(N)) for the same global batch (strong scaling); the speedup column is t(1) / t(N).",
        "- **Communication share**: torch.profiler over a few steps after the timed rounds; the union of the "
        "time intervals of every event whose name names a collective ("
        + ", ".join(f"`{e}`" for e in events)
        + "), on any thread, divided by the wall time of those steps. Gloo runs DDP's all-reduce on its own "
        "thread while backward goes on, so this is the time communication was in flight, overlapped or not, "
        "not the time the step waited for it. It includes the profiler's own overhead.",
        f"- **Agreement**: {first['agreement_steps']} steps on the global batch, every rank's parameters "
        "compared bit for bit after every step, and loss, gradients, parameters and output compared with "
        "eager float64 on the whole batch by bench/measure/agreement.py's criterion.",
        f"- {first['threads']} thread(s) per rank: world size 2 uses two cores, world size 1 one. Timings on "
        "a shared machine move between runs (results/calibration.md measures by how much for the main "
        "benchmarks): read one run's ratios as rough.",
    ]
    files.write_text_atomic(path, "\n".join(lines) + "\n")
