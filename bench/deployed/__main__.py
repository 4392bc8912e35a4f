"""Measure every deployed configuration of the Net and write results/deployed.json, DEPLOYED.md and
deployed.png (bench/deployed/deployed_report.py; method: docs/deployed.md).

    python -m bench.deployed [--artifacts DIR] [--configs a,b] [--threads 1,2] [--processes N]
        [--calls N] [--seconds S] [--batches 64,256] [--out DIR] [--pause-while FILE] [--force]

Artifacts come from DIR (python -m export.deploy writes them); a folder without manifest.json
has them built there first. Each configuration runs in --processes fresh worker processes per
thread count (bench/deployed/deployed_worker.py), the configurations taking turns so every one sees the
machine's phases alike. A configuration whose runtime is missing, or whose artifact will not load,
is skipped with its reason. --pause-while FILE waits (polling) while FILE exists before each
worker, for a machine shared with other timing runs. Refuses an existing deployed.json without
--force. Exits 2 on bad arguments (one line).
"""

import datetime
import json
import os
import subprocess
import sys
import time

from bench import REPO, cli, deployed, files
from bench.launch import process
from bench.reporting import format

DEFAULT_ARTIFACTS = os.path.join("export", "out", "deployed")
JSON_NAME = "deployed.json"
WORKER = "bench.deployed.deployed_worker"
PAUSE_POLL_SECONDS = 30
EXTRA_PACKAGES = ["openvino", "executorch", "torchao"]  # recorded beside machine.PACKAGES


def parse_args(argv=None):
    parser = cli.Parser(prog="bench.deployed", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--artifacts", default=DEFAULT_ARTIFACTS, help="artifacts folder (default: %(default)s)"
    )
    parser.add_argument("--configs", default=",".join(deployed.CONFIGS), help="configurations (default: all)")
    parser.add_argument(
        "--threads", type=cli.positive_list, default=[1, 2], help="thread counts (default: 1,2)"
    )
    parser.add_argument(
        "--processes",
        type=cli.positive,
        default=4,
        help="worker processes per configuration and thread count (default: %(default)s)",
    )
    parser.add_argument(
        "--calls",
        type=cli.positive,
        default=1000,
        help="batch-1 single calls timed per process, for the percentiles (default: %(default)s)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=0.6,
        help="seconds of paired blocks per batch size and process (default: %(default)s)",
    )
    parser.add_argument(
        "--batches",
        type=cli.positive_list,
        default=[64, 256],
        help="offline-throughput batch sizes (default: 64,256)",
    )
    parser.add_argument(
        "--out", type=cli.output_folder, default="results", help="results folder (default: results)"
    )
    parser.add_argument("--pause-while", default=None, help="wait while this file exists, before each worker")
    parser.add_argument("--force", action="store_true", help=f"replace an existing {JSON_NAME}")
    args = parser.parse_args(argv)
    try:
        args.configs = cli.parse_list(args.configs, "configuration", list(deployed.CONFIGS))
    except ValueError as error:
        raise cli.UsageError(f"--configs: {error}") from None
    if deployed.EAGER not in args.configs:
        args.configs.insert(0, deployed.EAGER)  # every configuration is paired against it
    if not args.seconds > 0:
        raise cli.UsageError(f"--seconds must be positive, got {args.seconds}")
    if os.path.exists(os.path.join(args.out, JSON_NAME)) and not args.force:
        raise cli.UsageError(f"{os.path.join(args.out, JSON_NAME)} exists; pass --force to replace it")
    return args


def ensure_artifacts(folder, configs, threads):
    """The manifest of `folder`, building every artifact there first when it has none."""
    from export import deploy

    manifest = os.path.join(folder, deploy.MANIFEST)
    if not os.path.exists(manifest):
        for name in deploy.planned([c for c in configs if not deployed.runtime(c).unavailable()], threads):
            if os.path.exists(os.path.join(folder, name)):
                raise cli.UsageError(
                    f"{folder} has {name} but no {deploy.MANIFEST}; "
                    f"rebuild it: python -m export.deploy --out {folder} --force"
                )
        print(f"building the artifacts into {folder}", flush=True)
        os.makedirs(folder, exist_ok=True)
        deploy.deploy(deploy.Path(folder), configs, threads, log=lambda line: print(line, flush=True))
    with open(manifest, encoding="utf-8") as f:
        return json.load(f)


