"""The one command line, `lenet-bench COMMAND ...` (also `python -m bench COMMAND ...`): its
table of commands, and what every command shares: argparse whose errors are one line, and the
argument types."""

import argparse
import importlib
import os
import sys
import tempfile

from bench import backends


class UsageError(Exception):
    """A bad command line, reported by the commands as one line, exit status 2."""


# command -> (module whose main(argv) runs it, what it does). `python -m bench.X` runs the same
# mains (one-line aliases kept so that the commands written in saved results still work).
COMMANDS = {
    "run": ("bench.cli", "the benchmarks: pytest bench --benchmark-only with these options"),
    "report": ("bench.reporting.report", "REPORT.md and charts from the newest saved run"),
    "compare": ("bench.reporting.compare", "two saved runs side by side; exit 1 on a regression"),
    "calibration": ("bench.reporting.calibration", "several saved runs of one commit: do they agree?"),
    "agreement": ("bench.studies.agreement_study", "every backend against float64 eager, on many inputs"),
    "export": ("export.to_onnx", "net.onnx and train_step.onnx"),
    "deploy": ("export.deploy", "every deployed-inference artifact into a folder"),
    "deployed": ("bench.deployed.__main__", "deployed inference: latency, throughput, cold start"),
    "profile": ("bench.studies.profile", "where each backend's time goes, per kernel"),
    "ddp": ("bench.studies.ddp", "the data-parallel training step under torchrun"),
    "draw-net": ("bench.studies.draw_net", "a picture of the Net"),
    "gpu-check": ("bench.studies.gpu_check", "CUDA timings synchronised and not"),
    "versions": ("bench.versions", "the suite across torch releases, one venv each; --report"),
    "study": (None, "a study: compile, blocks, autotune, compile-time or overhead"),
}
STUDIES = {
    "compile": "bench.studies.compile_study",
    "blocks": "bench.studies.block_study",
    "autotune": "bench.studies.autotune_study",
    "compile-time": "bench.studies.compile_time",
    "overhead": "bench.studies.overhead_study",
}
_invoked_as = None  # "lenet-bench compare" while the console script runs a command


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one UsageError line: no usage block, no traceback. Under the
    console script its name is the one the user typed."""

    def __init__(self, *args, prog=None, **kwargs):
        super().__init__(*args, prog=_invoked_as or prog, **kwargs)

    def error(self, message):
        raise UsageError(message)


def prog(default):
    """The name a command's error lines start with: `default`, or what the console script was given."""
    return _invoked_as or default


def run_benchmarks(argv):
    """`lenet-bench run ...`: the benchmarks through pytest, which the design card names."""
    import pytest

    return pytest.main(["bench", "--benchmark-only", *argv])


def main(argv=None):
    """`lenet-bench COMMAND [ARGS]`: the command's own main with ARGS; its --help says the rest."""
    global _invoked_as
    argv = sys.argv[1:] if argv is None else list(argv)
    listing = "\n".join(f"  {name:12} {text}" for name, (_, text) in COMMANDS.items())
    parser = argparse.ArgumentParser(prog="lenet-bench", formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Benchmarks of one LeNet-style network across backends.",
                                     epilog=f"commands:\n{listing}\n\n`lenet-bench COMMAND --help` for each.")
    parser.add_argument("command", nargs="?", help="one of the commands below")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name == "study":
        if not rest or rest[0] not in STUDIES:
            print(f"lenet-bench study: error: name a study: {', '.join(STUDIES)}", file=sys.stderr)
            return 2
        module, name, rest = STUDIES[rest[0]], f"study {rest[0]}", rest[1:]
    elif name in COMMANDS:
        module = COMMANDS[name][0]
    else:
        print(f"lenet-bench: error: unknown command {name!r}; choose from: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    if name == "run":
        return run_benchmarks(rest)
    _invoked_as = f"lenet-bench {name}"
    try:
        return importlib.import_module(module).main(rest)
    finally:
        _invoked_as = None


def positive_integer(text):
    """A positive integer from `text`, or ValueError saying what was expected."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"expected a positive integer, got {text!r}")
    return value


def positive(text):
    """argparse type: a positive integer."""
    try:
        return positive_integer(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_list(text, kind, choices=None, convert=str):
    """The one comma-list parser behind every list option: each item stripped, blank ones skipped,
    passed through `convert` (whose ValueError is the message) and, given `choices`, one of them.
    ValueError (one line: an unknown `kind`, a bad item, or an empty list) otherwise."""
    values = [convert(item.strip()) for item in text.split(",") if item.strip()]
    if not values:
        raise ValueError("empty; choose from: " + ", ".join(map(str, choices)) if choices else "empty list")
    for value in values:
        if choices is not None:
            backends.check_choice(kind, value, choices)
    return values


def positive_list(text):
    """argparse type: comma-separated positive integers."""
    try:
        return parse_list(text, "integer", convert=positive_integer)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def backend_list(text, device="cpu"):
    """Backends named on the command line; each must be known and runnable on `device`."""
    try:
        names = parse_list(text, "backend", backends.CONFIGS)
    except ValueError as error:
        raise UsageError(f"--backends: {error}") from None
    for name in names:
        reason = backends.unavailable(name, device)
        if reason:
            raise UsageError(f"--backends: {name} cannot run on {device}: {reason}")
    return list(dict.fromkeys(names))


def output_folder(path):
    """argparse type for --out: a folder that exists or can be made, and can be written to,
    checked before any work starts rather than after it (and nothing is left behind)."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    try:
        if not os.path.isdir(existing):
            raise NotADirectoryError(20, f"{existing} is a file")
        if existing == os.path.abspath(path):
            with tempfile.TemporaryFile(dir=existing):
                pass
        else:
            with tempfile.TemporaryDirectory(dir=existing):
                pass
    except OSError as error:
        reason = error.strerror or error
        raise argparse.ArgumentTypeError(f"{path} is not a writable folder ({reason})") from None
    return path
