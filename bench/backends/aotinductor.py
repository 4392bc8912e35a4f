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

Threads: like every backend, a library runs at torch's current thread count (the benchmark
session sets it); on CPU Inductor compiles that count into the library, so one is built per
count. The count used is in `info["threads"]`.

Compiling takes tens of seconds per library, so each is kept on disk under Inductor's cache
folder, named by a hash of what the library depends on (cache_ingredients): the traced graph,
the options, Inductor's config, the versions of torch, Triton and the C++ compiler, the CPU's
vector ISA and the GPU. `info["library_hit"]` and `info["library_miss"]` count the libraries
loaded from there or built.
"""

import hashlib
import inspect
import os
import platform
import time

import torch

import model
from bench import files
from bench.backends.compile import Im2colLowering
from bench.backends.compile import unavailable as compile_unavailable
from bench.measure import machine
from export import train_graph

# Bump when the code that wraps, exports or loads a library changes what a library holds
# (not for comments or refactors that build the same library).
CACHE_FORMAT = 2
KERNELS = "inductor"


def unavailable(device):
    reason = compile_unavailable(device)
    if reason:
        return reason
    try:
        from torch._inductor.package.package import AOTICompiledModel
    except ImportError as error:
        return f"this torch has no AOTInductor packaging (torch._inductor.package): {error}"
    # The step library updates our own parameter tensors in place: that needs load_constants to
    # take them as they are (user_managed=True) rather than copy them.
    if "user_managed" not in inspect.signature(AOTICompiledModel.load_constants).parameters:
        return f"torch {torch.__version__}'s AOTInductor load_constants has no user_managed option"
    return None


def outside_kernels(device):
    return ("AOTInductor's C++ wrapper (argument handling, allocation of intermediates, the OpenMP "
            "thread pool) and the runner's one call into it")


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


def _triton_version():
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def _gpu(device):
    """The GPU's name and compute capability: CUDA libraries hold kernels built for it."""
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_name(device), torch.cuda.get_device_capability(device)


def _vec_isa():
    """The CPU vector instruction set Inductor compiles CPU kernels for (e.g. avx512)."""
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    return str(pick_vec_isa())


def _inductor_config():
    """Inductor's settings (the portable part of its config, as torch.compile's own cache keys
    use), hashed: a setting outside the options passed can change the library too."""
    settings = torch._inductor.config.save_config_portable()
    # AOTInductor writes the built library's own metadata into this dict in place, so it differs
    # after the first build in a process: keyed on, it made every later lookup miss.
    settings.pop("aot_inductor.metadata", None)
    return hashlib.sha256(repr(sorted(settings.items())).encode()).hexdigest()


def cache_ingredients(graph_module, options, device, dtype, train):
    """Everything a library depends on, by name. Not our source files: a comment edit must not
    force a rebuild (CACHE_FORMAT is bumped instead when the wrapping code changes)."""
    return {
        "format": CACHE_FORMAT,
        "graph": graph_module.code,
        "options": sorted(options.items()),
        "device": device.type,
        "dtype": str(dtype),
        "train": train,
        "inductor_config": _inductor_config(),
        "torch": (torch.__version__, torch.version.git_version),
        "triton": _triton_version(),
        "gpu": _gpu(device),
        "compiler": machine.compiler_version() if device.type == "cpu" else None,
        "vec_isa": _vec_isa(),
        "machine": platform.machine(),
    }


def cache_key(ingredients):
    return hashlib.sha256(repr(sorted(ingredients.items())).encode()).hexdigest()[:32]


def _cache_path(graph_module, options, device, dtype, train):
    """Where the library for this graph and these settings lives: a cache folder shared between
    machines, versions or settings never hands back a library built for others."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    name = cache_key(cache_ingredients(graph_module, options, device, dtype, train))
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
        files.replace_atomic(path, lambda tmp: torch._inductor.aoti_compile_and_package(
            exported, package_path=tmp, inductor_configs=options), suffix=".pt2")
    library = torch._inductor.aoti_load_package(path)
    return library, time.perf_counter() - start, cached


class Runner:
    def __init__(self, state_dict, device="cpu", dtype=torch.float32):
        self.device, self.dtype = torch.device(device), dtype
        self.state_dict = {k: v.detach().to("cpu", dtype).clone() for k, v in state_dict.items()}
        # The parameters themselves: every library reads and updates these tensors in place.
        self.params = {k: v.to(self.device).clone() for k, v in self.state_dict.items()}
        self._libraries = {}  # (train, threads) -> the loaded library's run
        self.info = {"threads": None, "dynamic_batch": True,
                     "compile_seconds": 0.0, "library_hit": 0, "library_miss": 0}

    def _run(self, train, inputs):
        # CUDA libraries have no host threads of their own; on CPU the count is compiled in.
        threads = torch.get_num_threads() if self.device.type == "cpu" else 1
        run = self._libraries.get((train, threads))
        if run is None:  # first call with this thread count: compile or load, outside any timing
            library, seconds, cached = _library(self.state_dict, self.device, self.dtype, train, threads)
            if train:
                library.load_constants({f"net.{k}": v for k, v in self.params.items()},
                                       check_full_update=True, user_managed=True)
            run = self._libraries[(train, threads)] = library.loader.run
            self.info["compile_seconds"] = round(self.info["compile_seconds"] + seconds, 3)
            self.info["library_hit" if cached else "library_miss"] += 1
        self.info["threads"] = threads
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
