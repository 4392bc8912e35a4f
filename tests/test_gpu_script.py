"""bench/gpu.sh where CUDA is absent: it stops early with its reason, installs nothing, and
still leaves its summary and archive in OUT."""

import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "bench" / "gpu.sh"

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present: gpu.sh would run in full")


def test_script_never_installs_anything():
    commands = [line.split("#")[0] for line in SCRIPT.read_text().splitlines()]
    assert not [line for line in commands if "pip" in line.split()]


def test_without_cuda_it_stops_after_preflight_with_the_reason_and_packs_what_it_has(tmp_path):
    # pip on PATH records any call: the GPU machine has no network, so the script must not try.
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("pip", "pip3"):
        (fake / name).write_text(f"#!/bin/sh\ntouch {tmp_path}/pip-called\nexit 1\n")
        (fake / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", str(SCRIPT), "out"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot use CUDA here" in result.stdout
    assert not (tmp_path / "pip-called").exists()
    out = tmp_path / "out"  # relative to the caller's folder, not the repository
    assert sorted(p.name for p in out.iterdir()) == ["gpu-results.tar.gz", "summary.txt"]
    summary = (out / "summary.txt").read_text()
    assert "preflight: FAILED" in summary and "stopped after preflight" in summary
    with tarfile.open(out / "gpu-results.tar.gz") as archive:
        names = {Path(name).name for name in archive.getnames()}
    assert {"log.txt", "summary.txt", "nvidia-smi.txt"} <= names
