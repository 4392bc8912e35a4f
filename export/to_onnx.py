"""Export the Net to ONNX: `net.onnx` (inference) and `train_step.onnx` (one SGD step).

    python export/to_onnx.py [--out DIR] [--opset N] [--train-graph {unpool,portable}]
                             [--batch-size B] [--seed S] [--force]

--train-graph picks the training step's variant (export.train_graph.TRAIN_GRAPHS): "unpool"
(MaxUnpool and Col2Im, ONNX Runtime's CPU provider) or "portable" (ConvTranspose and an Equal
mask: ONNX Runtime's CUDA provider, OpenVINO and onnx's reference runtime implement every op).
Writes both files into --out (default: export/out under the repository root), after checking
each with the full ONNX checker and strict shape inference and running each in ONNX Runtime
against eager PyTorch from the same seeded parameters and batch. Prints one table row per
file: size, opset, node count, max abs difference (for the training step: over the loss and
every updated parameter). Exits 1 when a check fails or a difference exceeds 1e-5, writing
nothing then; exits 2 on bad arguments, with one line on stderr. Files are written to a
temporary file in the same folder and renamed into place, so an interrupted or failed
export never leaves a partial file behind.
"""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # runnable as `python export/to_onnx.py`
    sys.path.insert(0, str(REPO_ROOT))

from bench import cli  # noqa: E402  (after the path is set)
from bench.cli import Parser, UsageError  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "export" / "out"
INFERENCE_FILE, TRAIN_FILE = "net.onnx", "train_step.onnx"
TOLERANCE = 1e-5


def parse_args(argv=None):
    from export import train_graph

    parser = Parser(prog="to_onnx", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output folder, created if missing (default: {DEFAULT_OUT.relative_to(REPO_ROOT)})",
    )
    parser.add_argument(
        "--opset",
        type=int,
        default=train_graph.DEFAULT_OPSET,
        help=f"ONNX opset, {train_graph.SUPPORTED_OPSETS.start}.."
        f"{train_graph.SUPPORTED_OPSETS.stop - 1} (default: %(default)s)",
    )
    parser.add_argument(
        "--train-graph",
        choices=train_graph.TRAIN_GRAPHS,
        default=train_graph.DEFAULT_TRAIN_GRAPH,
        help="training-step variant: unpool (MaxUnpool, Col2Im) or portable (ConvTranspose, an Equal "
        "mask: ops ONNX Runtime's CUDA provider, OpenVINO and onnx.reference implement) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="batch size of the parity check against eager PyTorch (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the parameters and batch (default: %(default)s)"
    )
    parser.add_argument("--force", action="store_true", help="replace existing files")
    return parser.parse_args(argv)


def validate(args):
    """Check every argument and the output folder before the (slow) export starts."""
    from export import train_graph

    if args.batch_size <= 0:
        raise UsageError(f"--batch-size must be a positive integer, got {args.batch_size}")
    if args.opset not in train_graph.SUPPORTED_OPSETS:
        raise UsageError(
            f"unsupported --opset {args.opset}; choose {train_graph.SUPPORTED_OPSETS.start}.."
            f"{train_graph.SUPPORTED_OPSETS.stop - 1}"
        )
    out = args.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    from bench import files

    try:
        files.probe_writable(out)
    except OSError as error:
        raise UsageError(f"--out {out} is not a writable folder: {error.strerror or error}") from None
    if not args.force:
        for name in (INFERENCE_FILE, TRAIN_FILE):
            if (out / name).exists():
                raise UsageError(f"{out / name} exists; pass --force to replace it")


def write_atomic(path, chunks):
    """Write `chunks` (bytes, or an iterable of bytes) to `path` whole or not at all
    (bench.files.write_atomic: through a temporary file, renamed into place once complete)."""
    from bench import files

    if isinstance(chunks, (bytes, bytearray)):
        chunks = [chunks]
    files.write_atomic(path, lambda f: f.writelines(chunks))


def parity(inference_bytes, train_bytes, seed, batch_size):
    """Max abs differences of ONNX Runtime vs eager PyTorch: (forward output, train step)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    import model
    from export import train_graph

    net = model.make_net(seed)
    params = {k: v.detach().clone() for k, v in net.state_dict().items()}
    x, target = model.make_batch(batch_size, seed=seed)
    providers = ["CPUExecutionProvider"]

    session = ort.InferenceSession(inference_bytes, providers=providers)
    with torch.no_grad():
        expected = net(x).numpy()
    got = session.run([train_graph.OUTPUT_NAME], {train_graph.INPUT_NAME: x.numpy()})[0]
    inference_diff = float(np.abs(got - expected).max())

    session = ort.InferenceSession(train_bytes, providers=providers)
    feeds = {train_graph.INPUT_NAME: x.numpy(), train_graph.TARGET_NAME: target.numpy()}
    feeds.update({k: v.numpy() for k, v in params.items()})
    names = [train_graph.LOSS_NAME, *map(train_graph.updated_name, params)]
    outputs = dict(zip(names, session.run(names, feeds), strict=True))
    optimizer = model.make_optimizer(net.parameters())
    optimizer.zero_grad()
    loss = model.loss_fn(net(x), target)
    loss.backward()
    optimizer.step()
    diffs = [abs(float(outputs[train_graph.LOSS_NAME]) - loss.item())]
    for k, v in net.state_dict().items():
        diffs.append(float(np.abs(outputs[train_graph.updated_name(k)] - v.detach().numpy()).max()))
    return inference_diff, max(diffs)


def export(args):
    """Build, check, compare and write both models; return the process exit status."""
    import model
    from export import train_graph

    state_dict = model.make_net(args.seed).state_dict()
    protos = {
        INFERENCE_FILE: train_graph.build_inference(state_dict, args.opset),
        TRAIN_FILE: train_graph.build_train_step(state_dict, args.opset, args.train_graph),
    }
    rows, ok = [], True
    errors = {}
    for name, proto in protos.items():
        try:
            train_graph.check(proto)
        except Exception as error:  # the checker's own exception types vary
            errors[name] = (
                f"check failed: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
            )
    data = {name: proto.SerializeToString() for name, proto in protos.items()}
    diffs = dict(
        zip(protos, parity(data[INFERENCE_FILE], data[TRAIN_FILE], args.seed, args.batch_size), strict=True)
    )
    for name, proto in protos.items():
        status = errors.get(name) or ("ok" if diffs[name] <= TOLERANCE else f"parity > {TOLERANCE:g}")
        ok = ok and status == "ok"
        rows.append(
            (
                name,
                f"{len(data[name]) / 1024:.1f} KiB",
                str(proto.opset_import[0].version),
                str(len(proto.graph.node)),
                f"{diffs[name]:.2e}",
                status,
            )
        )
    if ok:
        for name in protos:
            write_atomic(args.out / name, data[name])
    header = ("file", "size", "opset", "nodes", f"max|diff| (B={args.batch_size})", "status")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(
        f"written to {args.out}" if ok else "nothing written: a check failed",
        file=sys.stdout if ok else sys.stderr,
    )
    return 0 if ok else 1


def main(argv=None):
    try:
        args = parse_args(argv)
        validate(args)
    except UsageError as error:
        print(f"{cli.prog('to_onnx')}: error: {error}", file=sys.stderr)
        return 2
    try:
        return export(args)
    except KeyboardInterrupt:
        print("to_onnx: interrupted; no partial file left", file=sys.stderr)
        return 130
    except Exception as error:
        first_line = str(error).splitlines()[0] if str(error) else ""
        print(f"to_onnx: export failed: {type(error).__name__}: {first_line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
