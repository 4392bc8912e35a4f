"""bench.report, bench.compare and bench.draw_net on small synthetic runs: no benchmark is run.

The runs are shaped like pytest-benchmark 5.3 output as bench/test_benchmarks.py saves it
(trimmed machine_info, same keys for benchmarks, extra_info, options and stats).
"""

import json
import os

import pytest

from bench import REPO
from bench.record import RunRow
from bench.reporting import compare, report
from bench.runs import load
from bench.studies import draw_net

PNG = b"\x89PNG\r\n\x1a\n"
MACHINE = {
    "node": "vm", "machine": "x86_64", "python_version": "3.11.7", "system": "Linux",
    "cpu": {"arch": "X86_64", "count": 2, "brand_raw": "Intel(R) Xeon(R) Processor"},
    "cpu_model": "Intel(R) Xeon(R) Processor", "cpu_count": 2, "torch_threads": 2, "python": "3.11.7",
    "c++": "c++ (Debian 12.2.0-14+deb12u1) 12.2.0", "cuda_device": None, "cuda": None,
    "torch": "2.13.0+cpu", "onnx": "1.23.2", "onnxruntime": "1.32.0", "onnxscript": "0.7.2",
    "numpy": "2.4.6", "pytest-benchmark": "5.3.1",
}
FLOPS = {("train", 1): 1550736, ("train", 64): 99247104, ("forward", 1): 549312, ("forward", 64): 35155968}
# median seconds: compile-step-im2col is 2x faster than eager everywhere, torchscript equal
MEDIANS = {
    ("train", 1, "eager"): 1.0e-3, ("train", 1, "compile-step-im2col"): 0.5e-3,
    ("train", 1, "torchscript"): 1.0e-3,
    ("train", 64, "eager"): 6.0e-3, ("train", 64, "compile-step-im2col"): 3.0e-3,
    ("train", 64, "torchscript"): 6.0e-3,
    ("forward", 1, "eager"): 0.1e-3, ("forward", 1, "compile-step-im2col"): 0.05e-3,
    ("forward", 1, "torchscript"): 0.1e-3,
    ("forward", 64, "eager"): 2.0e-3, ("forward", 64, "compile-step-im2col"): 1.0e-3,
    ("forward", 64, "torchscript"): 2.0e-3,
}
SGEMM_MEDIAN = 2 * 1024**3 / 80e9  # 80 GFLOP/s
COMMIT = "ffe31923f758f9b41a52e064d3b0493f7a283644"
STATS_IN_SECONDS = ["min", "max", "mean", "stddev", "median", "iqr", "q1", "q3", "ld15iqr", "hd15iqr",
                    "total"]


def stats(median):
    return {"min": median * 0.9, "max": median * 1.5, "mean": median * 1.05, "stddev": median * 0.1,
            "rounds": 20, "median": median, "iqr": median * 0.1, "q1": median * 0.95, "q3": median * 1.05,
            "iqr_outliers": 0, "stddev_outliers": 2, "outliers": "2;0", "ld15iqr": median * 0.9,
            "hd15iqr": median * 1.2, "ops": 1 / median, "total": median * 20, "iterations": 1}


def benchmark(mode, batch, backend, median, **extra):
    test = "test_train_step" if mode == "train" else "test_forward"
    param = f"cpu-{batch}-{backend}"
    return {
        "group": f"{mode} cpu batch={batch}", "name": f"{test}[{param}]",
        "fullname": f"bench/test_benchmarks.py::{test}[{param}]",
        "params": {"device": "cpu", "batch_size": batch, "backend": backend}, "param": param,
        "extra_info": {"backend": backend, "mode": mode, "device": "cpu", "batch_size": batch,
                       "flops": FLOPS[(mode, batch)], "threads": 2, "torch": "2.13.0+cpu",
                       "setup_seconds": 0.5, "first_call_seconds": 1.5, **extra},
        "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": 20, "max_time": 1.0,
                    "min_time": 5e-06, "precision": None, "confidence": None, "warmup": False},
        "stats": stats(median),
    }


def paired(medians, mode, batch, backend, width=0.03):
    """The paired speedup a run would record: eager's median over the backend's, +-3%, from three
    worker processes that read value x (1 - width), value and value x (1 + width), ten pairs each."""
    value = medians[(mode, batch, "eager")] / medians[(mode, batch, backend)]
    jitter = [0.995 + 0.001 * i for i in range(10)]
    return {"speedup": value, "speedup_low": value * (1 - width), "speedup_high": value * (1 + width),
            "processes": 3, "pair_ratios": [[value * (1 + offset) * j for j in jitter]
                                            for offset in (-width, 0.0, width)],
            "process_speedups": [value * (1 + offset) for offset in (-width, 0.0, width)],
            "paired_seconds_per_call": medians[(mode, batch, backend)]}


