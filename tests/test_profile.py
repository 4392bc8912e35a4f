"""bench.profile and bench.compile_time: small real runs, the trace and table arithmetic, bad arguments.

Kept fast: the profiles are batch 1 with a few steps; compile_time's cold/warm bookkeeping is tested
with a stand-in measurement, its real subprocess path on eager (no compilation, a few seconds).
"""

import json
import os
import re
import subprocess
import sys
import tempfile

import pytest
import torch

import model
from bench import backends
from bench.studies import compile_time, profile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COVERAGE = re.compile(r"Op self times cover ([\d.]+)% of the benchmarked build's wall time")


def run_profile(tmp_path, monkeypatch, backend):
    scratch = tmp_path / "scratch"  # where the profiler's temporary files go
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    out = tmp_path / "out"
    assert profile.main(["--backends", backend, "--batch-sizes", "1", "--steps", "3", "--out", str(out)]) == 0
    assert os.listdir(out) == ["PROFILE.md"]  # atomic: no temporary file left beside it
    left = [os.path.join(d, f) for d, _, files in os.walk(scratch) for f in files if f.endswith(".json")]
    assert left == [] and not [d for d in os.listdir(scratch) if d.startswith("lenet-ort-profile-")]
    return (out / "PROFILE.md").read_text()


def section(text, title):
    start = text.index(title)
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_profile_eager(tmp_path, monkeypatch):
    text = run_profile(tmp_path, monkeypatch, "eager")
    assert text.startswith("# Where the training step's time goes")
    assert "## Summary" in text
    part = section(text, "## eager, batch 1")
    assert "Wall time per step of the benchmarked build:" in part
    assert "| op | calls/step | self us/step | share of benchmarked wall |" in part
    ops = re.findall(r"^\| `([^`]+)` \|", part, re.M)
    assert 3 <= len(ops) <= profile.TOP_OPS and all(op.startswith("aten::") for op in ops)
    assert "Where the time goes:" in part
    coverage = float(COVERAGE.search(part).group(1))
    assert coverage > 0
    if coverage <= 100:  # the profiler inflates eager's op times too: on a busy machine they can exceed it
        assert "is outside kernels: Python, dispatch" in part
    else:
        assert "the instrumented kernels alone exceed the benchmarked step" in part
    assert "| eager | 1 |" in section(text, "## Summary")


def test_profile_compile_shows_its_kernels_and_times_the_benchmarked_build_apart(tmp_path, monkeypatch):
    reason = backends.unavailable("compile-step-im2col", "cpu")
    if reason:
        pytest.skip(reason)
    torch._dynamo.reset()
    built_first = backends.create("compile-step-im2col", model.make_net().state_dict())
    built_first.train_step(*model.make_batch(1))
    text = run_profile(tmp_path, monkeypatch, "compile-step-im2col")
    part = section(text, "## compile-step-im2col, batch 1")
    ops = re.findall(r"^\| `([^`]+)` \|", part, re.M)
    assert any(op.startswith("cpp_fused") for op in ops), ops  # the instrumented build, not a reused one
    assert "The build profiled here has Inductor's per-kernel ranges compiled in" in part


def test_profile_onnxruntime(tmp_path, monkeypatch):
    reason = backends.unavailable("onnxruntime", "cpu")
    if reason:
        pytest.skip(reason)
    text = run_profile(tmp_path, monkeypatch, "onnxruntime")
    part = section(text, "## onnxruntime, batch 1")
    assert "ONNX Runtime profiler" in part
    ops = re.findall(r"^\| `([^`]+)` \| ([\d.]+) \|", part, re.M)
    assert ops and not any(op.startswith("aten::") for op, _ in ops)  # ONNX op types, from ORT's trace
    coverage = float(COVERAGE.search(part).group(1))
    assert coverage > 0
    if coverage <= 100:
        assert "is outside kernels: ONNX Runtime's session run" in part
    assert "Python" not in part.split("**Where the time goes:**")[1]


def test_ort_trace_counts_only_the_last_runs():
    trace = [{"cat": "Session", "name": "session_initialization", "ts": 0, "dur": 50}]
    for run, start in enumerate((100, 200, 300)):
        trace.append({"cat": "Session", "name": "model_run", "ts": start, "dur": 50})
        trace.append({"cat": "Node", "name": f"n{run}_kernel_time", "ts": start + 5, "dur": 10,
                      "args": {"op_name": "Conv"}})
        trace.append({"cat": "Node", "name": f"m{run}_kernel_time", "ts": start + 20, "dur": 4,
                      "args": {"op_name": "Relu"}})
    ops = profile.ort_node_times(trace, steps=2)
    assert ops == {"Conv": (2, pytest.approx(20e-6)), "Relu": (2, pytest.approx(8e-6))}
    with pytest.raises(RuntimeError, match="3 runs"):
        profile.ort_node_times(trace, steps=4)