def skip_reason(config, folder, threads, manifest):
    """Why `config` cannot be measured here at `threads`, or None."""
    import torch

    module = deployed.runtime(config)
    reason = module.unavailable()
    if reason:
        return reason
    if config == "aotinductor" and manifest.get("torch") != torch.__version__:
        return (
            f"its packages were built by torch {manifest.get('torch')}, this is torch {torch.__version__}; "
            "a package is bound to the torch that built it"
        )
    path = deployed.artifact_path(folder, config, threads)
    try:
        check = getattr(module, "check", None)
        if check is not None:
            check(path)
    except deployed.ArtifactError as error:
        return str(error)
    return None


def wait_while(path):
    """Seconds waited while `path` existed."""
    waited = 0.0
    if path and os.path.exists(path):
        print(f"waiting while {path} exists", flush=True)
        start = time.perf_counter()
        while os.path.exists(path):
            time.sleep(PAUSE_POLL_SECONDS)
        waited = time.perf_counter() - start
    return waited


def measure(args):
    from bench.deployed import deployed_report as report
    from bench.measure import machine

    started, start = datetime.datetime.now(datetime.UTC), time.perf_counter()  # reported in UTC
    manifest = ensure_artifacts(args.artifacts, args.configs, args.threads)
    cells = {
        (c, t): {
            "config": c,
            "threads": t,
            "processes": [],
            "failures": [],
            "skipped": skip_reason(c, args.artifacts, t, manifest),
        }
        for t in args.threads
        for c in args.configs
    }
    paused = 0.0
    arguments = [
        "--artifacts",
        os.path.abspath(args.artifacts),
        "--calls",
        args.calls,
        "--seconds",
        args.seconds,
        "--batches",
        ",".join(map(str, args.batches)),
        "--agreement",
    ]
    for threads in args.threads:
        for round_index in range(args.processes):
            turn = (
                args.configs[round_index % len(args.configs) :]
                + args.configs[: round_index % len(args.configs)]
            )
            for config in turn:
                cell = cells[config, threads]
                if cell["skipped"]:
                    continue
                paused += wait_while(args.pause_while)
                print(
                    f"{config}, {threads} thread(s), process {round_index + 1}/{args.processes}", flush=True
                )
                try:
                    cell["processes"].append(
                        process.run(
                            WORKER, [*arguments, "--config", config, "--threads", threads], threads=threads
                        )
                    )
                except process.ChildFailed as error:
                    cell["failures"].append(str(error))
    data = {
        "kind": "deployed inference",
        "command": args.command,
        "started": started.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": commit_of(REPO),
        "duration_s": time.perf_counter() - start,
        "paused_s": paused,
        "machine": {
            **machine.machine_info(),
            **{p: machine.package_version(p) for p in EXTRA_PACKAGES},
            "python_executable": sys.executable,
        },
        "artifacts": format.display_path(args.artifacts),
        "manifest": manifest,
        "threads": args.threads,
        "processes": args.processes,
        "calls": args.calls,
        "seconds": args.seconds,
        "batches": args.batches,
        "configs": args.configs,
        "not_measured": deployed.NOT_MEASURED,
        "cells": list(cells.values()),
    }
    data["summary"] = report.summarize(data)
    json_path = os.path.join(args.out, JSON_NAME)
    files.write_text_atomic(json_path, json.dumps(data, indent=1, default=str) + "\n")
    written = [json_path, *report.write(data, args.out)]
    print(report.terminal_table(data))
    print("wrote " + ", ".join(map(format.display_path, written)))
    return 0


def commit_of(folder):
    """{"id": the checkout's commit, "dirty": whether it has uncommitted changes}, or None outside git."""
    def git(*arguments):
        return subprocess.run(["git", "-C", folder, *arguments], capture_output=True, text=True,
                              timeout=30, check=True).stdout.strip()
    try:
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
        return {"id": git("rev-parse", "HEAD"), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv=None):
    try:
        args = parse_args(argv)
        args.command = " ".join(["python -m bench.deployed", *(sys.argv[1:] if argv is None else argv)])
        return measure(args)
    except cli.UsageError as error:
        print(f"{cli.prog('bench.deployed')}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench.deployed: interrupted; nothing written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
