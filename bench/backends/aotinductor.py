"""AOTInductor: the `compile` backend's step, compiled ahead of time into a C++ library.

torch.compile runs its compiled graph from Python, behind Dynamo's guards; at batch 1 that
framework time is most of the step (see results/PROFILE.md). Here the same functional step
(grad_and_value over the Net with the im2col lowering, then p - lr * g) is traced once to an
aten graph, exported with a dynamic batch dimension, and compiled by Inductor into a shared
library (torch._inductor.aoti_compile_and_package). A call is one C++ entry point: no Dynamo,
no guards, no Python wrapper.

The parameters are the step library's constants, given as our own tensors (`user_managed`),
and the compiled step writes the update into them in place: nothing is copied in or out but
the batch and the loss. The forward library takes the same tensors as inputs (as constants,
Inductor would fold some of them at load time, and a folded copy would not see the updates).

Threads: at small batches a step is a few dozen tiny kernels, where OpenMP's fork and join
and MKL's threading cost more than a second core gives back. Batches up to SMALL_BATCH run a
library compiled for one thread with torch set to one thread for the call; larger batches
run one compiled for torch's thread count. The count used is in `info["threads"]`.

Compiling takes tens of seconds per library, so each is kept on disk under Inductor's cache
folder, named by a hash of the traced graph, the Inductor options and the versions.
`info["library_hit"]` and `info["library_miss"]` count the libraries loaded from there or built.
"""

import contextlib
import hashlib
import os
import platform
import sys
import time

import torch

import model
from bench import harness
from bench.backends.compile import Im2colLowering
from bench.backends.compile import unavailable as compile_unavailable
from export import train_graph

# Up to this batch size a step runs on one thread. Measured at batch 1 in one process (same
# library, torch at 1 against 2 threads): 0.119 against 0.150 ms; at batch 64 two threads win.
SMALL_BATCH = 4


def unavailable(device):
    return compile_unavailable(device)


def _traced(state_dict, train):
    """The step (train) or the forward pass as an aten graph with a symbolic batch."""
    if train:
        graph_module, _ = train_graph.trace_train_step(state_dict, lowering=Im2colLowering)
        return graph_module
    return train_graph.trace_forward(state_dict, lowering=Im2colLowering)


class _TrainStep(torch.nn.Module):
    """The traced step with the parameters as buffers (`net.<key>`): export makes them the
    library's constants, and the `copy_` an in-place update of them."""

    def __init__(self, graph_module, state_dict):
        super().__init__()
        self.graph_module, self.keys = graph_module, list(state_dict)
        self.net = model.Net()
        for key, value in state_dict.items():
            owner, name = key.rsplit(".", 1)
            module = self.net.get_submodule(owner)
            delattr(module, name)
            module.register_buffer(name, value.detach().clone())

    def forward(self, x, target):
        params = [self.net.get_buffer(k) for k in self.keys]
        loss, *updated = self.graph_module(x, target, *params)
        for param, new in zip(params, updated):
            param.copy_(new)
        return loss


def _cache_path(graph_module, options, device, dtype, train):
    """Where the library for this graph and these settings lives. The name hashes everything a
    library depends on: the traced graph, the Inductor options, the code that exports it (this
    module and export/train_graph.py), torch, and the CPU's vector instruction set, so a cache
    folder shared between machines or versions never hands back a library built for another."""
    import inspect

    from torch._inductor.cpu_vec_isa import pick_vec_isa
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    sources = [inspect.getsource(module) for module in (sys.modules[__name__], train_graph)]
    key = "\n".join(map(str, [graph_module.code, sorted(options.items()), device, dtype, train,
                              torch.__version__, pick_vec_isa(), platform.machine(), *sources]))
    name = hashlib.sha256(key.encode()).hexdigest()[:32]
    return os.path.join(cache_dir(), "lenet-bench-aoti", f"{'train' if train else 'forward'}-{name}.pt2")


