"""The backends, one module each, all with the same small surface.

A backend module defines:
  unavailable(device, **options) -> str | None   why it cannot run there, or None
  Runner(state_dict, device, dtype, **options), with
    train_step(x, target) -> loss      one full step: gradients, backward, SGD update
    forward(x) -> output               inference, no autograd
    parameters() -> {name: tensor}     current parameters, named by state_dict key
    gradients() -> {name: tensor} | None   last step's gradients, None where not exposed
  KERNELS: "aten", "inductor" or "onnxruntime"   who supplies the step's kernels
  outside_kernels(device, **options) -> str      what the step does outside its kernels

A configuration is a backend module plus the options that select one way of running it: a new
configuration is one line in CONFIGS; a new backend is one module, one line in CONFIGS and its
family in FAMILIES.
"""

import importlib

import torch

# float32 means float32 here: cuDNN would otherwise run convolutions in TF32 on Ampere and
# later GPUs, and the timed step would not be the step the agreement check verifies.
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False

# name -> (module in bench.backends, options for its Runner)
CONFIGS = {
    "eager": ("eager", {}),
    # torch.compile as users write it for training (bench/backends/compile_loop.py): the tutorial's
    # loop around torch.compile(net); the same with optimizer.step compiled (PyTorch's recipe); the
    # whole iteration under one torch.compile with compiled autograd (PyTorch's dynamo benchmarks).
    "compile-net": ("compile_loop", {}),
    "compile-net-opt": ("compile_loop", {"optimizer": True}),
    "compile-iter": ("compile_loop", {"whole_iteration": True}),
    # The whole step written functionally (torch.func gradients, SGD update in place) as one graph
    # (bench/backends/compile.py). compile-step: torch.compile's default mode and Inductor's defaults.
    # compile-step-im2col: the Net's convolutions and pools rewritten to im2col while traced, and
    # Inductor's C++ wrapper on CPU. No autotuning: with mode "max-autotune-no-cudagraphs" every GEMM
    # of the CPU training step still had one candidate (aten's; Inductor's C++ GEMM template needs
    # constant weights), so nothing was picked, and its measured gain was noise (results/autotune.md);
    # on CUDA it would time Triton kernels on a noisy machine and make the speed hang on those picks.
    "compile-step": ("compile", {"im2col": False, "cpp_wrapper": False}),
    # compile-step with Inductor's layout optimisation off (on CPU it makes every graph with a convolution
    # channels-last; for this Net's thin 6- and 16-channel maps that measured about 30% slower at batch 64
    # and 256: results/compile_study.md) and the C++ wrapper on CPU.
    "compile-step-nchw": ("compile", {"im2col": False, "inductor_options": {"layout_optimization": False}}),
    "compile-step-im2col": ("compile", {}),
    "compile-step-im2col-cudagraphs": ("compile", {"mode": "reduce-overhead"}),  # CUDA graphs; CUDA only
    "aotinductor": ("aotinductor", {}),  # compile-step-im2col's step built ahead of time into a C++ library
    "torchscript": ("torchscript", {}),
    "onnxruntime": ("onnxruntime", {}),
    # The training graph without Col2Im and MaxUnpool (ConvTranspose, an Equal mask); on CUDA both run it.
    "onnxruntime-portable": ("onnxruntime", {"train_graph": "portable"}),
}
# The configuration every speedup is measured against.
EAGER = "eager"
# What runs each module's step, for reports that treat configurations by kind rather than by name;
# "torch.compile": Dynamo, guards and recompiles at call time. A family's first configuration in
# CONFIGS is its plain one, the others its variants.
FAMILIES = {"eager": "eager", "compile": "torch.compile", "compile_loop": "torch.compile",
            "aotinductor": "aotinductor", "torchscript": "torchscript", "onnxruntime": "onnxruntime"}
# Names saved runs in results/ still carry, and the configuration each is now called.
RENAMED = {"compile": "compile-step-im2col", "compile-aten": "compile-step",
           "compile-cudagraphs": "compile-step-im2col-cudagraphs"}
# What a run times unless --backends says otherwise ("all": every configuration): the design card's
# four backends as people write them, and each family's fastest configuration on these CPUs
# (compile-step-nchw: the fastest torch.compile step that rewrites nothing; aotinductor).
DEFAULT_CONFIGS = ["eager", "compile-net", "compile-step-nchw", "aotinductor", "torchscript", "onnxruntime"]
DEVICES = ["cpu", "cuda"]


def current_name(name):
    """The configuration's name today, for a name a saved run may carry from before a rename."""
    return RENAMED.get(name, name)


def family(name):
    """What runs configuration `name`'s step (a value of FAMILIES), or None for an unknown name."""
    return FAMILIES[CONFIGS[name][0]] if name in CONFIGS else None


def plain(family_name):
    """The plain configuration of a family: its first in CONFIGS."""
    return next(name for name in CONFIGS if family(name) == family_name)


def check_choice(kind, value, choices):
    if value not in choices:
        raise ValueError(f"unknown {kind} {value!r}; choose from: {', '.join(map(str, choices))}")


def device_unavailable(device):
    """Why `device` cannot be used here, or None."""
    if device == "cuda" and not torch.cuda.is_available():
        return "CUDA is not available (no GPU, or a CPU-only torch build)"
    return None


def unavailable(name, device):
    """Why configuration `name` cannot run on `device` here, or None when it can."""
    check_choice("backend", name, CONFIGS)
    check_choice("device", device, DEVICES)
    reason = device_unavailable(device)
    if reason:
        return reason
    module, options = _module(name)
    return module.unavailable(device, **options)


def create(name, state_dict, device="cpu", dtype=torch.float32, **overrides):
    """A Runner for configuration `name`, starting from the parameters in `state_dict`; `overrides`
    change or add Runner options (a study's variant of a configuration, a profiled session)."""
    reason = unavailable(name, device)
    if reason:
        raise RuntimeError(f"backend {name!r} is unavailable on {device}: {reason}")
    module, options = _module(name)
    return module.Runner(state_dict, device=device, dtype=dtype, **{**options, **overrides})


def synchronize(device):
    """Wait for the device; CUDA kernels run asynchronously to the host."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _module(name):
    check_choice("backend", name, CONFIGS)
    module_name, options = CONFIGS[name]
    return importlib.import_module(f"bench.backends.{module_name}"), options


def kernels(name):
    """Who supplies configuration `name`'s kernels: "aten" (PyTorch's own), "inductor" (generated by
    Inductor, beside aten's where the step calls them) or "onnxruntime"."""
    return _module(name)[0].KERNELS


def outside_kernels(name, device="cpu"):
    """What a step of configuration `name` does outside its kernels: what its architecture allows."""
    module, options = _module(name)
    return module.outside_kernels(device, **options)
