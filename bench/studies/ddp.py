"""Data-parallel training step: the Net under DistributedDataParallel, launched by torchrun.

Every rank trains on its 1/world share of the same global batch; DDP all-reduces the gradients
(mean over ranks) during backward, so the step equals one step on the whole batch (the MSE loss
is a mean, and every shard has the same size). Configurations:

  ddp-eager    the tutorial's loop, the Net wrapped in DDP
  ddp-compile  torch.compile (Inductor, default mode) of the DDP-wrapped Net: its forward and the
               AOTAutograd backward of that forward are compiled; Dynamo's DDPOptimizer splits the
               graph at DDP's bucket boundaries so the all-reduce of one bucket can overlap the
               backward of the next (this Net's 0.25 MB of gradients fit one bucket: one graph).
               The MSE loss, the autograd engine and SGD.step() stay eager. It is NOT the
               compile-step's functional whole-step graph: that one takes gradients with torch.func,
               which bypasses DDP's autograd hooks, so no all-reduce would ever run.

Two ways to run it:
  python -m bench.ddp [--world-sizes 1,2] [--batch-size 64] [--backends ddp-eager,ddp-compile]
      starts torchrun once per world size on 127.0.0.1 (one thread per rank), checks agreement,
      times the step, and saves one pytest-benchmark JSON run under results/ddp/ plus
      results/DDP.md.
  torchrun [--nnodes N --node-rank R --rdzv-backend c10d --rdzv-endpoint HOST:PORT]
           --nproc-per-node P -m bench.ddp [options]
      is one world (any number of machines): rank 0 saves its own run under results/ddp/.

This module is the command: its options, one torchrun launch per world size
(bench/launch/torchrun.py), the saved run (bench/runs/store.py) and DDP.md (ddp_report.py). A rank's
work, the DDP runner and its timed rounds, is ddp_rank.py.
"""

import os
import sys

import torch
import torch.distributed as dist

from bench import backends, cli
from bench.cli import Parser, UsageError, positive
from bench.launch import process, torchrun
from bench.runs import store
from bench.studies.ddp_rank import DDP_CONFIGS, RankFailed, run_rank
from bench.studies.ddp_report import write_report

PREFIX = "bench.ddp: "  # how this command's one-line errors begin, on every rank too


