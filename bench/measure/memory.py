"""Memory of a backend: what it holds between calls, and the peak of one call on top of that.

CPU (Linux): first glibc's malloc_trim hands free heap pages back to the system, so the resident
set is what is really in use. Then:
- held: the growth of the resident set over a runner's creation and its first train and forward
  calls, each measured around that call alone: weights, compiled code and libraries, ONNX Runtime's
  arena, whatever a backend keeps. The first backend to use a library also pays for loading it.
- peak: writing 5 to /proc/self/clear_refs resets the process's peak resident set (VmHWM) to its
  current size; after one call, VmHWM minus the size before is the most memory the call had
  resident at once beyond what was held: activations, gradients, workspaces. Memory an allocator
  keeps from earlier calls (ONNX Runtime's arena) is in `held`, not here.

CUDA: torch.cuda's peak allocated bytes over the call above the level before, and the device's
used memory outside torch's allocator (cudaMemGetInfo's used bytes less torch's reserved),
which is where cuBLAS/cuDNN workspaces, CUDA graphs' pools and other libraries' memory show.
"""

import ctypes
import ctypes.util
import gc

import torch

from bench import backends

BYTES_PER_KB = 1024  # /proc/self/status gives sizes in kB


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


LIBC = _libc()


def trim():
    """Hand glibc's free heap pages back to the system (nothing elsewhere)."""
    if LIBC is not None and hasattr(LIBC, "malloc_trim"):
        LIBC.malloc_trim(0)


def resident_bytes():
    """The process's resident set now, free heap pages handed back first; None where /proc cannot tell."""
    trim()
    try:
        return _status_kb("VmRSS") * BYTES_PER_KB
    except (OSError, ValueError):
        return None


def peak_over_call(call, device="cpu"):
    """{memory_peak_bytes, ...}: the most memory one call of `call` had beyond the level before it."""
    gc.collect()
    trim()
    info = {"memory_peak_bytes": None, "memory_level_bytes": None}
    if torch.device(device).type == "cuda":
        backends.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        call()
        backends.synchronize(device)
        free, total = torch.cuda.mem_get_info(device)
        info.update(memory_peak_bytes=torch.cuda.max_memory_allocated(device) - before,
                    memory_level_bytes=before,
                    memory_device_outside_torch_bytes=total - free - torch.cuda.memory_reserved(device))
        return info
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status_kb("VmRSS")
    except OSError:  # not Linux, or /proc not writable: say nothing rather than guess
        call()
        return info
    call()
    info.update(memory_peak_bytes=max(0, _status_kb("VmHWM") - before) * BYTES_PER_KB,
                memory_level_bytes=before * BYTES_PER_KB)
    return info
