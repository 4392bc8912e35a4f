"""One worker process of a timed run (started by bench/launch/process.py; the pytest session collects).

    python -m bench.launch.worker --threads 1 --device cpu --batch-size 1 \
        --backends eager,compile-step-im2col --modes train,forward --seconds 0.7 --result FILE
    python -m bench.launch.worker --threads 1 --device cpu --sgemm 1024 --seconds 0.5 --result FILE

The worker runs at one thread count (its OpenMP pool, and ONNX Runtime's sessions made after it)
and holds eager and the given backends at one device and batch size. It creates their runners,
checks them all against float64 in lockstep (bench/measure/agreement.py, on these very runners), warms
them up, then times each backend paired with eager (bench/measure/timing.py), eager itself against a
second, independent eager runner (its own weights, its own place in the batch pool): the A/A.
It writes data, not verdicts: every block time, the per-call times of the timed side, first-call
and setup times, memory, noise and agreement, as JSON to --result.
"""

import argparse
import sys

import torch

import model
from bench import backends, cli, session
from bench.backends import EAGER
from bench.launch import process
from bench.measure import memory, noise, timing
from bench.measure.timing import warm
from bench.session import AGREEMENT_SEED, FirstCalls, RunnerCache, one_call

TWIN_OFFSET = 0.5  # the A/A's second eager runner starts half the batch pool away


def second_eager(device):
    """The A/A's other side: an eager runner of its own, from its own copy of the start weights."""
    return backends.create(EAGER, model.make_net(seed=AGREEMENT_SEED).state_dict(), device=device)


def measure_cells(names, modes, device, batch_size, seconds, progress):
    held = list(dict.fromkeys([EAGER, *names]))
    cache = RunnerCache(check_agreement=True, selected=held, progress=progress)
    prepared = {name: cache.get(name, device, batch_size) for name in held}
    pool = cache.pool(device, batch_size)
    twin = second_eager(device)
    out = {name: {"setup_seconds": one.setup_seconds, "agreement": one.agreement,
                  "info": getattr(one.runner, "info", {}), "modes": {}} for name, one in prepared.items()}
    for mode in modes:
        eager = one_call(prepared[EAGER].runner, mode, pool, device)
        warm(eager)
        twin_call = one_call(twin, mode, pool, device, start=int(len(pool) * TWIN_OFFSET))
        warm(twin_call)
        for name in names:
            warm(one_call(FirstCalls(prepared[name]), mode, pool, device))
            call = one_call(prepared[name].runner, mode, pool, device)
            baseline = twin_call if name == EAGER else eager
            timing.settle_heap()
            # What the warm-up compiled is what is timed: a torch.compile recompilation in the rounds
            # (a guard that fails on a round's batch or state) raises instead of being timed.
            with torch.compiler.set_stance("fail_on_recompile"):
                monitor = noise.Monitor().start()
                blocks = timing.paired_blocks(call, baseline, seconds)
                measured = {**blocks, **monitor.stop(), **memory.peak_over_call(call, device)}
                measured["finite"] = bool(torch.isfinite(call()).all())
            progress(f"{name} {mode}: {len(blocks['call_blocks'])} pairs")
            out[name]["modes"][mode] = measured
    for name, one in prepared.items():  # after every first call
        out[name].update(first_call_seconds=one.first_call_seconds, first_call_cache=one.first_call_cache,
                         held_bytes=one.held_bytes)
    return out


def measure_sgemm(size, device, seconds):
    """Per-call times of one size x size float32 matrix multiply, for `seconds`."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    call = timing.synchronized(lambda: torch.mm(a, b), device)
    warm(call)
    return {"call_times": timing.timed_for(call, seconds, min_calls=timing.MIN_PAIRS)}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.launch.worker",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=cli.positive, required=True)
    parser.add_argument("--device", default="cpu", choices=backends.DEVICES)
    parser.add_argument("--batch-size", type=cli.positive, default=1)
    parser.add_argument("--backends", default=EAGER, help="comma-separated; eager is always held")
    parser.add_argument("--modes", default=",".join(session.MODES))
    parser.add_argument("--sgemm", type=cli.positive, default=None,
                        help="time an sgemm of this size instead")
    parser.add_argument("--seconds", type=float, default=timing.PAIRED_SECONDS,
                        help="paired seconds per cell")
    parser.add_argument("--result", required=True, help="where the JSON results go")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)  # OMP_NUM_THREADS (bench/launch/process.py) already sized the pool

    def progress(text):
        print(f"threads {args.threads} {args.device} batch {args.batch_size}: {text}", file=sys.stderr,
              flush=True)

    def work():
        data = {"threads": torch.get_num_threads(), "device": args.device}
        if args.sgemm:
            data["sgemm"] = measure_sgemm(args.sgemm, args.device, args.seconds)
        else:
            names = cli.parse_list(args.backends, "backend", backends.CONFIGS)
            modes = cli.parse_list(args.modes, "mode", session.MODES)
            cells = measure_cells(names, modes, args.device, args.batch_size, args.seconds, progress)
            data.update(batch_size=args.batch_size, cells=cells)
        return data

    return process.child("bench.launch.worker", work, args.result)


if __name__ == "__main__":
    sys.exit(main())
