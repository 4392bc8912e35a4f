"""Eager PyTorch, the reference row: the Net's weights saved with torch.save, loaded into the Net,
eval() and every call under torch.inference_mode() (no autograd bookkeeping at all)."""

import warnings

import torch

import model
from bench import files
from bench.deployed import check_file

EXPECTED = "the Net's state_dict saved with torch.save (a zip archive)"
SETTINGS = {"mode": "eval() + torch.inference_mode()"}


def unavailable():
    return None


def artifact(threads):
    return "net.pt"  # the weights every torch configuration starts from


def build(state_dict, path, threads):
    files.write_atomic(path, lambda f: torch.save({k: v.detach().clone() for k, v in state_dict.items()}, f))


def check(path):
    check_file(path, EXPECTED, zip_archive=True)


def load_net(path, dtype=torch.float32):
    """The Net with the saved weights, in eval mode, gradients off."""
    with warnings.catch_warnings():  # a TorchScript archive given here is refused below, without a warning
        warnings.simplefilter("ignore", UserWarning)
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, dict):
        raise ValueError(f"holds a {type(state_dict).__name__}, not a state_dict")
    net = model.net_for_inference(state_dict).to(dtype)
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def load(path, threads, mode):
    net = load_net(path)

    def call(x):
        with torch.inference_mode():
            return net(x)

    return call
