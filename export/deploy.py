"""Write every deployed artifact of the Net into one folder (bench/deployed, docs/deployed.md).

    python -m export.deploy [--out DIR] [--threads 1,2] [--configs a,b] [--seed S] [--force]

One file per runtime's deployed form (torch.compile's configurations share the eager weights and
OpenVINO reads ONNX Runtime's net.onnx; AOTInductor has one package per thread count), each written
aside and renamed into place, so a file is whole or absent, and then manifest.json (seed, torch
version, each file's size). An existing file is refused without --force, before anything is
built. A runtime that is not installed is skipped with its reason. Prints what it wrote.
Exits 2 on bad arguments (one line), 1 when a build fails.
"""

import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # runnable as `python export/deploy.py` too
    sys.path.insert(0, str(REPO_ROOT))

from bench import cli, files  # noqa: E402  (after the path is set)

DEFAULT_OUT = REPO_ROOT / "export" / "out" / "deployed"
DEFAULT_THREADS = (1, 2)
MANIFEST = "manifest.json"


def parse_args(argv=None):
    from bench import deployed

    parser = cli.Parser(prog="export.deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output folder (default: {DEFAULT_OUT.relative_to(REPO_ROOT)})",
    )
    parser.add_argument(
        "--threads",
        type=cli.positive_list,
        default=list(DEFAULT_THREADS),
        help="thread counts to build for (AOTInductor compiles the count in; default: 1,2)",
    )
    parser.add_argument(
        "--configs",
        default=",".join(deployed.CONFIGS),
        help=f"configurations (default: all: {','.join(deployed.CONFIGS)})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the Net's weights (default: 0)")
    parser.add_argument("--force", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    try:
        args.configs = cli.parse_list(args.configs, "configuration", list(deployed.CONFIGS))
    except ValueError as error:
        raise cli.UsageError(f"--configs: {error}") from None
    return args


def planned(configs, threads):
    """{file name: (config, threads)} of the files to build, one entry per distinct file, in order.
    Eager's weights come first (the torch configurations load them) and net.onnx before
    ONNX Runtime's optimised file (which is made from it)."""
    from bench import deployed

    order = sorted(configs, key=lambda c: (c not in (deployed.EAGER, "openvino"), c != deployed.EAGER))
    plan = {}
    for config in order:
        for count in threads:
            plan.setdefault(deployed.runtime(config).artifact(count), (config, count))
    return plan


def validate(args):
    from bench import deployed

    if args.out.exists() and not args.out.is_dir():
        raise cli.UsageError(f"--out {args.out} exists and is not a folder")
    try:
        files.probe_writable(args.out)
    except OSError as error:
        raise cli.UsageError(
            f"--out {args.out} is not a writable folder: {error.strerror or error}"
        ) from None
    if not args.force:
        names = [
            *planned([c for c in args.configs if not deployed.runtime(c).unavailable()], args.threads),
            MANIFEST,
        ]
        for name in names:
            if (args.out / name).exists():
                raise cli.UsageError(f"{args.out / name} exists; pass --force to replace it")


def deploy(out, configs, threads, seed=0, log=print):
    """Build every artifact into `out`; returns (rows, skipped): rows (file, configs, bytes, seconds),
    skipped {config: reason}. Raises on a failed build (files already written stay, each whole)."""
    import torch

    import model
    from bench import deployed

    state_dict = model.make_net(seed).state_dict()
    skipped = {c: r for c in configs if (r := deployed.runtime(c).unavailable())}
    usable = [c for c in configs if c not in skipped]
    plan = planned(usable, threads)
    users = {}
    for config in usable:
        for count in threads:
            users.setdefault(deployed.runtime(config).artifact(count), []).append(config)
    if "onnxruntime" in usable:  # its optimised file is made from net.onnx, which ships beside it
        users.setdefault(deployed.runtime("onnxruntime").SOURCE, []).append("onnxruntime")
    rows = []
    for name, (config, count) in plan.items():
        start = time.perf_counter()
        path = out / name
        if config != deployed.EAGER and name == deployed.runtime(deployed.EAGER).artifact(count):
            deployed.runtime(deployed.EAGER).build(state_dict, path, count)
        else:
            deployed.runtime(config).build(state_dict, path, count)
        seconds = time.perf_counter() - start
        rows.append(
            (name, sorted(set(users[name]), key=list(deployed.CONFIGS).index), os.path.getsize(path), seconds)
        )
        log(f"wrote {path} ({os.path.getsize(path) / 1024:.1f} KiB, {seconds:.1f} s)")
    manifest = {
        "seed": seed,
        "torch": torch.__version__,
        "threads": list(threads),
        "files": {},
        "skipped": skipped,
    }
    try:  # files an earlier export wrote and this one did not rebuild stay listed
        with open(out / MANIFEST, encoding="utf-8") as f:
            earlier = json.load(f)
        if earlier.get("seed") == seed and earlier.get("torch") == torch.__version__:
            kept = {k: v for k, v in earlier.get("files", {}).items() if (out / k).exists()}
            manifest["files"].update(kept)
            manifest["threads"] = sorted(set(earlier.get("threads", [])) | set(threads))
    except (OSError, ValueError):
        pass
    manifest["files"].update({name: {"configs": c, "bytes": size} for name, c, size, _ in rows})
    files.write_text_atomic(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return rows, skipped


def main(argv=None):
    try:
        args = parse_args(argv)
        validate(args)
    except cli.UsageError as error:
        print(f"{cli.prog('export.deploy')}: error: {error}", file=sys.stderr)
        return 2
    try:
        rows, skipped = deploy(args.out, args.configs, args.threads, args.seed, log=lambda line: None)
    except KeyboardInterrupt:
        print("export.deploy: interrupted; every file written is whole", file=sys.stderr)
        return 130
    except Exception as error:
        from bench.deployed import first_line

        print(f"export.deploy: build failed: {type(error).__name__}: {first_line(error)}", file=sys.stderr)
        return 1
    from bench.reporting.format import text_table

    print(
        text_table(
            ("file", "configurations", "size", "built in"),
            [(name, ",".join(c), f"{size / 1024:.1f} KiB", f"{s:.1f} s") for name, c, size, s in rows],
        )
    )
    for config, reason in skipped.items():
        print(f"skipped {config}: {reason}")
    print(f"written to {args.out} (with {MANIFEST})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
