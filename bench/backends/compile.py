"""torch.compile with Inductor: C++/OpenMP kernels on CPU, Triton kernels on CUDA.

How the step is captured: Dynamo does not trace `loss.backward()` (only compiled
autograd would), so the step is written functionally instead:
`torch.func.grad_and_value` over the Net's forward gives the loss and the gradients,
and the SGD update `p -= lr * g` is applied in place to the parameter tensors. The
whole step, forward + backward + update, is one graph (`fullgraph=True`) that
Inductor compiles and fuses as a unit. It is the same arithmetic as the tutorial's
zero_grad / backward / SGD(lr=0.01).step() loop: gradients start from zero each step.
Parameters go in as a flat tuple (cheaper guards than a dict).

Options:
  mode        torch.compile mode: "default", "max-autotune-no-cudagraphs", "max-autotune",
              or "reduce-overhead" (CUDA graphs, CUDA only)
  cpp_wrapper Inductor calls its kernels from generated C++, not Python (less overhead);
              None (default) means on for CPU, off for CUDA
  inductor_options  more Inductor config for torch.compile's `options` (bench.compile_study tries some)
  im2col      True, False or "pools" (only the pools rewritten). While the Net runs, its
              convolutions are lowered to k*k shifted slices + one matmul and its 2x2 max-pools
              to a reshape + amax (a TorchFunctionMode, so the Net itself stays the one
              definition), so Inductor fuses the im2col, bias, relu and pooling, and their
              backward, into its own kernels instead of calling aten's convolution and max-pool
              kernels. Same sums in another order: agrees with eager to ~1e-7. At a tie inside a
              pooling window amax splits the gradient where max-pool picks one input; after a
              relu the only likely ties are zeros, whose gradient the relu zeroes anyway.
"""

import contextlib

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad_and_value
from torch.overrides import TorchFunctionMode

import model

# Every Runner (each configuration, device and dtype) and each batch size is its own
# specialisation of the same step code object (dynamic=False); Dynamo's default limit of 8
# per code object is too few for a suite that builds many of them in one process.
torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)
torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit, 1024)

KERNELS = "inductor"

def unavailable(device, mode="default", **options):
    if mode == "reduce-overhead" and torch.device(device).type != "cuda":
        return "CUDA graphs (mode='reduce-overhead') need a CUDA device"
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    if torch.device(device).type == "cpu":
        from torch._inductor import cpp_builder

        try:
            cpp_builder.get_cpp_compiler()
        except Exception as error:  # Inductor's CPU backend needs a C++ compiler
            return f"Inductor's CPU backend needs a C++ compiler: {error}"
    return None


def outside_kernels(device, mode="default", cpp_wrapper=None, **options):
    if mode == "reduce-overhead":
        return "Dynamo's guards, the Python call, the CUDA graph launch"
    if cpp_wrapper is False or (cpp_wrapper is None and torch.device(device).type != "cpu"):
        return "Dynamo's guards, the graph's Python wrapper, dispatch and allocation"
    return "Dynamo's guards, the Python call into the graph, its C++ wrapper and allocation"


def conv2d_im2col(x, w, b):
    """Valid, stride-1 conv2d as im2col (k*k shifted slices) and one batched matmul."""
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    ho, wo = h - k + 1, wd - k + 1
    cols = torch.stack([x[:, :, i : i + ho, j : j + wo] for i in range(k) for j in range(k)], 2)
    out = w.reshape(o, c * k * k) @ cols.reshape(n, c * k * k, ho * wo)
    return (out + b[:, None]).reshape(n, o, ho, wo)