def test_coverage_is_op_self_time_over_the_benchmarked_wall():
    ops = {"aten::convolution_backward": (20, 0.004), "aten::mm": (60, 0.002)}
    overhead = {"Optimizer.step#SGD.step": (10, 0.001)}
    result = profile.summarise("eager", 1, 10, 0.001, 0.0012, ops, overhead, 0.0, "tool")
    assert result["kernel"] == pytest.approx(0.0006)
    assert result["benchmarked_wall"] == 0.001  # eager: the profiled build is the benchmarked one
    assert result["coverage"] == pytest.approx(0.6)
    assert result["top"][0] == ("aten::convolution_backward", (2, pytest.approx(0.0004)))
    line = profile.where_line(result)
    assert "convolution backward 40%, matmul (linear layers) 20% of the benchmarked build's step" in line
    assert "cover 60% of the benchmarked build's wall time" in line
    assert "the other 40% is outside kernels: Python, dispatch" in line


def aotinductor_result(benchmarked_wall):
    """aotinductor at batch 1 as in the committed PROFILE.md: instrumented 704 us, profiled 811 us."""
    ops = {"aoti_torch_cpu_mm_out": (60, 0.0008), "cpp_fused_relu_0": (10, 0.0012)}
    return profile.summarise("aotinductor", 1, 10, 704e-6, 811e-6, ops, {}, 0.0, "tool", benchmarked_wall)


def test_aotinductor_remainder_is_not_labelled_python():
    result = aotinductor_result(277e-6)
    assert result["coverage"] == pytest.approx(200e-6 / 277e-6)  # against the benchmarked build, not 704 us
    line = profile.where_line(result)
    assert ("cover 72% of the benchmarked build's wall time; the other 28% is outside kernels: "
            "AOTInductor's C++") in line
    assert "Python" not in line and "dispatch" not in line
    text = profile.render([result], {}, {"date": "d", "threads": 2, "steps": 10, "command": "c"})
    summary = section(text, "## Summary")
    assert "| aotinductor | 1 | 277 | 704 | 811 | 2.93x | 200 | 72% | 28%: AOTInductor's C++" in summary
    assert "Python" not in summary.split("| aotinductor |")[1]
    for name in ("aotinductor", "onnxruntime"):  # no Python inside either step
        label = backends.outside_kernels(name)
        assert "Python" not in label and "dispatch" not in label


def test_kernels_exceeding_the_benchmarked_wall_are_called_out():
    line = profile.where_line(aotinductor_result(150e-6))  # 200 us of kernels against a 150 us step
    assert "cover 133% of the benchmarked build's wall time" in line
    assert "the instrumented kernels alone exceed the benchmarked step" in line
    assert "outside kernels:" not in line


def test_kernels_and_wrappers_are_told_apart():
    for name in ["aten::mm", "aoti_torch_cpu_mm_out", "graph_0_cpp_fused_relu_3", "cpp_fused_add_0"]:
        assert profile.is_kernel(name), name
    for name in ["Optimizer.step#SGD.step", "autograd::engine::evaluate_function: AddmmBackward0",
                 "AddmmBackward0", "Torch-Compiled Region: 0/0", "TorchDynamo Cache Lookup",
                 "## Call CompiledFxGraph abc ##", "detach", "forward"]:
        assert not profile.is_kernel(name), name


def fake_measure(calls):
    def measure(backend, batch_size, cache_dir):
        calls.append((backend, batch_size, cache_dir, sorted(os.listdir(cache_dir))))
        warm = len([c for c in calls if c[2] == cache_dir]) > 1
        with open(os.path.join(cache_dir, "entry"), "w") as f:  # what a compile leaves in the cache
            f.write("x")
        return {"create_s": 0.5, "export_s": None, "session_s": None,
                "first_train_step_s": 2.0 if warm else 20.0, "first_forward_s": 0.3 if warm else 4.0,
                "next_train_step_s": 1e-3, "next_forward_s": 4e-4, "process_s": 30.0,
                "cache": {"inductor.fxgraph_cache_hit": 2} if warm else {"inductor.fxgraph_cache_miss": 2},
                "threads": 2, "torch": "2.13.0+cpu"}
    return measure


def test_compile_time_cold_and_warm_rows(tmp_path, capsys):
    calls = []
    out = tmp_path / "out"
    argv = ["--backends", "compile-step-im2col,compile-step", "--batch-size", "8", "--out", str(out)]
    assert compile_time.main(argv, measure_one=fake_measure(calls)) == 0
    # per backend: a fresh empty cache folder for the cold run, the same folder again for the warm run
    assert [(b, n, files) for b, n, _, files in calls] == [
        ("compile-step-im2col", 8, []), ("compile-step-im2col", 8, ["entry"]),
        ("compile-step", 8, []), ("compile-step", 8, ["entry"])]
    assert calls[0][2] == calls[1][2] != calls[2][2] == calls[3][2]
    assert not any(os.path.exists(c[2]) for c in calls)  # removed afterwards
    assert sorted(os.listdir(out)) == ["compile_time.json", "compile_time.md"]
    data = json.loads((out / "compile_time.json").read_text())
    assert [(r["backend"], r["run"]) for r in data["rows"]] == [
        ("compile-step-im2col", "cold"), ("compile-step-im2col", "warm"), ("compile-step", "cold"),
        ("compile-step", "warm")]
    assert data["rows"][0]["first_train_step_s"] == 20.0 and data["rows"][1]["first_train_step_s"] == 2.0
    assert data["settings"]["batch_size"] == 8
    md = (out / "compile_time.md").read_text()
    assert "| compile-step-im2col | cold | 0.5 | - | - | 20 | 4 |" in md
    assert "| compile-step-im2col | warm | 0.5 | - | - | 2 | 0.3 |" in md and "FX graph 2 hit / 0 miss" in md
    printed = capsys.readouterr().out
    assert "compile-step  warm" in printed and "first train_step s" in printed