def run_data(medians=MEDIANS, when="2026-11-27T03:08:10.000000+00:00", machine=MACHINE, extra=None,
             width=0.03):
    benchmarks = [benchmark(mode, batch, backend, median, **paired(medians, mode, batch, backend, width),
                            **(extra or {}).get(backend, {}))
                  for (mode, batch, backend), median in medians.items()]
    benchmarks.append({
        "group": "sgemm cpu", "name": "test_sgemm[cpu-1024]",
        "fullname": "bench/test_benchmarks.py::test_sgemm[cpu-1024]",
        "params": {"device": "cpu", "size": 1024}, "param": "cpu-1024",
        "extra_info": {"mode": "sgemm", "device": "cpu", "size": 1024, "flops": 2 * 1024**3, "threads": 2,
                       "torch": "2.13.0+cpu"},
        "options": benchmarks[0]["options"], "stats": stats(SGEMM_MEDIAN),
    })
    return {"machine_info": machine,
            "commit_info": {"id": COMMIT, "dirty": False, "branch": "main"},
            "benchmarks": benchmarks, "datetime": when, "version": "5.3.1"}


def save(storage, number, data, machine_id="Linux-CPython-3.11-64bit"):
    folder = storage / machine_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{number:04d}_{COMMIT}_20261127_030628_{1000 + number}.json"
    path.write_text(json.dumps(data, indent=4))
    return path


def slowed(data, backend, factor=2.0):
    data = json.loads(json.dumps(data))
    for bench in data["benchmarks"]:
        if bench["extra_info"].get("backend") == backend:
            for key in STATS_IN_SECONDS:
                bench["stats"][key] *= factor
            bench["stats"]["ops"] /= factor
            for key in ("speedup", "speedup_low", "speedup_high"):
                bench["extra_info"][key] /= factor
            if backend == "eager":
                bench["extra_info"]["paired_seconds_per_call"] *= factor
            bench["extra_info"]["pair_ratios"] = [[r / factor for r in group]
                                                  for group in bench["extra_info"]["pair_ratios"]]
    return data


def table_row(text, section, backend, batch):
    """The cells of one row of the detailed table in a section of REPORT.md."""
    body = text.split(f"## {section}")[1].split("\n## ")[0]
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[:2] == [backend, str(batch)]:
            return cells
    raise AssertionError(f"no row {backend} {batch} in {section}")


def test_report_writes_markdown_and_charts(tmp_path, capsys):
    storage, out = tmp_path / "benchmarks", tmp_path / "results"
    older = run_data(medians={k: v * 3 for k, v in MEDIANS.items()}, when="2026-11-26T00:00:00+00:00")
    save(storage, 1, older)
    latest = save(storage, 2, run_data())
    assert report.main(["0009", "--storage", str(storage), "--out", str(out)]) == 2  # no such run
    assert "no saved run matches '0009'" in capsys.readouterr().err

    assert report.main(["--storage", str(storage), "--out", str(out)]) == 0
    text = (out / "REPORT.md").read_text()
    assert latest.name in text  # the latest run, not the first
    command = ("--backends=eager,compile-step-im2col,torchscript --batch-sizes=1,64 --devices=cpu "
               "--modes=train,forward")
    for fact in ["Intel(R) Xeon(R) Processor", "onnxruntime 1.32.0", "torch 2.13.0+cpu", command]:
        assert fact in text
    assert "<!-- main-table:start -->" in text
    assert ("| compile-step-im2col | cpu | 2 | 0.5 ms (2.00x [1.94, 2.06]) | 3 ms (2.00x [1.94, 2.06]) |"
            in text)
    assert "| eager | cpu | 2 | 1 ms (A/A 1.00x [0.97, 1.03]) |" in text

    # train batch 64 compile: 99247104 FLOP / 3 ms = 33.08 GFLOP/s, 41.35% of the 80 GFLOP/s sgemm
    cells = table_row(text, "Training step, cpu", "compile-step-im2col", 64)
    assert cells[2:11] == ["3", "0.3", "21,333", "2.00x [1.94, 2.06]", "33.08", "41.35%", "-", "-", "0.5"]
    assert table_row(text, "Training step, cpu", "torchscript", 64)[5] == "1.00x [0.97, 1.03]"
    assert table_row(text, "Forward pass, cpu", "compile-step-im2col", 1)[5] == "2.00x [1.94, 2.06]"
    assert str(tmp_path) not in text  # runs are named without this machine's absolute paths
    assert "sgemm reference on cpu at 2 threads: 80.0 GFLOP/s (quartiles of its rounds" in text
    for name in ["train_cpu_2t.png", "forward_cpu_2t.png"]:
        assert (out / name).read_bytes().startswith(PNG)
        assert f"]({name})" in text
    assert sorted(os.listdir(out)) == ["REPORT.md", "forward_cpu_2t.png", "train_cpu_2t.png"]  # no temp files

    assert report.main(["0001", "--storage", str(storage), "--out", str(out)]) == 0  # a named run
    assert "0001_" in (out / "REPORT.md").read_text()