def launcher(args):
    if args.device == "cuda" and max(args.world_sizes) > torch.cuda.device_count():
        raise UsageError(
            f"--world-sizes {max(args.world_sizes)} needs as many GPUs, found {torch.cuda.device_count()}"
        )
    if args.port and torchrun.port_in_use(args.port):
        raise UsageError(f"--port {args.port}: 127.0.0.1:{args.port} is already in use")
    benchmarks, failed = [], []
    for world in args.world_sizes:
        status, error, part = torchrun.launch("bench.studies.ddp", rank_arguments(args), world, args.threads,
                                              PREFIX, port=args.port)
        if error:
            failed.append(error)
        if part is not None:
            benchmarks += part["benchmarks"]
        if status and part is None:
            break  # it did not finish: a fault, not a verdict; do not go on to the next world size
    if benchmarks:
        path = store.save_run(os.path.join(args.out, "ddp"), benchmarks)
        write_report(os.path.join(args.out, "DDP.md"), path, benchmarks)
        print(f"saved {path} and {os.path.join(args.out, 'DDP.md')}")
    if failed:
        print(PREFIX + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


def rank_arguments(args):
    """The options every rank of one launch gets (the launcher adds --result)."""
    return (["--batch-size", args.batch_size, "--backends", ",".join(args.backends), "--device", args.device,
             "--dist-backend", args.dist_backend, "--threads", args.threads, "--steps", args.steps,
             "--seconds", args.seconds, "--timeout", args.timeout]
            + (["--check-only"] if args.check_only else [])
            + (["--fault", args.fault] if args.fault else []))


def rank_main(args):
    """One rank under torchrun; returns the exit status. Rank 0 hands its results to the launcher
    (--result), or, started by torchrun directly, saves its own run."""
    part = run_rank(args)
    if int(os.environ["RANK"]) == 0:
        if args.result:  # the launcher merges the world sizes into one run
            process.write_result(args.result, part)
        elif part["benchmarks"]:
            print(f"saved {store.save_run(os.path.join(args.out, 'ddp'), part['benchmarks'])}")
    if part["failed"]:
        if int(os.environ["RANK"]) == 0:  # every rank reached the same verdict; one says so
            print(PREFIX + "; ".join(part["failed"]), file=sys.stderr)
        return 1
    return 0


def parse(argv, under_torchrun=False):
    p = Parser(prog="python -m bench.ddp", description=__doc__.split("\n\n")[0])
    p.add_argument("--world-sizes", type=cli.positive_list, default=[1, 2], help="launcher only")
    p.add_argument(
        "--batch-size", type=positive, default=64, help="global batch, split evenly over the ranks"
    )
    p.add_argument("--backends", default="ddp-eager,ddp-compile", help=", ".join(DDP_CONFIGS))
    p.add_argument("--device", choices=backends.DEVICES, default="cpu")
    p.add_argument("--dist-backend", choices=["gloo", "nccl"], help="default: gloo on cpu, nccl on cuda")
    p.add_argument("--threads", type=positive, default=1, help="torch threads per rank")
    p.add_argument("--steps", type=positive, default=agreement_steps(), help="agreement steps")
    p.add_argument("--seconds", type=float, default=2.0, help="timed rounds per configuration, about")
    p.add_argument("--timeout", type=positive, default=60, help="process-group timeout, seconds")
    p.add_argument(
        "--port", type=positive, help="rendezvous port on 127.0.0.1 (launcher; default: a free one)"
    )
    p.add_argument("--out", type=cli.output_folder, default="results")
    p.add_argument("--check-only", action="store_true", help="agreement only, no timing")
    p.add_argument("--fault", choices=["perturb", "sum", "raise", "die"], help="inject a bug (for the tests)")
    p.add_argument("--result", help="internal: where rank 0 writes its results for the launcher")
    args = p.parse_args(argv)
    try:
        args.backends = cli.parse_list(args.backends, "backend", DDP_CONFIGS)
    except ValueError as error:
        raise UsageError(f"--backends: {error}") from None
    args.dist_backend = args.dist_backend or ("nccl" if args.device == "cuda" else "gloo")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device cuda: {backends.device_unavailable('cuda')}")
    if args.dist_backend == "nccl":
        if args.device != "cuda":
            raise UsageError(
                "--dist-backend nccl needs --device cuda (NCCL runs on GPUs only; use gloo on cpu)"
            )
        if not dist.is_nccl_available():
            raise UsageError("--dist-backend nccl: this torch build has no NCCL")
    if not dist.is_available() or (args.dist_backend == "gloo" and not dist.is_gloo_available()):
        raise UsageError(
            f"--dist-backend {args.dist_backend}: this torch build has no {args.dist_backend} backend"
        )
    if not args.seconds > 0:
        raise UsageError(f"--seconds: expected a positive number, got {args.seconds}")
    for world in [] if under_torchrun else args.world_sizes:  # a rank checks its own world size
        if args.batch_size % world:
            raise UsageError(f"--batch-size {args.batch_size} does not split evenly over world size {world}")
    return args


def agreement_steps():
    from bench.measure import agreement

    return agreement.DEFAULT_STEPS


def exit_rank(status):
    """End a rank without finalizing the interpreter. DDP keeps the gloo process group, and so its
    worker threads, alive after destroy_process_group (torch 2.13). A worker thread that lets go of
    the last collective's tensors takes the GIL to do it; if that lands while the interpreter
    finalizes, the thread is unwound inside a destructor: std::terminate, SIGABRT ("terminate called
    without an active exception", exit -6), and torchrun stops the other ranks with SIGTERM (-15).
    Everything a rank leaves behind is written by now; only the output buffers need flushing."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main(argv=None):
    under_torchrun = "TORCHELASTIC_RUN_ID" in os.environ and "RANK" in os.environ
    try:
        args = parse(sys.argv[1:] if argv is None else argv, under_torchrun)
        status = rank_main(args) if under_torchrun else launcher(args)
    except UsageError as error:
        print(f"{PREFIX}{error}", file=sys.stderr)
        status = 2
    except (Exception, RankFailed) as error:  # one line per rank, no traceback; torchrun stops the others
        rank = f"rank {os.environ['RANK']}: " if under_torchrun else ""
        name = "" if isinstance(error, RankFailed) else f"{type(error).__name__}: "
        print(f"{PREFIX}{rank}{name}{error}", file=sys.stderr, flush=True)
        status = 1
    if under_torchrun and argv is None:  # a rank's process ends here (see exit_rank)
        exit_rank(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
