"""Deployed inference (bench/deployed, export/deploy.py): every configuration built, loaded and
agreeing with float64 eager once; clear one-line errors for truncated and foreign artifacts; the
export refusing to overwrite; the measuring command end to end on a tiny budget."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import model
from bench import REPO, deployed
from bench.deployed import deployed_report as report
from bench.deployed import deployed_worker as worker
from export import deploy

REPO_ROOT = Path(__file__).resolve().parents[1]
THREADS = 1
BATCH = 8  # one batch size: each torch.compile configuration compiles once


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """Every artifact built once, for one thread, into a temporary folder."""
    folder = tmp_path_factory.mktemp("deployed")
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        rows, skipped = deploy.deploy(folder, list(deployed.CONFIGS), [THREADS], log=lambda line: None)
    finally:
        torch.set_num_threads(before)
    return folder, rows, skipped


@pytest.mark.parametrize("config", list(deployed.CONFIGS))
def test_every_configuration_loads_and_agrees(artifacts, config):
    folder, _, skipped = artifacts
    if config in skipped:
        pytest.skip(f"{config}: {skipped[config]}")
    path = deployed.artifact_path(folder, config, THREADS)
    call = deployed.load_artifact(config, path, THREADS, "throughput")
    rows = worker.judge_outputs(call, deployed.artifact_path(folder, deployed.EAGER, THREADS), [BATCH])
    assert rows[BATCH]["status"] == "pass", rows
    assert tuple(torch.as_tensor(call(model.make_batch(BATCH)[0])).shape) == (BATCH, model.NUM_OUTPUTS)


def test_net_onnx_keeps_weights_as_initializers_not_inputs(artifacts):
    onnx = pytest.importorskip("onnx")
    folder, _, _ = artifacts
    graph = onnx.load(os.path.join(folder, "net.onnx")).graph
    assert [i.name for i in graph.input] == ["input"]
    names = {i.name for i in graph.initializer}
    assert len(names) >= len(model.make_net(0).state_dict())  # the weights, and export's own constants


def _one_line(error):
    text = str(error.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("config", ["eager", "aotinductor", "torchscript", "onnxruntime"])
def test_truncated_artifact_is_one_clear_line(artifacts, tmp_path, config):
    folder, _, skipped = artifacts
    if config in skipped:
        pytest.skip(f"{config}: {skipped[config]}")
    source = deployed.artifact_path(folder, config, THREADS)
    path = tmp_path / os.path.basename(source)
    data = Path(source).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(deployed.ArtifactError) as error:
        deployed.load_artifact(config, str(path), THREADS)
    text = _one_line(error)
    assert str(path) in text and "expected" in text
    assert path.read_bytes() == data[: len(data) // 2]  # nothing rewritten


@pytest.mark.parametrize(
    "config, foreign",
    [
        ("torchscript", "net.pt"),
        ("eager", "net-torchscript.pt"),
        ("onnxruntime", "net.pt"),
        ("aotinductor", "net.pt"),
    ],
)
def test_foreign_artifact_is_one_clear_line(artifacts, config, foreign):
    folder, _, skipped = artifacts
    if config in skipped:
        pytest.skip(f"{config}: {skipped[config]}")
    path = str(folder / foreign)
    with pytest.raises(deployed.ArtifactError) as error:
        deployed.load_artifact(config, path, THREADS)
    text = _one_line(error)
    assert path in text and deployed.runtime(config).EXPECTED in text


def test_missing_artifact_names_the_command(tmp_path):
    with pytest.raises(deployed.ArtifactError) as error:
        deployed.load_artifact("eager", str(tmp_path / "net.pt"), THREADS)
    assert "python -m export.deploy" in _one_line(error)


def _run(*args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": str(THREADS)}
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_export_refuses_an_existing_folder_without_force(artifacts, tmp_path):
    folder, _, _ = artifacts
    out = tmp_path / "again"
    shutil.copytree(folder, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    done = _run("export.deploy", "--out", str(out), "--threads", "1")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "exists; pass --force" in done.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_export_bad_arguments_are_one_line(tmp_path):
    done = _run("export.deploy", "--out", str(tmp_path), "--configs", "eager,nonsense")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "nonsense" in done.stderr
    assert not any(tmp_path.iterdir())


def test_command_end_to_end(artifacts, tmp_path):
    """The measuring command on a tiny budget: its JSON, report and chart, and its refusal to
    overwrite them without --force."""
    folder, _, _ = artifacts
    args = [
        "bench.deployed",
        "--artifacts",
        str(folder),
        "--configs",
        "eager",
        "--threads",
        "1",
        "--processes",
        "2",
        "--calls",
        "50",
        "--seconds",
        "0.05",
        "--batches",
        "16",
        "--out",
        str(tmp_path),
    ]
    done = _run(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads((tmp_path / "deployed.json").read_text())
    (cell,) = data["summary"]["cells"]
    assert cell["status"] == "pass" and cell["processes"] == 2
    assert set(cell["latency_s"]) == {"p50", "p90", "p99"}
    git = ["git", "-C", REPO, "rev-parse", "HEAD"]
    commit = subprocess.run(git, capture_output=True, text=True).stdout.strip()
    text = (tmp_path / "DEPLOYED.md").read_text()
    assert text.startswith("# Deployed inference")
    if commit:  # the run names the code that made it (None outside a git checkout)
        assert data["commit"]["id"] == commit and f"commit {commit[:7]}" in text
    assert (tmp_path / "deployed.png").stat().st_size > 0
    again = _run(*args)
    assert again.returncode == 2 and "pass --force" in again.stderr


def _cell(config, latency_ratios, throughput_ratios, status="pass"):
    run = {
        "artifact": "a",
        "artifact_bytes": 1,
        "latency_calls": 1000,
        "settings": {},
        "latency_s": {"p50": 1e-4, "p90": 1.1e-4, "p99": 2e-4},
        "latency_paired": {"ratios": latency_ratios},
        "cold_start_s": 0.1,
        "cold_load_s": 0.05,
        "cold_first_call_s": 0.05,
        "cold_import_s": 0.0,
        "warm_start_s": 0.01,
        "memory_held_bytes": 1,
        "peak_bytes": {"1": 0, "256": 0},
        "throughput": {"256": {"samples_per_s": 1e4, "ratios": throughput_ratios}},
        "agreement": {"1": {"status": status, "max_ratio": 0.5}},
    }
    return {"config": config, "threads": 1, "processes": [run, run], "failures": [], "skipped": None}


def test_targets_answered_from_intervals():
    data = {
        "threads": [1],
        "cells": [
            _cell("eager", [1.0, 1.0], [1.0, 1.0]),
            _cell("fast", [6.0, 6.1, 5.9], [2.0, 2.1, 1.9]),
            _cell("wrong", [50.0, 51.0], [50.0, 51.0], status="FAIL"),
        ],
    }
    summary = report.summarize(data)
    latency, throughput = summary["targets"]
    assert latency["config"] == "fast" and latency["verdict"] == "met"  # "wrong" failed agreement
    assert throughput["config"] == "fast" and throughput["verdict"] == "not met"
    assert report.verdict((5.2, 4.5, 6.0), 5.0).startswith("undecided")