def max_pool2x2(x):
    """F.max_pool2d(x, 2) (floor mode) as a reshape and an amax."""
    n, c, h, w = x.shape
    x = x[:, :, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(n, c, h // 2, 2, w // 2, 2).amax((3, 5))


def bind(names, args, kwargs):
    return {**dict(zip(names, args)), **kwargs}


ONE, ZERO, TWO = (1, (1, 1), [1, 1]), (0, (0, 0), [0, 0]), (2, (2, 2), [2, 2])


class Im2colLowering(TorchFunctionMode):
    """Runs F.conv2d (stride 1, no padding) as conv2d_im2col and F.max_pool2d (2x2) as
    max_pool2x2; any other call, or other arguments, run unchanged. convolutions=False leaves the
    convolutions to aten (the pools alone rewritten)."""

    def __init__(self, convolutions=True):
        super().__init__()
        self.convolutions = convolutions

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d and self.convolutions:
            a = bind(["input", "weight", "bias", "stride", "padding", "dilation", "groups"], args, kwargs)
            if (a.get("stride", 1) in ONE and a.get("padding", 0) in ZERO and a.get("dilation", 1) in ONE
                    and a.get("groups", 1) == 1):
                return conv2d_im2col(a["input"], a["weight"], a["bias"])
        if func is F.max_pool2d:
            a = bind(["input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"],
                     args, kwargs)
            if (a["kernel_size"] in TWO and a.get("stride") in (None, [], *TWO)
                    and a.get("padding", 0) in ZERO and a.get("dilation", 1) in ONE
                    and not a.get("ceil_mode") and not a.get("return_indices")):
                return max_pool2x2(a["input"])
        return func(*args, **kwargs)


class Runner:
    def __init__(self, state_dict, device="cpu", dtype=torch.float32, mode="default", cpp_wrapper=None,
                 im2col=True, inductor_options=None):
        self.device, self.dtype = torch.device(device), dtype
        net = model.Net().to(device=device, dtype=dtype)
        net.load_state_dict(state_dict)
        self.names = [name for name, _ in net.named_parameters()]
        self.params = tuple(p.detach() for _, p in net.named_parameters())
        self.grads = None
        self.cudagraphs = mode == "reduce-overhead"
        if self.cudagraphs:  # parameters mutated in place inside a CUDA graph must have fixed addresses
            for p in self.params:
                torch._dynamo.mark_static_address(p)

        def forward(params, x):
            with Im2colLowering(convolutions=im2col is True) if im2col else contextlib.nullcontext():
                return functional_call(net, dict(zip(self.names, params)), (x,))

        loss_and_grads = grad_and_value(lambda params, x, target: model.loss_fn(forward(params, x), target))

        def step(params, x, target):
            grads, loss = loss_and_grads(params, x, target)
            for p, g in zip(params, grads):
                p.sub_(g, alpha=model.LEARNING_RATE)
            return loss, grads

        if cpp_wrapper is None:  # on for CPU, where the Python wrapper's overhead shows at small batches
            cpp_wrapper = self.device.type == "cpu"
        options = dict(torch._inductor.list_mode_options(mode), cpp_wrapper=cpp_wrapper,
                       **(inductor_options or {}))
        self._step = torch.compile(step, dynamic=False, fullgraph=True, options=options)
        self._infer = torch.compile(forward, dynamic=False, fullgraph=True, options=options)

    def train_step(self, x, target):
        model.check_input(x, target, dtype=self.dtype, device=self.device)
        if self.cudagraphs:  # outputs live in the graph's memory until the next replay
            torch.compiler.cudagraph_mark_step_begin()
            loss, self.grads = self._step(self.params, x, target)
            return loss.clone()  # the loss is returned, so it must outlive the next replay
        loss, self.grads = self._step(self.params, x, target)
        return loss

    @torch.no_grad()
    def forward(self, x):
        model.check_input(x, dtype=self.dtype, device=self.device)
        if self.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
            return self._infer(self.params, x).clone()
        return self._infer(self.params, x)

    def parameters(self):
        return dict(zip(self.names, self.params))

    def gradients(self):
        """The last step's gradients; with CUDA graphs valid until the next step replays."""
        return None if self.grads is None else {n: g.clone() for n, g in zip(self.names, self.grads)}