def test_report_copies_its_answer_table_into_the_readme_between_the_markers(tmp_path, monkeypatch):
    """The README's results table is never typed: the default report rewrites only what lies between
    its markers, and leaves a README without markers alone."""
    storage, out = tmp_path / "benchmarks", tmp_path / "results"
    save(storage, 1, run_data())
    readme = tmp_path / "README.md"
    readme.write_text("# top\n<!-- main-table:start -->\nstale\n<!-- main-table:end -->\n## after\n")
    monkeypatch.setattr(report, "DEFAULT_OUT", str(out))
    monkeypatch.setattr(report, "README", str(readme))
    assert report.main(["--storage", str(storage)]) == 0
    text = readme.read_text()
    start, end = "<!-- main-table:start -->", "<!-- main-table:end -->"
    assert text.startswith(f"# top\n{start}") and text.endswith(f"{end}\n## after\n")
    assert "stale" not in text
    assert "Run `0001_" in text  # the copied table names its run
    assert "| eager | cpu | 2 | 1 ms (A/A 1.00x [0.97, 1.03]) |" in text
    table = (out / "REPORT.md").read_text().partition(start)[2].partition(end)[0]
    assert table and table in text

    readme.write_text("# no markers\n")
    assert report.main(["--storage", str(storage)]) == 0
    assert readme.read_text() == "# no markers\n"