def test_compile_time_real_processes(tmp_path):
    """The real path: two fresh processes; eager compiles nothing, so this takes seconds."""
    out = tmp_path / "out"
    assert compile_time.main(["--backends", "eager", "--batch-size", "1", "--out", str(out)]) == 0
    rows = json.loads((out / "compile_time.json").read_text())["rows"]
    assert [r["run"] for r in rows] == ["cold", "warm"]
    for row in rows:
        assert "error" not in row
        assert 0 < row["first_train_step_s"] < row["process_s"] and 0 < row["first_forward_s"]
        assert row["torch"] and row["threads"] >= 1


def test_compile_time_reports_a_failing_process(tmp_path):
    out = tmp_path / "out"
    assert compile_time.main(["--backends", "eager", "--out", str(out)],
                             measure_one=lambda *a: {"error": "exit 1: RuntimeError: boom"}) == 1
    assert "error: exit 1: RuntimeError: boom" in (out / "compile_time.md").read_text()


@pytest.mark.parametrize("module, argv, message", [
    (profile, ["--backends", "nope"], "unknown backend 'nope'"),
    (profile, ["--backends", ""], "--backends: empty"),
    (profile, ["--backends", "compile-step-im2col-cudagraphs"],
     "compile-step-im2col-cudagraphs cannot run on cpu"),
    (profile, ["--batch-sizes", "1,0"], "expected a positive integer, got '0'"),
    (profile, ["--steps", "x"], "expected a positive integer, got 'x'"),
    (profile, ["--bogus"], "unrecognized arguments: --bogus"),
    (compile_time, ["--backends", "compile-step,nope"], "unknown backend 'nope'"),
    (compile_time, ["--batch-size", "-1"], "expected a positive integer, got '-1'"),
    (compile_time, ["--backends", "compile-step-im2col-cudagraphs"],
     "compile-step-im2col-cudagraphs cannot run on cpu"),
])
def test_bad_arguments_one_line(module, argv, message, capsys, tmp_path):
    assert module.main([*argv, "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert lines[0].startswith(f"python -m bench.{module.__name__.rsplit('.', 1)[-1]}: error:")
    assert not (tmp_path / "out").exists()


def test_bad_arguments_exit_status():
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-m", "bench.profile", "--batch-sizes", "abc"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "--batch-sizes" in done.stderr


def test_kernel_groups_against_eager():
    eager = profile.summarise("eager", 64, 10, 5e-3, 6e-3, {
        "aten::max_pool2d_with_indices": (20, 0.010), "aten::convolution_backward": (20, 0.012),
        "aten::mm": (60, 0.004), "aten::relu": (20, 0.002)}, {}, 0.0, "tool")
    compiled = profile.summarise("compile-net", 64, 10, 9e-3, 9e-3, {
        "graph_1_cpp_fused_max_pool2d_with_indices_relu_threshold_backward_1": (10, 0.040),
        "graph_2_cpp_fused_convolution_backward_max_pool2d_with_indices_backward_3": (10, 0.010),
        "aten::convolution_backward": (20, 0.014), "aten::mm": (60, 0.004),
        "graph_2_cpp_fused_sum_threshold_backward_4": (10, 0.001)}, {}, 0.0, "tool", 8e-3)
    assert compiled["groups"] == pytest.approx({"pooling": 5e-3, "convolution": 1.4e-3, "matmul": 0.4e-3,
                                                "elementwise and other kernels": 0.1e-3})
    text = "\n".join(profile.group_comparison([eager, compiled]))
    assert "### Batch 64" in text
    # eager: 2.8 ms of kernels in a 5 ms step leaves 2.2 ms outside; compile-net's profiled build: 6.9 of
    # 9 ms, 2.1 outside (its benchmarked build took 8 ms)
    assert "| eager | 5,000 | 1.00x | 5,000 | 1,000 | 1,200 | 400 | 200 | 2,200 |" in text
    assert ("| compile-net | 8,000 | 0.62x | 9,000 | 5,000 (+4,000) | 1,400 (+200) | 400 (+0.0) "
            "| 100 (-100) | 2,100 (-100) |") in text
    assert "- compile-net: pooling +4,000, convolution +200 us/step" in text
    assert profile.group_comparison([compiled]) == []  # nothing to compare without eager
