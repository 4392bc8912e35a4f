"""One worker process of a timed run (started by bench/launch/process.py; the pytest session collects).

    python -m bench.launch.worker --threads 1 --device cpu --batch-size 1 \
        --backends eager,compile-step-im2col --modes train,forward --seconds 0.7 --result FILE
    python -m bench.launch.worker --threads 1 --device cpu --sgemm 1024 --seconds 0.5 --result FILE

The worker runs at one thread count (its OpenMP pool, and ONNX Runtime's sessions made after it)
and holds eager and the given backends at one device and batch size. It creates their runners,
checks them all against float64 in lockstep (bench/measure/agreement.py, on these very runners), warms
them up, then times each backend paired with eager (bench/measure/timing.py), eager itself against a
second, independent eager runner (its own weights, its own place in the batch pool): the A/A.
It writes data, not verdicts: a bench/record.py WorkerRecord (every block time, the per-call times
of the timed side, first-call and setup times, memory, noise, agreement, and how long each phase
of the worker took), as JSON to --result. Its progress lines go to stderr as they happen.
"""

import time

STARTED = time.perf_counter()  # before torch's import: the phases below include it

import argparse  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402

import model  # noqa: E402
from bench import backends, cli, record, session  # noqa: E402
from bench.backends import EAGER  # noqa: E402
from bench.launch import process  # noqa: E402
from bench.measure import timing  # noqa: E402
from bench.measure.timing import warm  # noqa: E402
from bench.session import AGREEMENT_SEED, FirstCalls, RunnerCache, one_call  # noqa: E402

TWIN_OFFSET = 0.5  # the A/A's second eager runner starts half the batch pool away


def second_eager(device):
    """The A/A's other side: an eager runner of its own, from its own copy of the start weights."""
    return backends.create(EAGER, model.make_net(seed=AGREEMENT_SEED).state_dict(), device=device)


PHASES = ["start and imports", "create", "agreement", "warm-up", "timing", "memory"]


def measure_cells(names, modes, device, batch_size, seconds, progress, phases=None):
    """backend -> CellRecord for eager and `names`, adding each phase's seconds into `phases`."""
    phases = dict.fromkeys(PHASES, 0.0) if phases is None else phases
    held = list(dict.fromkeys([EAGER, *names]))
    cache = RunnerCache(check_agreement=True, selected=held, progress=progress)
    prepared = {name: cache.get(name, device, batch_size) for name in held}
    phases.update(cache.phase_seconds)
    pool = cache.pool(device, batch_size)
    twin = second_eager(device)
    timings = {name: {} for name in held}
    for mode in modes:
        start = time.perf_counter()
        eager = warm(one_call(prepared[EAGER].runner, mode, pool, device))
        twin_call = warm(one_call(twin, mode, pool, device, start=int(len(pool) * TWIN_OFFSET)))
        phases["warm-up"] += time.perf_counter() - start
        for name in names:
            timings[name][mode] = time_cell(prepared[name], eager if name != EAGER else twin_call,
                                            mode, pool, device, seconds, phases)
            pairs = len(timings[name][mode].call_blocks)
            progress(f"{device} batch {batch_size}: {name} {mode}: {pairs} pairs")
    return {name: record.CellRecord(
        setup_seconds=one.setup_seconds, agreement=one.agreement, info=getattr(one.runner, "info", {}),
        modes=timings[name], first_call_seconds=one.first_call_seconds,
        first_call_cache=one.first_call_cache, held_bytes=one.held_bytes)  # after every first call
        for name, one in prepared.items()}


def time_cell(prepared, baseline, mode, pool, device, seconds, phases):
    """One backend's ModeTiming, paired with `baseline` (eager, warm): its warm-up, then
    session.time_paired."""
    start = time.perf_counter()
    warm(one_call(FirstCalls(prepared), mode, pool, device))
    call = one_call(prepared.runner, mode, pool, device)
    phases["warm-up"] += time.perf_counter() - start
    return session.time_paired(call, baseline, device, seconds, phases)


def measure_sgemm(size, device, seconds):
    """Per-call times of one size x size float32 matrix multiply, for `seconds`."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    call = timing.synchronized(lambda: torch.mm(a, b), device)
    warm(call)
    return timing.timed_for(call, seconds, min_calls=timing.MIN_PAIRS)


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
        print(f"threads {args.threads} {text}", file=sys.stderr, flush=True)  # text names device and batch

    def work():
        data = record.WorkerRecord(threads=torch.get_num_threads(), device=args.device)
        phases = {**dict.fromkeys(PHASES, 0.0), "start and imports": time.perf_counter() - STARTED}
        if args.sgemm:
            start = time.perf_counter()
            data.sgemm_call_times = measure_sgemm(args.sgemm, args.device, args.seconds)
            phases["timing"] = time.perf_counter() - start
        else:
            names = cli.parse_list(args.backends, "backend", backends.CONFIGS)
            modes = cli.parse_list(args.modes, "mode", session.MODES)
            data.batch_size = args.batch_size
            data.cells = measure_cells(names, modes, args.device, args.batch_size, args.seconds, progress,
                                       phases)
        data.seconds = time.perf_counter() - STARTED
        data.phases = {k: round(v, 3) for k, v in phases.items()}
        return data.to_json()

    return process.child("bench.launch.worker", work, args.result)


if __name__ == "__main__":
    sys.exit(main())