def _library(state_dict, device, dtype, train, threads):
    """(loaded library, seconds, came from the cache) for the step or the forward pass."""
    start = time.perf_counter()
    cpu_state = {k: v.detach().to("cpu", dtype) for k, v in state_dict.items()}
    graph_module = _traced(cpu_state, train)
    options = {"cpp.threads": threads} if device.type == "cpu" else {}
    if torch._inductor.config.cpp.enable_kernel_profile:  # bench.profile: one range per kernel
        options["cpp.enable_kernel_profile"] = True
    path = _cache_path(graph_module, options, device, dtype, train)
    cached = os.path.exists(path)
    if not cached:
        on_device = {k: v.to(device) for k, v in cpu_state.items()}
        x, target = model.make_batch(train_graph.TRACE_BATCH, device=device)
        x, target = x.to(dtype), target.to(dtype)
        batch = torch.export.Dim("batch", min=1)
        if train:
            module, args = _TrainStep(graph_module, on_device).to(device), (x, target)
            dims = ({0: batch}, {0: batch})
        else:
            module, args = graph_module, (x, *on_device.values())
            dims = ({0: batch}, *[None] * len(on_device))
        exported = torch.export.export(module, args, dynamic_shapes=dims, strict=False)
        # A library on disk is whole or absent; the packager wants a name ending in .pt2.
        harness.replace_atomic(path, lambda tmp: torch._inductor.aoti_compile_and_package(
            exported, package_path=tmp, inductor_configs=options), suffix=".pt2")
    library = torch._inductor.aoti_load_package(path)
    return library, time.perf_counter() - start, cached


@contextlib.contextmanager
def _torch_threads(count):
    previous = torch.get_num_threads()
    if count != previous:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if count != previous:
            torch.set_num_threads(previous)


class Runner:
    def __init__(self, state_dict, device="cpu", dtype=torch.float32):
        self.device, self.dtype = torch.device(device), dtype
        self.state_dict = {k: v.detach().to("cpu", dtype).clone() for k, v in state_dict.items()}
        # The parameters themselves: every library reads and updates these tensors in place.
        self.params = {k: v.to(self.device).clone() for k, v in self.state_dict.items()}
        self._libraries = {}  # (train, threads) -> the loaded library's run
        self.info = {"small_batch": SMALL_BATCH, "threads": None, "dynamic_batch": True,
                     "compile_seconds": 0.0, "library_hit": 0, "library_miss": 0}

    def _threads(self, batch_size):
        if self.device.type != "cpu":
            return 1
        return 1 if batch_size <= SMALL_BATCH else torch.get_num_threads()

    def _run(self, train, inputs):
        threads = self._threads(inputs[0].shape[0])
        run = self._libraries.get((train, threads))
        if run is None:  # first call at this kind of batch: compile or load, outside any timing
            library, seconds, cached = _library(self.state_dict, self.device, self.dtype, train, threads)
            if train:
                library.load_constants({f"net.{k}": v for k, v in self.params.items()},
                                       check_full_update=True, user_managed=True)
            run = self._libraries[(train, threads)] = library.loader.run
            self.info["compile_seconds"] = round(self.info["compile_seconds"] + seconds, 3)
            self.info["library_hit" if cached else "library_miss"] += 1
        self.info["threads"] = threads
        with _torch_threads(threads) if self.device.type == "cpu" else contextlib.nullcontext():
            return run(inputs)[0]

    def train_step(self, x, target):
        model.check_input(x, target, dtype=self.dtype, device=self.device)
        return self._run(True, [x.contiguous(), target.contiguous()])

    @torch.no_grad()
    def forward(self, x):
        model.check_input(x, dtype=self.dtype, device=self.device)
        return self._run(False, [x.contiguous(), *self.params.values()])

    def parameters(self):
        return dict(self.params)

    def gradients(self):
        return None  # the compiled step updates the parameters without exposing gradients
