"""bench.autotune_study without measuring: bad arguments are one line, and --render rewrites
autotune.md/.json whole from a saved autotune.json."""

import json
import os

import pytest

from bench.studies import autotune_study

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("argv, message", [
    (["--batch-sizes", "1,0"], "argument --batch-sizes: expected a positive integer, got '0'"),
    (["--repeats", "0"], "argument --repeats: expected a positive integer, got '0'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--render", "/nonexistent/autotune.json"], "--render: [Errno 2] No such file or directory"),
])
def test_bad_arguments_are_one_line(argv, message, capsys, tmp_path):
    assert autotune_study.main([*argv, "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"python -m bench.autotune_study: error: {message}"), captured.err
    assert not (tmp_path / "out").exists()


def test_render_writes_both_files_whole(tmp_path):
    saved = os.path.join(ROOT, "results", "autotune.json")
    out = tmp_path / "out"
    assert autotune_study.main(["--render", saved, "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["autotune.json", "autotune.md"]  # no temporary file left
    data = json.loads((out / "autotune.json").read_text())
    original = json.load(open(saved))
    assert data["runs"] == original["runs"] and data["verdict"] == original["verdict"]
    assert (out / "autotune.md").read_text() == autotune_study.markdown(data)
