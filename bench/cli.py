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
