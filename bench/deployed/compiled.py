"""torch.compile of the eval-mode Net, loaded from the saved weights and compiled at load time.

Three configurations: "compile" (the compiled forward as it is, weights as graph inputs),
"compile-frozen" (Inductor freezing: the weights become constants that Inductor folds and, on
CPU, prepacks for oneDNN; only with gradients off, pytorch/pytorch#104984) and
"compile-frozen-autotune" (freezing plus max_autotune: with constant weights Inductor's CPU GEMM
template competes with the aten kernels). Freezing can be slower (pytorch/pytorch#104952), which is
why the unfrozen form stays beside it. torch.compile keeps no artifact of its own that survives a
new process with freezing on (torch.compiler.save_cache_artifacts returns nothing for it), so the
artifact is the weights file, and the cold start includes compiling (from Inductor's on-disk cache
when it is warm). Calls run under torch.no_grad(), which freezing requires. dynamic=False: one
graph per batch size, compiled on its first call (in warm-up, never timed).
"""

import functools

import torch

from bench.deployed import inference_mode

EXPECTED = inference_mode.EXPECTED
OPTIONS = {
    "compile": {},
    "compile-frozen": {"freezing": True},
    "compile-frozen-autotune": {"freezing": True, "max_autotune": True},
}


def unavailable():
    from bench.backends.compile import unavailable as compile_unavailable  # the C++ compiler check

    return compile_unavailable("cpu")


artifact, build, check = inference_mode.artifact, inference_mode.build, inference_mode.check


class Configured:
    def __init__(self, config):
        self.config, self.options = config, OPTIONS[config]
        self.EXPECTED = EXPECTED
        self.SETTINGS = {
            "torch.compile": "dynamic=False, backend inductor",
            "options": self.options,
            "calls": "torch.no_grad()",
        }
        self.unavailable, self.artifact, self.build, self.check = unavailable, artifact, build, check

    def load(self, path, threads, mode):
        net = inference_mode.load_net(path)
        compiled = torch.compile(net, dynamic=False, options=dict(self.options) or None)

        def call(x):
            with torch.no_grad():
                return compiled(x)

        return call


@functools.cache
def configured(config):
    return Configured(config)