def test_runs_saved_before_the_rename_read_with_todays_names(tmp_path):
    """A run saved when compile-step-im2col was `compile` (and compile-step `compile-aten`) reads
    with today's names, so report, compare and calibration line it up with new runs."""
    renamed = {(mode, batch, {"compile-step-im2col": "compile", "torchscript": "compile-aten"}.get(b, b)): m
               for (mode, batch, b), m in MEDIANS.items()}
    path = save(tmp_path, 1, run_data(medians=renamed))
    run = load.read_run(str(path))
    assert {key[3] for key in run["rows"]} == {"eager", "compile-step-im2col", "compile-step"}
    assert report.main([str(path), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "REPORT.md").read_text()
    assert "torch.compile (compile-step-im2col) not slower" in text  # a compiled row for the targets


def test_a_rows_time_comes_from_the_same_pairing_as_its_speedup(tmp_path):
    """pytest-benchmark's rounds say torchscript is slower than eager (1.84 against 1.51 ms), its pairing
    says 1.05x faster: the row's time, samples/s and GFLOP/s follow the pairing, eager's A/A time / 1.05."""
    storage, out = tmp_path / "benchmarks", tmp_path / "results"
    data = run_data()
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if (info.get("mode"), info.get("batch_size"), info.get("backend")) in (
                ("train", 1, "eager"), ("train", 1, "torchscript")):
            bench["stats"]["median"] = 1.84e-3 if info["backend"] == "torchscript" else 1.51e-3
            info["paired_seconds_per_call"] = 1.6e-3 if info["backend"] == "eager" else 9.9
            if info["backend"] == "torchscript":
                info.update(speedup=1.05, speedup_low=1.0, speedup_high=1.1)
    save(storage, 1, data)
    assert report.main(["--storage", str(storage), "--out", str(out)]) == 0
    text = (out / "REPORT.md").read_text()
    eager, torchscript = (table_row(text, "Training step, cpu", name, 1) for name in ("eager", "torchscript"))
    assert eager[2] == "1.6" and torchscript[2] == "1.52"  # 1.6 / 1.05
    assert float(torchscript[4].replace(",", "")) > float(eager[4].replace(",", ""))  # samples/s


def test_report_checks_the_performance_targets(tmp_path):
    storage, out = tmp_path / "benchmarks", tmp_path / "results"
    medians = {**MEDIANS, ("train", 1, "compile-step-im2col"): 0.1e-3,
               ("train", 64, "compile-step-im2col"): 7.0e-3}
    save(storage, 1, run_data(medians=medians))
    assert report.main(["--storage", str(storage), "--out", str(out)]) == 0
    text = (out / "REPORT.md").read_text()
    assert ("| batch-1 training step: the fastest backend at least 8x faster than eager "
            "| compile-step-im2col 10.00x [9.70, 10.30] | met |") in text
    assert ("| torch.compile (compile-step-im2col) not slower than eager at any batch | slowest at batch 64: "
            "0.86x [0.83, 0.88] | not met |") in text

    # an interval that straddles the line decides nothing
    medians = {**MEDIANS, ("train", 1, "compile-step-im2col"): 1e-3 / 8.1,
               ("train", 64, "compile-step-im2col"): 6.1e-3}
    save(storage, 2, run_data(medians=medians, when="2026-11-28T00:00:00+00:00", width=0.05))
    assert report.main(["--storage", str(storage), "--out", str(out)]) == 0
    text = (out / "REPORT.md").read_text()
    assert "| compile-step-im2col 8.10x [7.69, 8.51] | undecided |" in text
    assert "| slowest at batch 64: 0.98x [0.93, 1.03] | undecided |" in text


def test_report_marks_cells_measured_under_noise_and_shows_memory(tmp_path):
    storage, out = tmp_path / "benchmarks", tmp_path / "results"
    extra = {"compile-step-im2col": {"noise_others_cpu": 0.30, "noise_steal": 0.0,
                                     "memory_peak_bytes": 3 * 2**20, "held_bytes": 40 * 2**20,
                                     "first_call_cache": {"hits": 0, "misses": 2}},
             "torchscript": {"noise_others_cpu": 0.01, "noise_steal": 0.0}}
    save(storage, 1, run_data(extra=extra))
    assert report.main(["--storage", str(storage), "--out", str(out)]) == 0
    text = (out / "REPORT.md").read_text()
    cells = table_row(text, "Training step, cpu", "compile-step-im2col", 64)
    assert cells[5] == "2.00x [1.94, 2.06] (noisy)" and cells[-1] == "30% / 0% (noisy)"
    assert cells[8:10] == ["3.0", "40.0"] and cells[11] == "1.5 (cold cache)"
    assert table_row(text, "Training step, cpu", "torchscript", 64)[-1] == "1% / 0%"


def test_report_marks_a_disagreeing_backend(tmp_path):
    storage, out = tmp_path / "benchmarks", tmp_path / "results"
    extra = {"compile-step-im2col": {"agreement": "FAIL", "agreement_max_abs_error": 0.03},
             "torchscript": {"agreement": "pass", "agreement_max_abs_error": 1e-7}}
    save(storage, 1, run_data(extra=extra))
    assert report.main(["--storage", str(storage), "--out", str(out)]) == 0
    text = (out / "REPORT.md").read_text()
    cells = table_row(text, "Training step, cpu", "compile-step-im2col", 64)
    assert cells[5] == "2.00x [1.94, 2.06] FAIL" and cells[12] == "FAIL (max abs err 3.0e-02)"
    assert table_row(text, "Training step, cpu", "torchscript", 64)[12].startswith("pass")
    assert table_row(text, "Training step, cpu", "eager", 64)[12] == "not checked"
    assert "| compile-step-im2col | cpu | 2 | 0.5 ms (2.00x [1.94, 2.06] FAIL) |" in text


def test_compare_flags_an_injected_2x_slowdown(tmp_path, capsys):
    storage = tmp_path / "benchmarks"
    base = save(storage, 1, run_data(when="2026-11-26T00:00:00+00:00"))
    cand = save(storage, 2, slowed(run_data(), "torchscript"))
    assert compare.main(["--storage", str(storage)]) == 1  # default: the latest against the one before
    out = capsys.readouterr().out
    flagged = [line for line in out.splitlines() if line.endswith("REGRESSION")]
    assert len(flagged) == 4 and all("torchscript" in line for line in flagged)
    assert "+100%" in flagged[0]

    assert compare.main([str(base), str(cand), "--threshold", "1.5"]) == 0  # 100% is under 150%
    assert compare.main([str(cand), str(base)]) == 0  # faster is no regression


def test_compare_fails_a_candidate_that_disagrees_with_float64(tmp_path, capsys):
    storage = tmp_path / "benchmarks"
    base = save(storage, 1, run_data(when="2026-11-26T00:00:00+00:00"))
    cand = save(storage, 2, run_data(extra={"compile-step-im2col": {"agreement": "FAIL"}}))
    assert compare.main([str(base), str(cand)]) == 1  # as fast as before, but wrong
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("agreement FAIL")]
    assert lines == ["agreement FAIL in the candidate (its numbers disagree with float64; do not trust its "
                     "speedups): " + ", ".join(f"{mode} cpu 2 threads batch={batch} compile-step-im2col"
                                               for mode in ("forward", "train") for batch in (1, 64))]
    assert compare.main([str(cand), str(base)]) == 0  # a FAIL in the baseline is not the candidate's


