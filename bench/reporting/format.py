"""How numbers and tables read in every report and command output: one formatter each."""

import math
import os

from bench import REPO

NOISY_MARK = "(noisy)"  # a cell timed while other processes used the machine (bench/measure/noise.py)
AA_OFF_MARK = "(A/A off 1)"  # eager paired with itself, its interval excluding 1
MODE_TITLES = {"train": "Training step", "forward": "Forward pass"}


def ms(seconds):
    return f"{seconds * 1e3:.3g}" if seconds is not None and math.isfinite(seconds) else "-"


def secs(seconds):
    return f"{seconds:.3g}" if isinstance(seconds, (int, float)) and math.isfinite(seconds) else "-"


def num(value):
    return f"{value:.2f}" if value >= 0.0995 else f"{value:.2g}"  # 12.34, 1.00, 0.90, 0.67, 0.0021


def interval_text(interval):
    median, low, high = interval
    return f"{num(median)}x [{num(low)}, {num(high)}]"


def rate(value):
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def mib(value):
    return f"{value / 2**20:.1f}" if isinstance(value, (int, float)) else "-"


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def threads_text(threads):
    return f"{threads} thread" + "s" * (threads != 1) if threads else "? threads"


def display_path(path):
    """A path as the reports print it: relative to the repository, never a machine's absolute path."""
    relative = os.path.relpath(os.path.abspath(path), REPO)
    return os.path.basename(path) if relative.startswith("..") else relative


def display_command(command):
    """A recorded command line with each absolute path in it shown as display_path shows it."""
    return " ".join(display_path(word) if os.path.isabs(word) else word for word in command.split(" "))


def text_table(header, rows):
    """A table for the terminal: columns padded to their widest cell, a dashed line under the header."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
             for line in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def us(seconds):
    """Microseconds, with thousands separators; one decimal under 10 µs."""
    return f"{seconds * 1e6:,.0f}" if seconds >= 1e-5 else f"{seconds * 1e6:.1f}"


def pct(fraction):
    return f"{100 * fraction:.1f}%" if fraction < 0.1 else f"{100 * fraction:.0f}%"


def sci(value):
    """An error or a ratio in three significant digits, scientific notation: 1.23e-07; 0, nan and inf
    as they are, "-" for none."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.2e}" if value != 0 else "0"
    return str(value)
