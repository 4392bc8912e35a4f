"""lenet-bench versions: its arguments, its plan and its resuming, with a fake runner (no venv is
made and nothing is installed here), and the report's change detection."""

import json
import os

import pytest

from bench import REPO, cli, versions, versions_report
from bench.record import RunRow
from bench.runs.load import CellKey


def run_main(argv, capsys, runner=None):
    lines = []
    code = versions.main(argv, runner=runner or (lambda *a: pytest.fail("nothing may run")), out=lines.append)
    return code, lines, capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--torch", "2.14"], "--torch: expected a release like 2.14.1, got '2.14'"),
    (["--torch", "latest"], "--torch: expected a release like 2.14.1, got 'latest'"),
    (["--torch", ","], "--torch: no release given"),
    (["--steps", "tests,bench"], "--steps: unknown step 'bench'"),
    (["--redo", "everything"], "--redo: unknown step 'everything'"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_bad_arguments_are_one_line_and_exit_2(argv, message, capsys):
    code, lines, err = run_main(argv, capsys)
    assert code == 2 and lines == []
    assert err.startswith("lenet-bench versions: error: ") and message in err and err.count("\n") == 1


def test_registered_under_the_one_command_line(capsys):
    assert cli.COMMANDS["versions"][0] == "bench.versions"
    assert cli.main(["versions", "--torch", "x.y.z"]) == 2
    assert capsys.readouterr().err.startswith("lenet-bench versions: error: --torch")


def test_help_states_disk_and_time(capsys):
    with pytest.raises(SystemExit):
        versions.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "GB" in text and "minutes" in text


def test_dry_run_plans_every_step_of_a_new_release(tmp_path, capsys):
    code, lines, _ = run_main(["--torch", "2.15.0", "--venvs", str(tmp_path), "--dry-run",
                               "--lock", "/tmp/x.lock", "--ignore-pip-config"], capsys)
    assert code == 0
    text = "\n".join(lines)
    venv = tmp_path / "torch-2.15.0"
    assert f"-m venv {venv}" in text
    assert "PIP_CONFIG_FILE=/dev/null flock -s /tmp/x.lock" in text and "torch==2.15.0 -e .[dev]" in text
    python = str(venv / "bin" / "python")
    assert f"flock -s /tmp/x.lock {python} -m pytest tests bench --benchmark-disable" in text
    # the default benchmark step is the README's command as is (its own thread counts and processes)
    storage = venv / "runs" / "bench-default"
    assert (f"torch 2.15.0: bench-default: flock -x /tmp/x.lock {python} -m pytest bench --benchmark-only "
            f"--benchmark-storage={storage}") in lines
    assert "--quick" not in text and "--threads" not in text  # the quick runs only when named
    assert list(dict.fromkeys(line.split(": ")[1] for line in lines)) == list(versions.DEFAULT_STEPS)
    assert not venv.exists()  # a dry run makes nothing


def test_the_quick_runs_are_steps_to_name(tmp_path, capsys):
    code, lines, _ = run_main(["--torch", "2.15.0", "--venvs", str(tmp_path), "--dry-run",
                               "--lock", "/tmp/x.lock", "--steps", "bench-1thread,bench-allcores"], capsys)
    assert code == 0 and len(lines) == 2
    assert "bench-1thread: flock -x /tmp/x.lock" in lines[0]
    assert "--benchmark-only --quick --threads 1 " in lines[0]
    assert f"--benchmark-only --quick --threads {os.cpu_count()} " in lines[1]


def fake_runner(calls, fail=()):
    """Records each command; a benchmark command saves a run in its --benchmark-storage as pytest would."""
    def run(command, env, log):
        calls.append(command)
        step = next((s for s in fail if s in " ".join(command)), None)
        for arg in command:
            if arg.startswith("--benchmark-storage="):
                folder = os.path.join(arg.split("=", 1)[1], "Linux-CPython-3.11-64bit")
                os.makedirs(folder, exist_ok=True)
                quick = "--quick" in command  # one process at one thread count, else 3 at 1 and all cores
                threads = [int(command[command.index("--threads") + 1])] if quick else [1, os.cpu_count()]
                run_json = {"machine_info": {"torch": "2.15.0+cu132", "onnxruntime": "1.32.0"},
                            "commit_info": {}, "datetime": "2026-12-06T10:00:00+00:00", "version": "5.3.1",
                            "lenet_bench": {"interrupted": False, "session_seconds": 70.0},
                            "benchmarks": [{"extra_info": {"threads": n, "processes": 1 if quick else 3}}
                                           for n in threads]}
                with open(os.path.join(folder, "0001_abc_20261206_100000_1.json"), "w") as f:
                    json.dump(run_json, f)
        if "pytest" in command and "tests" in command:
            with open(log, "a") as f:
                f.write("===== 188 passed, 53 skipped in 383.0s =====\n")
        return 1 if step else 0
    return run


def test_a_release_runs_its_steps_keeps_tagged_runs_and_resumes(tmp_path, capsys):
    store = tmp_path / "store"
    argv = ["--torch", "2.15.0", "--venvs", str(tmp_path / "venvs"), "--store", str(store),
            "--steps", "tests,bench-default,bench-1thread,bench-allcores"]
    (tmp_path / "venvs" / "torch-2.15.0").mkdir(parents=True)
    calls = []
    code, lines, _ = run_main(argv, capsys, fake_runner(calls))
    assert code == 0, lines
    assert len(calls) == 4
    kept = sorted((store / "Linux-CPython-3.11-64bit").iterdir())
    assert [p.name[:5] for p in kept] == ["0001_", "0002_", "0003_"]
    tags = [json.loads(p.read_text())["lenet_bench"]["versions"] for p in kept]
    assert [t["torch_release"] for t in tags] == ["2.15.0"] * 3 and tags[0]["torch"] == "2.15.0+cu132"
    # each run's tag says its form, for the report to prefer the default run's intervals
    assert [(t["step"], t["processes"], t["threads"]) for t in tags] == [
        ("bench-default", 3, sorted({1, os.cpu_count()})), ("bench-1thread", 1, [1]),
        ("bench-allcores", 1, [os.cpu_count()])]
    state = json.loads((tmp_path / "venvs" / "torch-2.15.0" / versions.STATE_FILE).read_text())
    assert state["steps"]["tests"]["summary"] == "188 passed, 53 skipped in 383.0s"
    # a second call finds everything done and runs nothing; --redo runs one step again
    code, lines, _ = run_main(argv, capsys)
    assert code == 0 and all(" done " in line for line in lines)
    calls.clear()
    assert run_main(argv + ["--redo", "tests"], capsys, fake_runner(calls))[0] == 0
    assert len(calls) == 1 and "tests" in calls[0]


def test_a_failing_step_is_recorded_and_retried_next_time(tmp_path, capsys):
    argv = ["--torch", "2.11.0", "--venvs", str(tmp_path), "--store", str(tmp_path / "store"),
            "--steps", "tests"]
    (tmp_path / "torch-2.11.0").mkdir()
    assert run_main(argv, capsys, fake_runner([], fail=["pytest"]))[0] == 1
    calls = []
    assert run_main(argv, capsys, fake_runner(calls))[0] == 0 and len(calls) == 1


def test_a_failed_install_stops_the_release(tmp_path, capsys):
    calls = []
    code, lines, _ = run_main(["--torch", "2.12.1", "--venvs", str(tmp_path), "--store", str(tmp_path / "s")],
                              capsys, fake_runner(calls, fail=["-m venv"]))
    assert code == 1 and len(calls) == 1 and "install FAILED" in lines[-1]


def test_constraints_drop_torch_and_setuptools_only(tmp_path):
    text = open(versions.constraints_without_torch(str(tmp_path))).read()
    assert "torch==" not in text and "setuptools==" not in text and "onnxruntime==1.32.0" in text


def info(speedup, low, high, agreement="pass"):
    """A row as runs/load.py reads it: only its speedup interval and verdict matter here."""
    return RunRow(mode="train", device="cpu", batch=1, backend="x", threads=1, flops=1.0, median=1.0, iqr=0.0,
                  q1=1.0, q3=1.0, rounds=1, name="x", paired=(speedup, low, high), agreement=agreement)


def test_changes_lists_verdict_changes_and_moves_beyond_both_intervals():
    backends = ("compile-net", "aotinductor", "x")
    key, other, same = (CellKey("train", "cpu", 1, backend, 1) for backend in backends)
    table = {"2.13.0": {key: info(0.6, 0.5, 0.7, "FAIL"), other: info(3.0, 2.9, 3.1),
                        same: info(1, 0.9, 1.1)},
             "2.14.1": {key: info(0.6, 0.5, 0.7), other: info(3.5, 3.4, 3.6), same: info(1.05, 1.0, 1.2)}}
    found = versions_report.changes(table, ["2.13.0", "2.14.1"])
    assert [(k, what.split()[0]) for k, _, _, what in found] == [(other, "speedup"), (key, "verdict")]


def test_the_page_is_written_from_the_committed_matrix_runs(tmp_path):
    # through the run loader: every release's two tagged runs, the zero-gradient rows left to the
    # venvs' records (none here), and the chart
    lines = []
    versions_report.write(os.path.join(REPO, "results", "benchmarks"), str(tmp_path), str(tmp_path / "venvs"),
                          out=lines.append)
    text = (tmp_path / "versions.md").read_text()
    assert lines[0].endswith("of 5 releases")
    newest = versions_report.versions_runs(os.path.join(REPO, "results", "benchmarks"))["2.13.0"]
    for run, threads in versions_report.by_run(newest):  # torch 2.13.0's runs, named as the loader read them
        assert versions_report.run_text(run, threads) in text and f"{run['session_seconds']:.0f} s)" in text
    assert "| train | 1 | 1 | compile-net |" in text and (tmp_path / "versions.png").stat().st_size > 0


def test_the_page_says_which_releases_rest_on_quick_runs():
    def run(name, release, processes):
        row = info(1.0, 0.9, 1.1)
        row.processes = processes
        return {"name": name, "rows": {CellKey("train", "cpu", 1, "x", 1): row}, "session_seconds": 1.0,
                "versions": {"torch_release": release}}
    default, quick = run("0040_a", "2.14.1", 3), run("0041_b", "2.15.0", 1)
    text = versions_report.form_text({"2.14.1": {1: default, 2: default}, "2.15.0": {1: quick}})
    assert "3 worker processes per cell" in text and "--quick --threads N` for 2.15.0 (one worker" in text
    assert versions_report.by_run({1: default, 2: default}) == [(default, [1, 2])]
    assert "for 2.14.1" not in versions_report.form_text({"2.14.1": {1: default}})
