"""What every benchmark records beside its timing: FLOPs, versions, machine."""

import argparse
import contextlib
import functools
import gc
import importlib.metadata
import os
import platform
import subprocess
import tempfile

import torch
from torch.utils.flop_counter import FlopCounterMode

import model
from bench import backends

BATCH_SIZES = [1, 64, 256]
MODES = ["train", "forward"]


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


def compiler_version():
    try:
        out = subprocess.run(["c++", "--version"], capture_output=True, text=True, timeout=10).stdout
        return out.splitlines()[0] if out else None
    except (OSError, subprocess.SubprocessError):
        return None


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
    packages = ["torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "numpy", "pytest-benchmark"]
    for package in packages:
        info[package] = package_version(package)
    return info


def output_folder(path):
    """argparse type for --out: a folder that exists or can be made, and can be written to,
    checked before any work starts rather than after it (and nothing is left behind)."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    try:
        if not os.path.isdir(existing):
            raise NotADirectoryError(20, f"{existing} is a file")
        if existing == os.path.abspath(path):
            with tempfile.TemporaryFile(dir=existing):
                pass
        else:
            with tempfile.TemporaryDirectory(dir=existing):
                pass
    except OSError as error:
        reason = error.strerror or error
        raise argparse.ArgumentTypeError(f"{path} is not a writable folder ({reason})") from None
    return path


class UsageError(Exception):
    """A bad command line, reported by the commands as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one UsageError line: no usage block, no traceback."""

    def error(self, message):
        raise UsageError(message)


def positive(text):
    """argparse type: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_list(text):
    """argparse type: comma-separated positive integers."""
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise argparse.ArgumentTypeError("empty list")
    return [positive(item) for item in items]


def backend_list(text, device="cpu"):
    """Backends named on the command line; each must be known and runnable on `device`."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise UsageError("--backends: empty; choose from: " + ", ".join(backends.CONFIGS))
    for name in names:
        try:
            backends.check_choice("backend", name, backends.CONFIGS)
        except ValueError as error:
            raise UsageError(f"--backends: {error}") from None
        reason = backends.unavailable(name, device)
        if reason:
            raise UsageError(f"--backends: {name} cannot run on {device}: {reason}")
    return list(dict.fromkeys(names))


def settle_heap():
    """Collect, then freeze what is on the heap out of the garbage collector; call before timing.

    Objects earlier benchmarks left (traced graphs, sessions, compiled code) would make every
    collection during the timed rounds walk them too, slowing whichever backend allocates the
    most Python objects per call (eager) by what ran before it. What the timed calls allocate
    is still collected as usual."""
    gc.collect()
    gc.freeze()


def file_mode():
    """The mode an ordinary new file gets here (0o666 less the umask): mkstemp's 0600 is not."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def probe_writable(folder):
    """Create `folder` if needed and write and remove a file in it; raise OSError when that fails
    (os.access says yes to root even on read-only mounts)."""
    os.makedirs(folder, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe-")
    os.close(fd)
    os.unlink(probe)


def replace_atomic(path, make, suffix=".tmp"):
    """`make(tmp)` writes a temporary file in `path`'s folder, which is then renamed to `path`:
    the file is whole or absent, never half written, and on any error or interrupt the temporary
    file is removed and `path` left as it was. `suffix` ends the temporary name."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=suffix)
    os.close(fd)
    try:
        make(tmp)
        os.chmod(tmp, file_mode())  # mkstemp makes 0600; the result is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomic(path, write):
    """replace_atomic for content written by `write(f)` to a binary file, synced to disk."""

    def make(tmp):
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())

    replace_atomic(path, make)


def write_text_atomic(path, text):
    write_atomic(path, lambda f: f.write(text.encode()))
