"""The report's charts: per (mode, device, threads), time per call, paired speedup and memory."""

from bench.backends import EAGER
from bench.files import write_atomic
from bench.reporting.format import MODE_TITLES, num, threads_text
from bench.runs.load import CellKey, backends_of, cpu_of, failed, speedup, speedup_interval


def draw_chart(run, mode, device, threads, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    backends = backends_of(run)
    colors = {name: plt.cm.tab10(i % 10) for i, name in enumerate(backends)}
    keys = [key for key in run["rows"] if key.group() == (mode, device, threads)]
    batches = sorted({key.batch for key in keys})
    fig, (left, right, memory_ax) = plt.subplots(1, 3, figsize=(19, 5))

    for backend in backends:
        points = sorted((key.batch, run["rows"][key].time * 1e3) for key in keys if key.backend == backend)
        if points:
            fail = any(failed(run["rows"][key]) for key in keys if key.backend == backend)
            left.plot(*zip(*points, strict=True), marker="o", color=colors[backend],
                      linestyle="--" if fail else "-", label=backend + (" (agreement FAIL)" if fail else ""))
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xticks(batches, [str(b) for b in batches])
    left.minorticks_off()
    left.set_xlabel("batch size")
    left.set_ylabel("time per call (ms)")
    left.set_title("time per call (log-log)")
    left.grid(True, which="both", alpha=0.3)

    others = [b for b in backends if b != EAGER and any(key.backend == b for key in keys)]
    width = 0.8 / max(len(others), 1)
    values = [1.0]
    for i, backend in enumerate(others):
        for j, batch in enumerate(batches):
            key = CellKey(mode, device, batch, backend, threads)
            value = speedup(run, key) if key in run["rows"] else None
            if value is None:
                continue
            fail = failed(run["rows"][key])
            values.append(value)
            x = j - 0.4 + width * (i + 0.5)
            interval = speedup_interval(run, key)
            errors = [[value - interval[1]], [interval[2] - value]] if interval else None
            if interval:
                values += [interval[1], interval[2]]
            right.bar(x, value - 1, width, bottom=1, color=colors[backend],  # from 1: up is faster
                      hatch="//" if fail else None, edgecolor="black" if fail else colors[backend],
                      yerr=errors, capsize=2, ecolor="black",
                      label=(backend + (" (agreement FAIL)" if fail else "")) if j == 0 else None)
            tip = (interval[2] if value >= 1 else interval[1]) if interval else value  # past the error bar
            right.annotate(f"{num(value)}x" + (" FAIL" if fail else ""), (x, tip), ha="center",
                           va="bottom" if value >= 1 else "top", fontsize=7, rotation=90,
                           xytext=(0, 2 if value >= 1 else -2), textcoords="offset points")
    right.axhline(1.0, color=colors.get(EAGER, "black"), linewidth=1.5, label=f"{EAGER} (= 1)")
    right.set_yscale("log")
    right.set_ylim(min(values) / 1.9, max(values) * 1.9)  # room for the labels past the error bars
    right.set_xticks(range(len(batches)), [str(b) for b in batches])
    right.set_xlabel("batch size")
    right.set_ylabel(f"speedup against {EAGER} (higher is faster)")
    right.set_title(f"speedup against {EAGER}, paired, 95% interval")

    everyone = [b for b in backends if any(key.backend == b for key in keys)]
    width = 0.8 / max(len(everyone), 1)
    for i, backend in enumerate(everyone):
        for j, batch in enumerate(batches):
            row = run["rows"].get(CellKey(mode, device, batch, backend, threads))
            if row is None or not isinstance(row.peak_bytes, (int, float)):
                continue
            held = row.held_bytes if isinstance(row.held_bytes, (int, float)) else 0
            x = j - 0.4 + width * (i + 0.5)
            memory_ax.bar(x, held / 2**20, width, color=colors[backend], alpha=0.45)
            memory_ax.bar(x, row.peak_bytes / 2**20, width, bottom=held / 2**20, color=colors[backend])
    memory_ax.set_xticks(range(len(batches)), [str(b) for b in batches])
    memory_ax.set_xlabel("batch size")
    memory_ax.set_ylabel("MiB resident")
    memory_ax.set_title("memory: held (pale) + peak of one call (solid)")
    memory_ax.grid(True, axis="y", alpha=0.3)
    right.grid(True, axis="y", which="both", alpha=0.3)
    # One legend for the three panels, below them: none over a bar or a line.
    handles, labels = left.get_legend_handles_labels()
    extra = [(h, label) for h, label in zip(*right.get_legend_handles_labels())
             if label == f"{EAGER} (= 1)" or "FAIL" in label]
    fig.legend(handles + [h for h, _ in extra], labels + [label for _, label in extra], loc="lower center",
               ncol=len(labels) + len(extra), frameon=False)

    machine = run["machine"]
    for ax in (left, right):  # plain numbers on the log axes: 0.5, 1, 2, 5, 10, not 10^0
        ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())

    fig.suptitle(f"{MODE_TITLES.get(mode, mode)}, {device}: {cpu_of(machine)}, "
                 f"{threads_text(threads)}, torch {machine.get('torch', '?')} "
                 f"({run['name'][:4]})")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
