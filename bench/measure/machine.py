"""What every benchmark records beside its timing: FLOPs, versions, machine."""

import functools
import importlib.metadata
import os
import platform
import subprocess

import torch
from torch.utils.flop_counter import FlopCounterMode

import model


@functools.cache
def count_flops(mode, batch_size):
    """FLOPs of one timed unit, counted by torch.utils.flop_counter on the eager Net.

    It counts the convolutions and matrix multiplies (forward and backward), which is the
    arithmetic that matters here; elementwise ops, pooling and the SGD update are not counted.
    """
    net = model.make_net()
    x, target = model.make_batch(batch_size)
    counter = FlopCounterMode(display=False)
    with counter:
        if mode == "train":
            model.loss_fn(net(x), target).backward()
        else:
            with torch.no_grad():
                net(x)
    return counter.get_total_flops()


def package_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def compiler_version():
    """The C++ compiler Inductor builds CPU code with (torch's cpp_builder picks it, as for every
    torch.compile and AOTInductor build here) and the first line of its `--version`, or None when
    there is none. Recorded with every run, and part of AOTInductor's library cache key."""
    from torch._inductor import cpp_builder

    try:
        compiler = cpp_builder.get_cpp_compiler()
        out = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except Exception:  # no compiler: the compile backends' unavailable() says so
        return None
    return f"{compiler}: {out.splitlines()[0] if out else ''}"


# The packages whose versions a run records (and the reports show).
PACKAGES = ["torch", "triton", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "numpy",
            "pytest-benchmark"]


@functools.cache
def machine_info():
    """Versions and hardware behind a run, saved with every benchmark run."""
    info = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "c++": compiler_version(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cuda": torch.version.cuda,
    }
    for package in PACKAGES:
        info[package] = package_version(package)
    return info
