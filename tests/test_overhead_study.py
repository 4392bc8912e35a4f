"""lenet-bench study overhead: a tiny real run (batch 1, fractions of a second of timing) whose split
must add up to the measured step and whose files are written; the split's arithmetic; bad input."""

import json
import os

import pytest
import torch

from bench import cli
from bench.studies import overhead_study as study

COMPILE_KINDS = ["guards", "wrappers", "inductor_call", "aot_backward"]


def rows_of(kind):
    return [label for _, k, label in study.ROWS if k == kind]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """main() end to end at 1 thread, batch 1; the child process replaced by the child's own main
    in this process (the same argument parsing and result file, without a second compilation)."""
    out = tmp_path_factory.mktemp("out")
    threads_before = torch.get_num_threads()

    def child_in_process(module, arguments, threads=None, progress=None, **_):
        assert module == study.MODULE and threads == 1
        path = str(out.parent / "child.json")
        try:
            assert study.main([*map(str, arguments), "--result", path]) == 0
        finally:
            torch.set_num_threads(threads_before)  # the child's main sets this process's threads
        with open(path) as f:
            return json.load(f)

    patch = pytest.MonkeyPatch()
    patch.setattr(study.process, "run", child_in_process)
    try:
        assert study.main(["--threads", "1", "--batch-sizes", "1", "--seconds", "0.3",
                           "--profile-seconds", "0.05", "--out", str(out)]) == 0
    finally:
        patch.undo()
    return out


def test_the_split_adds_up_to_the_measured_step(tiny_run):
    data = json.loads((tiny_run / "compile_overhead.json").read_text())
    [result] = data["results"]
    [cell] = result["cells"]
    assert (result["threads"], cell["batch"]) == (1, 1)
    for name in study.BACKENDS:
        b = cell["backends"][name]
        assert set(b["rows"]) == {label for _, _, label in study.ROWS} | {study.REMAINDER}
        assert sum(b["rows"].values()) == pytest.approx(b["step"], rel=1e-9)
        assert (b["kernels"] + b["outside_kernels"] + b["rows"][study.REMAINDER]
                == pytest.approx(b["step"], rel=1e-9))
        assert b["outside_kernels"] <= b["outside_kernels_profiled"] * 1.5  # the profile bounds it, roughly
        # each stage's rows are its un-profiled time, none negative
        for stage in study.STAGES:
            stage_rows = [b["rows"][label] for s, _, label in study.ROWS if s == stage]
            assert min(stage_rows) >= 0, (name, stage, stage_rows)
        # the staged step is the runner's step: what is left over is small beside it
        assert abs(b["rows"][study.REMAINDER]) < 0.35 * b["step"], b["rows"][study.REMAINDER]
        # every span fell into a known row (a span torch renames would land in "other")
        assert b["rows"][study.OTHER_ROW] < 0.1 * b["outside_kernels"]
    compiled, eager = cell["backends"]["compile-net"], cell["backends"]["eager"]
    for kind in COMPILE_KINDS:  # torch.compile's spans were found in compile-net's profile, not eager's
        assert all(compiled["rows"][label] > 0 for label in rows_of(kind)), kind
        assert all(eager["rows"][label] == 0 for label in rows_of(kind)), kind
    # compile-net's profiled build had Inductor's kernels as ranges; eager has none
    assert compiled["inductor_kernel_ranges"] > 0
    assert eager["inductor_kernel_ranges"] == 0
    assert compiled["rows"][rows_of("kernels")[0]] > 0 and eager["rows"][rows_of("kernels")[0]] > 0
    assert cell["ratio"][1] <= cell["ratio"][0] <= cell["ratio"][2]
    assert 0 < cell["guard_check"] < compiled["stages"]["forward"]  # the guards alone, un-profiled


def test_the_report_is_written_whole_with_its_figures(tiny_run):
    assert sorted(os.listdir(tiny_run)) == ["compile_overhead.json", "compile_overhead.md"]  # no temp files
    text = (tiny_run / "compile_overhead.md").read_text()
    data = json.loads((tiny_run / "compile_overhead.json").read_text())
    [cell] = data["results"][0]["cells"]
    assert f"torch {torch.__version__}" in text and "Date: " in text
    assert ("Reproduce: `lenet-bench study overhead --threads 1 --batch-sizes 1 --seconds 0.3 "
            "--profile-seconds 0.05 --out ") in text
    assert "### 1 thread, batch 1" in text
    for name in study.BACKENDS:
        assert study.us(cell["backends"][name]["step"]) in text
    assert study.GUARD_ROW in text and study.REMAINDER in text


def test_split_rows_arithmetic():
    """Each stage's un-profiled time in its profiled proportions; a category with no row goes to other."""
    unprofiled = {"step": 10.0, "staged_total": len(study.STAGES), "stages": dict.fromkeys(study.STAGES, 1.0)}
    profiled = {stage: {"split": {"python": 3.0, "kernels": 1.0}} for stage in study.STAGES}
    profiled["forward"]["split"] = {"guards": 1.0, "kernels": 1.0, "nameless": 2.0}
    profiled["zero_grad"]["split"] = {"python": 1.0}  # it has no kernel row: kernels there would be other
    rows, raw = study.split_rows(unprofiled, profiled)
    assert raw[study.GUARD_ROW] == 1.0 and raw[study.OTHER_ROW] == 2.0
    assert sum(rows.values()) == pytest.approx(10.0)
    assert rows[study.REMAINDER] == pytest.approx(10.0 - len(study.STAGES))
    assert rows[study.GUARD_ROW] == pytest.approx(0.25)
    assert rows[study.OTHER_ROW] == pytest.approx(0.5)
    assert rows[rows_of("kernels")[-1]] == pytest.approx(0.25)  # the optimizer's


@pytest.mark.parametrize("argv, message", [
    (["--seconds", "0"], "expected a positive number of seconds"),
    (["--threads", "x"], "expected a positive integer"),
    (["--batch-sizes", ""], "empty list"),
    (["--bogus"], "unrecognized arguments"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    assert cli.main(["study", "overhead", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lenet-bench study overhead: error: "), err
    assert message in err[0], err
