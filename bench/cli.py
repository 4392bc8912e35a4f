"""The commands' argument handling: argparse whose errors are one line, and the argument types
they share."""

import argparse
import os
import tempfile

from bench import backends


class UsageError(Exception):
    """A bad command line, reported by the commands as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one UsageError line: no usage block, no traceback."""

    def error(self, message):
        raise UsageError(message)


def positive(text):
    """argparse type: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_list(text):
    """argparse type: comma-separated positive integers."""
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise argparse.ArgumentTypeError("empty list")
    return [positive(item) for item in items]


def backend_list(text, device="cpu"):
    """Backends named on the command line; each must be known and runnable on `device`."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise UsageError("--backends: empty; choose from: " + ", ".join(backends.CONFIGS))
    for name in names:
        try:
            backends.check_choice("backend", name, backends.CONFIGS)
        except ValueError as error:
            raise UsageError(f"--backends: {error}") from None
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
