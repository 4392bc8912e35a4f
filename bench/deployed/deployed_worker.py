"""One worker process of the deployed-inference measurement (bench/deployed/__main__.py starts them):

    python -m bench.deployed.deployed_worker --artifacts DIR --config NAME --threads N [--calls N]
        [--seconds S] [--batches 64,256] [--agreement] --result FILE

In order, in this fresh process: the cold start (the configuration's artifact on disk to its first
answer: load, then the first call at batch 1; the runtime's import timed apart), memory held over
it, a warm second load (load + first call again); then eager's reference row loaded from its own
artifact, and
- batch-1 single-stream latency: --calls single calls of the configuration, each timed on its own
  (p50, p90, p99), then its calls alternating with eager's in blocks (E B | B E ...), each pair of
  neighbouring blocks giving one ratio of their median call times: the p50 paired against eager;
- offline throughput at each of --batches: blocks alternating with eager's the same way, one ratio
  of mean call times per pair, samples/s from the configuration's blocks;
- the peak memory of one call at each batch size;
- with --agreement: its outputs at batch 1 and every --batches size against float64 eager on the
  same weights, by the suite's criterion (bench/measure/agreement.py).
Every call cycles through a pool of pre-generated batches (model.make_batch_pool).
"""

import argparse
import importlib
import itertools
import os
import sys
import time

T_START = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402

import model  # noqa: E402
from bench import deployed  # noqa: E402
from bench.deployed import inference_mode  # noqa: E402
from bench.launch import process  # noqa: E402
from bench.measure import agreement, memory, noise, timing  # noqa: E402

PERCENTILES = (50, 90, 99)
# Imported inside the cold start, timed apart.
IMPORTS = {"onnxruntime": "onnxruntime", "openvino": "openvino", "executorch": "executorch.runtime"}


def cycling(call, batch_size):
    """A no-argument callable calling `call` on the next batch of a pool, and the pool's inputs."""
    xs = [x for x, _ in model.make_batch_pool(batch_size)]
    batches = itertools.cycle(xs)
    return (lambda: call(next(batches))), xs


def timed_load(config, path, threads, mode="latency"):
    """(call, load seconds, first-call seconds) for one load of the artifact."""
    x, _ = model.make_batch(1, seed=1)
    start = time.perf_counter()
    call = deployed.load_artifact(config, path, threads, mode)
    loaded = time.perf_counter()
    call(x)
    return call, loaded - start, time.perf_counter() - loaded


def paired(call, baseline, seconds, statistic):
    """Blocks of `call` alternating with blocks of `baseline` for about `seconds` (both warm); one
    ratio per pair, baseline's `statistic` of its per-call times over call's. Returns the ratios and
    each side's per-call times."""
    block_seconds = min(timing.BLOCK_SECONDS, seconds / (2 * timing.MIN_PAIRS))
    per_call, per_base = timing.seconds_per_call(call), timing.seconds_per_call(baseline)
    k_call = timing.calls_per_block(per_call, block_seconds)
    k_base = timing.calls_per_block(per_base, block_seconds)
    pairs = max(timing.MIN_PAIRS, round(seconds / (k_call * per_call + k_base * per_base)))
    pairs += pairs % 2  # whole E B | B E cycles
    blocks = timing.alternating_blocks(
        {"baseline": baseline, "call": call}, {"baseline": k_base, "call": k_call}, pairs
    )
    ratios = [statistic(base) / statistic(mine) for base, mine in zip(blocks["baseline"], blocks["call"])]
    return {
        "ratios": ratios,
        "call_blocks": [statistic(b) for b in blocks["call"]],
        "baseline_blocks": [statistic(b) for b in blocks["baseline"]],
        "block_calls": k_call,
        "baseline_block_calls": k_base,
    }