def test_compare_judges_by_intervals(tmp_path, capsys):
    storage = tmp_path / "benchmarks"
    base = save(storage, 1, run_data(when="2026-11-26T00:00:00+00:00", width=0.02))
    # 12% slower against eager, intervals +-2%: they clear each other, past the default 10%
    tight = save(storage, 2, slowed(run_data(width=0.02), "torchscript", 1.12))
    assert compare.main([str(base), str(tight)]) == 1
    flagged = [line for line in capsys.readouterr().out.splitlines() if line.endswith("REGRESSION")]
    assert len(flagged) == 4 and all("torchscript" in line and "+12%" in line for line in flagged)
    # the same medians with +-8% intervals: they overlap, so undecided, not a regression
    wide_base = save(storage, 3, run_data(when="2026-11-26T00:00:00+00:00", width=0.08))
    wide = save(storage, 5, slowed(run_data(width=0.08), "torchscript", 1.12))
    assert compare.main([str(wide_base), str(wide)]) == 0
    out = capsys.readouterr().out
    assert "4 undecided" in out and "no regressions" in out
    # 5% slower with tight intervals: under the threshold
    little = save(storage, 4, slowed(run_data(width=0.02), "torchscript", 1.05))
    assert compare.main([str(base), str(little)]) == 0


def test_compare_passes_an_unchanged_rerun(tmp_path, capsys):
    storage = tmp_path / "benchmarks"
    path = save(storage, 1, run_data(when="2026-11-26T00:00:00+00:00"))
    assert compare.main([str(path), str(path)]) == 0
    # a rerun where every backend, eager included, is 1.5x slower: same ratios, no regression
    save(storage, 2, run_data(medians={k: v * 1.5 for k, v in MEDIANS.items()}))
    assert compare.main(["0001", "--storage", str(storage)]) == 0
    assert "no regressions" in capsys.readouterr().out


def test_compare_notes_another_machine_in_one_line_and_goes_on(tmp_path, capsys):
    storage = tmp_path / "benchmarks"
    save(storage, 1, run_data(when="2026-11-26T00:00:00+00:00"))
    other = dict(MACHINE, cpu_model="AMD EPYC 9R14", cpu={"brand_raw": "AMD EPYC 9R14"})
    save(storage, 1, slowed(run_data(machine=other), "compile-step-im2col"),
         machine_id="Linux-CPython-3.11-64bit-other")
    assert compare.main(["--storage", str(storage)]) == 1  # still compared, and the slowdown found
    notes = [line for line in capsys.readouterr().out.splitlines() if "different machines" in line]
    assert len(notes) == 1 and "AMD EPYC 9R14" in notes[0]


