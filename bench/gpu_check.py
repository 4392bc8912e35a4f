"""GPU evidence for the report: why the timed callable must wait for the device, and that
Inductor generated Triton kernels for the compiled step.

    python -m bench.gpu_check --out results/gpu

Writes gpu_check.json: the same eager CUDA training step timed with and without
torch.cuda.synchronize(), and the number of kernels Inductor generated for the step.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import model
from bench import backends, harness


def per_step_ms(step, rounds, synchronize):
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        step()
        if synchronize:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    torch.cuda.synchronize()  # never leave work queued behind the next measurement
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/gpu",
                        help="folder for gpu_check.json (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.rounds < 1:
        parser.error("--batch-size and --rounds must be positive integers")
    if not torch.cuda.is_available():
        print("gpu_check: CUDA is not available; nothing to check", file=sys.stderr)
        return 2
    state = model.make_net().state_dict()
    x, target = model.make_batch(args.batch_size, device="cuda")
    result = {"device": torch.cuda.get_device_name(), "batch_size": args.batch_size}

    eager = backends.create("eager", state, device="cuda")
    step = lambda: eager.train_step(x, target)  # noqa: E731
    for _ in range(10):
        step()
    torch.cuda.synchronize()
    result["eager_train_ms_synchronized"] = per_step_ms(step, args.rounds, synchronize=True)
    result["eager_train_ms_unsynchronized"] = per_step_ms(step, args.rounds, synchronize=False)

    from torch._inductor import metrics

    metrics.reset()
    compiled = backends.create("compile", state, device="cuda")
    compiled.train_step(x, target)
    torch.cuda.synchronize()
    result["compile_generated_kernels"] = metrics.generated_kernel_count
    result["compile_backend"] = "triton" if metrics.generated_kernel_count else "none generated"

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    harness.write_text_atomic(str(out / "gpu_check.json"), json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
