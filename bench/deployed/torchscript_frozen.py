"""TorchScript: torch.jit.script of the eval-mode Net and torch.jit.freeze (weights folded in as
constants), saved with torch.jit.save; loaded with torch.jit.load and then
torch.jit.optimize_for_inference (conv/linear fusions and oneDNN choices baked in: "may slow down
your model", its documentation warns). optimize_for_inference runs at load, not before the save:
a module it has optimised saves, but its oneDNN constants do not load back (torch 2.13:
"required keyword attribute 'value' is undefined"). TorchScript is deprecated (script emits a
DeprecationWarning in torch 2.13)."""

import warnings

import torch

import model
from bench import files
from bench.deployed import check_file

EXPECTED = "a TorchScript archive of the Net (torch.jit.save, a zip archive)"
SETTINGS = {
    "steps": "torch.jit.script -> torch.jit.freeze -> torch.jit.save; torch.jit.load -> "
    "torch.jit.optimize_for_inference",
    "calls": "torch.inference_mode()",
}


def unavailable():
    return None


def artifact(threads):
    return "net-torchscript.pt"


def build(state_dict, path, threads):
    net = model.net_for_inference(state_dict)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated, and measured as such
        frozen = torch.jit.freeze(torch.jit.script(net))
        files.write_atomic(path, lambda f: torch.jit.save(frozen, f))


def check(path):
    check_file(path, EXPECTED, zip_archive=True)


def load(path, threads, mode):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.optimize_for_inference(torch.jit.load(path, map_location="cpu"))

    def call(x):
        with torch.inference_mode():
            return module(x)

    return call