def judge_outputs(call, weights, batch_sizes, seed=0):
    """{batch: row}: the configuration's output on a fixed batch against float64 eager on the same
    weights, judged as agreement.judge_quantity judges every output, the two float32 yardsticks
    being eager float32 and eager float32 with the hidden units and the batch reversed."""
    reference = inference_mode.load_net(weights, torch.float64)
    fp32 = inference_mode.load_net(weights)
    reordered = model.Net()
    reordered.load_state_dict(agreement.reverse_hidden_units(fp32.state_dict()))
    reordered.eval()
    rows = {}
    for batch in batch_sizes:
        x, _ = model.make_batch(batch, seed=seed * agreement.SEED_STRIDE)
        with torch.inference_mode():
            ref = reference(x.double())
            yardsticks = [fp32(x).double(), reordered(x.flip(0)).flip(0).double()]
        mine = torch.as_tensor(call(x)).detach().to(torch.float64)
        row = agreement.judge_quantity("output", batch, mine, ref, yardsticks)
        rows[batch] = {
            "status": "pass" if row.passed else "FAIL",
            "note": row.note,
            "max_abs": row.max_abs,
            "rmse_ratio": row.rmse_ratio,
            "max_ratio": row.max_ratio,
        }
    return rows


def work(args):
    torch.set_num_threads(args.threads)  # OMP_NUM_THREADS (bench/launch/process.py) already sized the pool
    config, threads = args.config, args.threads
    path = deployed.artifact_path(args.artifacts, config, threads)
    weights = deployed.artifact_path(args.artifacts, deployed.EAGER, threads)
    result = {
        "config": config,
        "threads": threads,
        "artifact": os.path.basename(path),
        "artifact_bytes": os.path.getsize(path) if os.path.isfile(path) else None,
        "settings": deployed.runtime(config).SETTINGS,
        "pid": os.getpid(),
        "seconds_to_torch_imported": time.perf_counter() - T_START,
        "load_average": noise.load_average(),
    }
    monitor = noise.Monitor().start()
    held_before = memory.resident_bytes()
    start = time.perf_counter()
    if config in IMPORTS:
        importlib.import_module(IMPORTS[config])
    result["cold_import_s"] = time.perf_counter() - start
    call, load_s, first_s = timed_load(config, path, threads)
    held_after = memory.resident_bytes()
    result.update(
        cold_load_s=load_s,
        cold_first_call_s=first_s,
        cold_start_s=load_s + first_s,
        memory_held_bytes=None if None in (held_before, held_after) else held_after - held_before,
    )
    _, load_s, first_s = timed_load(config, path, threads)
    result.update(warm_load_s=load_s, warm_first_call_s=first_s, warm_start_s=load_s + first_s)

    reference = deployed.load_artifact(deployed.EAGER, weights, threads)
    throughput = (
        deployed.load_artifact(config, path, threads, "throughput")
        if getattr(deployed.runtime(config), "SEPARATE_THROUGHPUT", False)
        else call
    )
    timing.settle_heap()
    one, _ = cycling(call, 1)
    eager_one, _ = cycling(reference, 1)
    timing.warm(one, 20)
    timing.warm(eager_one, 20)
    times = timing.timed_calls(one, args.calls)
    result["latency_s"] = {f"p{q}": float(np.percentile(times, q)) for q in PERCENTILES}
    result["latency_calls"] = len(times)
    result["latency_paired"] = paired(one, eager_one, args.seconds, np.median)
    result["peak_bytes"] = {"1": memory.peak_over_call(one)["memory_peak_bytes"]}
    result["throughput"] = {}
    for batch in args.batches:
        big, _ = cycling(throughput, batch)
        eager_big, _ = cycling(reference, batch)
        timing.warm(big)
        timing.warm(eager_big)
        data = paired(big, eager_big, args.seconds, np.mean)
        data["samples_per_s"] = batch / float(np.median(data["call_blocks"]))
        data["eager_samples_per_s"] = batch / float(np.median(data["baseline_blocks"]))
        result["throughput"][str(batch)] = data
        result["peak_bytes"][str(batch)] = memory.peak_over_call(big)["memory_peak_bytes"]
    if args.agreement:
        judged = judge_outputs(call, weights, [1])
        judged.update(judge_outputs(throughput, weights, args.batches))
        result["agreement"] = {str(b): row for b, row in judged.items()}
    result.update(monitor.stop())
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bench.deployed.deployed_worker")
    parser.add_argument("--artifacts", required=True)
    parser.add_argument("--config", required=True, choices=list(deployed.CONFIGS))
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=0.6)
    parser.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",") if b], default=[64, 256])
    parser.add_argument("--agreement", action="store_true")
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    return process.child("bench.deployed.deployed_worker", lambda: work(args), args.result)


if __name__ == "__main__":
    sys.exit(main())
