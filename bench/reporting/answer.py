"""The answer where a run ends: per mode, thread count and batch size, each backend's speedup
against eager with its interval and agreement, fastest first (the pytest session prints it last,
bench/conftest.py; REPORT.md opens with the same table, bench/reporting/markdown.py)."""

from bench.backends import EAGER
from bench.record import failed, verified
from bench.reporting.format import interval_text, text_table, threads_text
from bench.runs.load import groups_of, speedup_interval


def ranked(run, mode, device, threads, batch):
    """[(backend, interval or None, agreement)] of one group and batch size, fastest first; eager last."""
    rows = [(key.backend, speedup_interval(run, key), row.agreement) for key, row in run["rows"].items()
            if (key.mode, key.device, key.threads, key.batch) == (mode, device, threads, batch)
            and key.backend != EAGER]
    return sorted(rows, key=lambda r: -(r[1][0] if r[1] else 0.0))


def verdict_text(agreement):
    if agreement is None:
        return "not checked"
    return "FAIL" if failed(agreement) else ("ok" if verified(agreement) else str(agreement))


def answer_rows(run, mode, device, threads):
    """Batch sizes as columns, each listing its backends fastest first ('name 1.79x [1.70, 1.85]',
    a verdict other than a pass beside it): (header, rows)."""
    batches = sorted({key.batch for key in run["rows"] if key.group() == (mode, device, threads)})
    columns = [[f"{name} {interval_text(interval) if interval else '-'}"
                + ("" if verified(agreement) else f" {verdict_text(agreement)}")
                for name, interval, agreement in ranked(run, mode, device, threads, batch)]
               for batch in batches]
    depth = max(map(len, columns), default=0)
    rows = [[str(i + 1)] + [column[i] if i < len(column) else "" for column in columns] for i in range(depth)]
    return ["#", *(f"batch {batch}" for batch in batches)], rows


def closing_lines(run):
    """The short table of a run, as text lines for the terminal."""
    lines = []
    for mode, device, threads in groups_of(run):
        if mode == "sgemm":
            continue
        lines.append(f"{mode} {device} {threads_text(threads)}: speedup against eager [95% interval], "
                     "fastest first")
        header, rows = answer_rows(run, mode, device, threads)
        lines += ["  " + line for line in text_table(header, rows).splitlines()]
    return lines
