"""Deployed inference: each runtime's deployed form of the Net, built once into an artifact on disk
and loaded from it, weights constant and gradients off (docs/deployed.md).

One module per runtime, each with the same small surface:
  unavailable() -> str | None       why it cannot run here (a missing package), or None
  artifact(threads) -> str          its file name in the artifacts folder
  build(state_dict, path, threads)  write that file, whole or absent
  load(path, threads, mode) -> call  a callable taking a (B, 1, 32, 32) float32 tensor and returning
                                     the (B, 10) output; mode "latency" (batch 1) or "throughput"
  EXPECTED                           what the file must be, for the one-line error
  SETTINGS                           the settings it deploys with, as recorded in the results

`load_artifact` checks the file first and turns any failure into one ArtifactError line naming the
file and what was expected. The commands: `python -m export.deploy` (write every artifact) and
`python -m bench.deployed` (measure them; bench/deployed/__main__.py).
"""

import importlib
import os
import zipfile

EAGER = "eager"
# Configuration name -> module. Several configurations may share a module (torch.compile's three).
CONFIGS = {
    EAGER: "bench.deployed.inference_mode",
    "compile": "bench.deployed.compiled",
    "compile-frozen": "bench.deployed.compiled",
    "compile-frozen-autotune": "bench.deployed.compiled",
    "aotinductor": "bench.deployed.aoti_package",
    "torchscript": "bench.deployed.torchscript_frozen",
    "onnxruntime": "bench.deployed.ort_optimized",
    "openvino": "bench.deployed.openvino",
    "executorch": "bench.deployed.executorch",
}
# What is not measured, and why (reported with the results).
NOT_MEASURED = {
    "executorch": "executorch 1.5.1 would install beside torch 2.13.0 without replacing it, but its "
    "Python bindings (_C, linked to libtorch) are built for another torch and fail to "
    "load against it; see docs/deployed.md",
}


class ArtifactError(Exception):
    """An artifact that is missing, truncated or of another kind; the message is one line."""


def runtime(config):
    """The module behind configuration `config`, set up for that configuration."""
    if config not in CONFIGS:
        raise ValueError(f"unknown deployed configuration {config!r}; choose from: {', '.join(CONFIGS)}")
    module = importlib.import_module(CONFIGS[config])
    return module.configured(config) if hasattr(module, "configured") else module


def artifact_path(folder, config, threads):
    return os.path.join(folder, runtime(config).artifact(threads))


def first_line(error):
    return (str(error).splitlines() or [""])[0] or type(error).__name__


def check_file(path, expected, zip_archive=False):
    """ArtifactError unless `path` is a non-empty file (and, for formats stored as zip archives:
    torch.save, TorchScript, .pt2, a zip archive whose directory is intact, which a truncated one's
    is not)."""
    if not os.path.isfile(path):
        raise ArtifactError(f"{path}: missing; expected {expected} (write it with python -m export.deploy)")
    size = os.path.getsize(path)
    if size == 0:
        raise ArtifactError(f"{path}: empty; expected {expected}")
    if zip_archive and not zipfile.is_zipfile(path):
        raise ArtifactError(
            f"{path}: not a whole zip archive ({size} bytes: truncated or another kind of "
            f"file); expected {expected}"
        )


def load_artifact(config, path, threads, mode="latency"):
    """runtime(config).load(...), any failure one ArtifactError line naming the file."""
    module = runtime(config)
    check = getattr(module, "check", None)
    if check is not None:
        check(path)
    try:
        return module.load(path, threads, mode)
    except ArtifactError:
        raise
    except Exception as error:
        raise ArtifactError(
            f"{path}: cannot be loaded as {module.EXPECTED}: {type(error).__name__}: {first_line(error)}"
        ) from None
