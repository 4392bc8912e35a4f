"""TorchScript: `torch.jit.script` of the Net; autograd and SGD run through the scripted module.

The step itself is eager's (zero_grad, forward, loss, backward, SGD step); only the module
differs. TorchScript is deprecated: torch 2.13 warns on every script call, and removal has
been proposed upstream. Only that one warning is silenced, only around the scripting call.
"""

import warnings

import torch

import model
from bench.backends import eager

KERNELS = "aten"


def unavailable(device):
    if not callable(getattr(getattr(torch, "jit", None), "script", None)):
        return "torch.jit.script is gone from this torch build"
    return None


def outside_kernels(device):
    return "the TorchScript interpreter, dispatch, the autograd engine and the optimizer's Python loop"


def script(net):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=DeprecationWarning)
        return torch.jit.script(net)


class Runner(eager.Runner):
    def __init__(self, state_dict, device="cpu", dtype=torch.float32):
        self.device, self.dtype = torch.device(device), dtype
        net = model.Net().to(device=device, dtype=dtype)
        net.load_state_dict(state_dict)
        self.net = script(net)
        self.optimizer = model.make_optimizer(self.net.parameters())