def test_bad_files_are_named_in_one_line_and_skipped(tmp_path, capsys):
    out = tmp_path / "results"
    storage = out / "benchmarks"  # the real layout: the report writes beside the saved runs
    good = save(storage, 1, run_data())
    folder = good.parent
    (folder / "0002_corrupt.json").write_text('{"benchmarks": [')
    foreign = {"benchmarks": [{"name": "test_x", "stats": {"median": 1}}]}  # another suite's run
    (folder / "0003_foreign.json").write_text(json.dumps(foreign))
    (folder / "0004_list.json").write_text("[1, 2, 3]")
    before = {p: p.read_bytes() for p in folder.iterdir()}

    assert report.main(["--storage", str(storage), "--out", str(out)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3
    for name, line in zip(["0002_corrupt.json", "0003_foreign.json", "0004_list.json"], err, strict=True):
        assert line.startswith("warning: skipping") and name in line
    assert good.name in (out / "REPORT.md").read_text()
    assert {p: p.read_bytes() for p in folder.iterdir()} == before  # nothing in storage touched

    # compare: two good runs beside the bad files
    save(storage, 5, run_data(when="2026-11-28T00:00:00+00:00"))
    assert compare.main(["--storage", str(storage)]) == 0
    assert len(capsys.readouterr().err.strip().splitlines()) == 3


@pytest.mark.parametrize("command", [report.main, compare.main])
def test_empty_storage_is_one_line_and_non_zero(tmp_path, capsys, command):
    storage = tmp_path / "benchmarks"
    storage.mkdir()
    argv = ["--storage", str(storage)] + (["--out", str(tmp_path / "out")] if command is report.main else [])
    assert command(argv) != 0
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1 and "no complete benchmark runs" in captured.err
    assert "Traceback" not in captured.err
    assert not (tmp_path / "out" / "REPORT.md").exists()


def test_compare_needs_two_runs(tmp_path, capsys):
    storage = tmp_path / "benchmarks"
    save(storage, 1, run_data())
    assert compare.main(["--storage", str(storage)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_draw_net_writes_both_pictures(tmp_path):
    assert draw_net.main(["--out", str(tmp_path)]) == 0
    for name in ["net_structure.png", "computation_graph.png"]:
        assert (tmp_path / name).read_bytes().startswith(PNG)


def test_draw_net_traces_the_tutorial_graph():
    net, input_shape, target_shape, ops = draw_net.trace()
    names = [draw_net.TUTORIAL_NAMES.get(op["op"], op["op"]) for op in ops]
    assert names == ["conv2d", "relu", "maxpool2d", "conv2d", "relu", "maxpool2d", "view",
                     "linear", "relu", "linear", "relu", "linear", "MSELoss"]
    assert input_shape == (1, 1, 32, 32) and target_shape == (1, 10)
    assert [op["out"] for op in ops][:7] == [(1, 6, 30, 30), (1, 6, 30, 30), (1, 6, 15, 15), (1, 16, 13, 13),
                                             (1, 16, 13, 13), (1, 16, 6, 6), (1, 576)]
    assert ops[0]["params"] == [("conv1.weight", (6, 1, 3, 3)), ("conv1.bias", (6,))]
    assert ops[-1]["out"] == ()


def test_report_writes_atomically_and_only_its_own_files(tmp_path, monkeypatch):
    out = tmp_path / "results"
    storage = out / "benchmarks"
    run = save(storage, 1, run_data())
    (out / "notes.txt").write_text("keep me")
    (out / "REPORT.md").write_text("old report")
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(report.os, "replace", lambda src, dst: (replaced.append(os.path.basename(dst)),
                                                                real_replace(src, dst)))
    assert report.main(["--storage", str(storage), "--out", str(out)]) == 0
    assert sorted(replaced) == ["REPORT.md", "forward_cpu_2t.png", "train_cpu_2t.png"]
    assert (out / "notes.txt").read_text() == "keep me"
    assert "old report" not in (out / "REPORT.md").read_text()
    assert sorted(os.listdir(out)) == ["REPORT.md", "benchmarks", "forward_cpu_2t.png", "notes.txt",
                                       "train_cpu_2t.png"]
    assert os.listdir(run.parent) == [run.name]


def test_malformed_benchmarks_are_skipped_with_one_line(tmp_path, capsys):
    storage = tmp_path / "benchmarks"
    zero_sgemm = run_data()
    zero_sgemm["benchmarks"][-1]["stats"]["median"] = 0.0
    odd_mode = run_data()
    odd_mode["benchmarks"][0]["extra_info"]["mode"] = ["train"]
    odd_mode["benchmarks"][1]["stats"] = {"median": "fast"}
    save(storage, 1, zero_sgemm)
    save(storage, 2, odd_mode)
    assert report.main(["--storage", str(storage), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("warning: skipping ") for line in err[:2]), err
    assert err[2].startswith("python -m bench.report: error: no complete benchmark runs")



@pytest.mark.parametrize("threshold", ["nan", "-0.1", "inf"])
def test_compare_rejects_a_meaningless_threshold(tmp_path, capsys, threshold):
    assert compare.main(["--threshold", threshold, "--storage", str(tmp_path)]) == 2
    assert "--threshold must be a finite number >= 0" in capsys.readouterr().err


def test_report_carries_the_profile_summary_and_links_what_lies_beside_it(tmp_path):
    storage, out = tmp_path / "benchmarks", tmp_path / "results"
    save(storage, 1, run_data())
    out.mkdir()
    (out / "PROFILE.md").write_text(
        "# p\n\n## Summary\n\n| backend | coverage |\n|---|---|\n| eager | 59% |\n\n## eager\n")
    (out / "agreement.md").write_text("# a\n")
    assert report.main(["--storage", str(storage), "--out", str(out)]) == 0
    text = (out / "REPORT.md").read_text()
    assert "## Where the time goes (from PROFILE.md, its own run)\n\n| backend | coverage |" in text
    assert "| eager | 59% |" in text and "## eager\n" not in text
    assert "- [agreement.md](agreement.md):" in text and "[drift.png]" not in text


def test_calibration_sets_runs_side_by_side(tmp_path, capsys):
    from bench.reporting import calibration

    storage, out = tmp_path / "benchmarks", tmp_path / "results"
    save(storage, 1, run_data(when="2026-11-26T00:00:00+00:00"))  # compile 2.00x [1.94, 2.06]
    save(storage, 2, run_data(when="2026-11-26T01:00:00+00:00"))
    # third run: compile reads 2.2x at batch 64 train, outside the others' intervals
    third = run_data(when="2026-11-26T02:00:00+00:00")
    for bench in third["benchmarks"]:
        if bench["name"] == "test_train_step[cpu-64-compile-step-im2col]":
            bench["extra_info"].update(speedup=2.2, speedup_low=2.13, speedup_high=2.27)
    save(storage, 3, third)
    assert calibration.main(["--storage", str(storage), "--out", str(out)]) == 0
    text = (out / "calibration.md").read_text()
    # 4 train and 4 forward cells (compile, torchscript x batch 1, 64), all at 2 threads; train
    # compile b64: spread 2.2/2 = 1.10; its two agreeing runs are consistent, the third with
    # neither (|z| 4.3 > 1.96)
    row = ("| compile-step-im2col | 2 | 64 | 2.00x [1.94, 2.06] | 2.00x [1.94, 2.06] | 2.20x [2.13, 2.27] "
           "| 1.10 | 1/3 |")
    assert row + " 1.06 (9) |" in text  # every process of the three runs: 2.06 / 1.94
    assert ("| 2 threads: (cell, run pair) consistent by the two-sample test, at least 95% | "
            "92% of 24 (train 83%, forward 100%;") in text
    assert "| not met |" in text  # 22 of 24 pairs < 95%
    assert "3 ordered pairs" not in text and "(6 ordered pairs)" in text
    assert calibration.main(["0001", "--storage", str(storage), "--out", str(out)]) == 2
    assert "give at least two runs" in capsys.readouterr().err


def committed_pairs_at_one_commit():
    """Every pair of complete committed runs (results/benchmarks) made at one commit."""
    import itertools

    runs = load.require_runs(os.path.join(REPO, load.DEFAULT_STORAGE))
    by_commit = {}
    for run in runs:
        by_commit.setdefault(run["commit"].get("id"), []).append(run)
    return [pair for group in by_commit.values() for pair in itertools.combinations(group, 2)]


def single_process(run):
    return max(row.processes or 1 for row in run["rows"].values()) == 1


def test_compare_flags_nothing_between_committed_single_process_runs_of_one_commit(capsys):
    """Runs timed in one process (before worker processes) cannot separate a change from a process's
    luck: replayed, no same-commit pair of them may read as a regression (undecided at most). Whether
    multi-process runs of one commit hold still is a measurement, not a test: `python -m bench.compare`
    on the calibration runs, in the README."""
    pairs = [(a, b) for a, b in committed_pairs_at_one_commit() if single_process(a) and single_process(b)]
    assert len(pairs) >= 3
    for base, cand in pairs:
        assert compare.compare_runs(base, cand, 0.10) == [], (base["name"], cand["name"])
        assert compare.compare_runs(cand, base, 0.10) == [], (cand["name"], base["name"])
    capsys.readouterr()


def test_compare_flags_a_runner_slowed_by_20_percent_across_processes(tmp_path, capsys):
    """Three processes per run, each reading apart from the others by 3%: a rerun of the same code
    (processes in another order) flags nothing; the same backend made 20% slower is flagged."""
    storage = tmp_path / "benchmarks"
    base = save(storage, 1, run_data(when="2026-11-26T00:00:00+00:00"))
    rerun = run_data()
    for bench in rerun["benchmarks"]:
        if "pair_ratios" in bench["extra_info"]:
            bench["extra_info"]["pair_ratios"].reverse()
    same = save(storage, 2, rerun)
    slow = save(storage, 3, slowed(run_data(), "torchscript", 1.2))
    assert compare.main([str(base), str(same)]) == 0
    assert compare.main([str(base), str(slow)]) == 1
    flagged = [line for line in capsys.readouterr().out.splitlines() if line.endswith("REGRESSION")]
    assert len(flagged) == 4 and all("torchscript" in line and "+20%" in line for line in flagged)


def test_compare_leaves_a_single_process_change_undecided(tmp_path, capsys):
    """Runs timed in one process (saved before worker processes, or --quick): a 2x change is printed as
    undecided, not judged, since one process cannot tell a regression from its own luck."""
    storage = tmp_path / "benchmarks"
    one = run_data(when="2026-11-26T00:00:00+00:00")
    for bench in one["benchmarks"]:
        bench["extra_info"]["pair_ratios"] = bench["extra_info"].get("pair_ratios", [[]])[:1]
    base = save(storage, 1, one)
    cand = save(storage, 2, slowed(one, "torchscript"))
    assert compare.main([str(base), str(cand)]) == 0
    assert "4 undecided" in capsys.readouterr().out


def test_an_a_a_whose_interval_excludes_1_is_marked(tmp_path):
    storage, out = tmp_path / "benchmarks", tmp_path / "results"
    data = run_data()
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if (info.get("mode"), info.get("batch_size"), info.get("backend")) == ("train", 64, "eager"):
            info.update(speedup=1.08, speedup_low=1.05, speedup_high=1.11)
    save(storage, 1, data)
    assert report.main(["--storage", str(storage), "--out", str(out)]) == 0
    text = (out / "REPORT.md").read_text()
    assert table_row(text, "Training step, cpu", "eager", 64)[5] == "A/A 1.08x [1.05, 1.11] (A/A off 1)"
    assert table_row(text, "Training step, cpu", "eager", 1)[5] == "A/A 1.00x [0.97, 1.03]"


def test_defaults_leave_out_the_version_matrixs_runs(tmp_path, capsys):
    # a run of another torch release (lenet-bench versions) is newer, but the report, compare and
    # calibration defaults are about this checkout's torch: they take the plain runs
    storage = tmp_path / "benchmarks"
    save(storage, 1, run_data(when="2026-11-26T00:00:00+00:00"))
    plain = save(storage, 2, run_data(when="2026-11-27T00:00:00+00:00"))
    matrix = run_data(when="2026-11-28T00:00:00+00:00")
    matrix["lenet_bench"] = {"versions": {"torch_release": "2.15.0"}}
    save(storage, 3, matrix)
    assert load.require_runs(str(storage))[-1]["path"] == str(plain)
    assert load.find_run("0003", str(storage))["versions"] == {"torch_release": "2.15.0"}  # named: used
    assert compare.main(["--storage", str(storage)]) == 0
    assert "0002_" in capsys.readouterr().out
    with pytest.raises(load.RunError, match="1 of the version matrix"):
        load.require_runs(str(storage), 3)


def test_every_committed_run_of_every_schema_still_loads(capsys):
    # the run store holds runs from before worker processes, before the typed record and before the
    # renames; each must read with today's loader, none skipped as malformed
    names = sorted(os.listdir(os.path.join(REPO, load.DEFAULT_STORAGE, "Linux-CPython-3.11-64bit")))
    runs = load.load_runs(os.path.join(REPO, load.DEFAULT_STORAGE))
    assert "warning" not in capsys.readouterr().err
    assert len(runs) == len([name for name in names if name.endswith(".json")]) >= 36
    assert all(run["rows"] and all(key.eager() in run["rows"] for key in run["rows"]) for run in runs)
    rows = [(key, row) for run in runs for key, row in run["rows"].items()]
    assert all(isinstance(row, RunRow) and key == (row.mode, row.device, row.batch, row.backend, row.threads)
               and row.median > 0 and row.time > 0 for key, row in rows)  # typed, and keyed by what it holds


def test_a_recorded_command_shows_no_machine_path():
    from bench.reporting.format import display_command

    inside = os.path.join(REPO, "results", "deployed.json")
    shown = display_command(f"python -m bench.deployed --out /tmp/x/deployed-rerun --json {inside} "
                            "--seconds 0.6")
    assert shown == "python -m bench.deployed --out deployed-rerun --json results/deployed.json --seconds 0.6"
