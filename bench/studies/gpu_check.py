"""GPU evidence for the report: why the timed callable must wait for the device, and how many
kernels Inductor generated for a compiled step.

    python -m bench.gpu_check --out results/gpu [--backend compile-step-im2col-cudagraphs]

Writes gpu_check.json: the same eager CUDA training step timed with and without
torch.cuda.synchronize() (unsynchronized, a step only queues work: the figure is the launch
cost, not the step), then the number of kernels Inductor generated for `--backend`'s training
step (Triton kernels on CUDA). The file is rewritten after each part, so a part that fails or
is interrupted leaves the earlier ones. Errors are one line on stderr: exit 2 for a bad command
line or no CUDA, 1 for a failed part.
"""

import json
import statistics
import sys
from pathlib import Path

import torch

import model
from bench import backends, cli, files
from bench.backends import EAGER
from bench.measure import timing


def per_step_ms(step, rounds, synchronize):
    """The median milliseconds of `rounds` calls of `step`, each timed on its own, with or without
    waiting for the device inside the timed call."""
    times = timing.timed_calls(timing.synchronized(step, "cuda") if synchronize else step, rounds)
    backends.synchronize("cuda")  # never leave work queued behind the next measurement
    return statistics.median(times) * 1e3


def eager_timing(state, x, target, rounds):
    eager = backends.create(EAGER, state, device="cuda")
    step = timing.warm(lambda: eager.train_step(x, target), calls=10)
    backends.synchronize("cuda")
    return {"eager_train_ms_synchronized": per_step_ms(step, rounds, synchronize=True),
            "eager_train_ms_unsynchronized": per_step_ms(step, rounds, synchronize=False)}


def kernel_count(name, state, x, target):
    from torch._inductor import metrics

    metrics.reset()
    # A compilation loaded from Inductor's caches generates nothing and would count 0.
    with torch._inductor.config.patch(force_disable_caches=True):
        runner = backends.create(name, state, device="cuda")
        runner.train_step(x, target)
    backends.synchronize("cuda")
    count = metrics.generated_kernel_count
    return {"kernel_count_backend": name, "generated_kernels": count,
            "kernels": "triton" if count else "none generated"}


def main(argv=None):
    parser = cli.Parser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=cli.output_folder, default="results/gpu",
                        help="folder for gpu_check.json (default: %(default)s)")
    parser.add_argument("--batch-size", type=cli.positive, default=256)
    parser.add_argument("--rounds", type=cli.positive, default=200)
    parser.add_argument("--backend", default="compile-step-im2col-cudagraphs",
                        help="the compiled backend whose training step's kernels are counted "
                             "(default: %(default)s)")
    try:
        args = parser.parse_args(argv)
        backends.check_choice("backend", args.backend, backends.CONFIGS)
    except (cli.UsageError, ValueError) as error:
        print(f"{cli.prog('python -m bench.gpu_check')}: error: {error}", file=sys.stderr)
        return 2
    reason = backends.unavailable(args.backend, "cuda")
    if reason:
        print(f"{cli.prog('python -m bench.gpu_check')}: error: cannot run on CUDA: {reason}",
              file=sys.stderr)
        return 2
    path = Path(args.out) / "gpu_check.json"
    state = model.make_net().state_dict()
    x, target = model.make_batch(args.batch_size, device="cuda")
    result = {"device": torch.cuda.get_device_name(), "capability": list(torch.cuda.get_device_capability()),
              "torch": torch.__version__, "batch_size": args.batch_size, "rounds": args.rounds}
    parts = [("eager timing", lambda: eager_timing(state, x, target, args.rounds)),
             (f"{args.backend} kernel count", lambda: kernel_count(args.backend, state, x, target))]
    status = 0
    for part, run in parts:
        try:
            result.update(run())
        except Exception as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            result[f"{part} error"] = f"{type(error).__name__}: {first}"
            print(f"{cli.prog('python -m bench.gpu_check')}: error: {part} failed: "
                  f"{type(error).__name__}: {first}", file=sys.stderr)
            status = 1
        Path(args.out).mkdir(parents=True, exist_ok=True)
        files.write_text_atomic(str(path), json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return status


if __name__ == "__main__":
    sys.exit(main())
