"""The one command line: `lenet-bench COMMAND` runs each command's own main under its name."""

import importlib
import subprocess
import sys

import pytest

from bench import cli


def test_every_command_names_a_module_with_a_main():
    modules = [module for module, _ in cli.COMMANDS.values() if module] + list(cli.STUDIES.values())
    for module in modules:
        assert callable(importlib.import_module(module).main), module


@pytest.mark.parametrize("argv, message", [
    (["bogus"], "lenet-bench: error: unknown command 'bogus'; choose from: run, report"),
    (["study"], "lenet-bench study: error: name a study: compile, blocks, autotune, compile-time"),
    (["study", "nope"], "lenet-bench study: error: name a study"),
    (["compare", "9999", "--storage", "/nonexistent"], "lenet-bench compare: error: "),
    (["calibration", "--storage", "/nonexistent"], "lenet-bench calibration: error: "),
])
def test_a_bad_command_line_is_one_line_and_exit_2(capsys, argv, message):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err
    assert cli.prog("python -m bench.compare") == "python -m bench.compare"  # the name is given back


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in cli.COMMANDS)
    assert cli.main([]) == 2  # no command: the same help, and a failing status


def test_python_m_bench_is_the_same_command_line():
    result = subprocess.run([sys.executable, "-m", "bench", "study"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("lenet-bench study: error: name a study: compile, blocks")
