"""Eager PyTorch: the tutorial's training loop exactly as written."""

import torch

import model

KERNELS = "aten"


def unavailable(device):
    return None


def outside_kernels(device):
    return "Python, dispatch, the autograd engine and the optimizer's Python loop"


class Runner:
    def __init__(self, state_dict, device="cpu", dtype=torch.float32):
        self.device, self.dtype = torch.device(device), dtype
        self.net = model.Net().to(device=device, dtype=dtype)
        self.net.load_state_dict(state_dict)
        self.optimizer = model.make_optimizer(self.net.parameters())

    def train_step(self, x, target):
        model.check_input(x, target, dtype=self.dtype, device=self.device)
        self.optimizer.zero_grad()
        loss = model.loss_fn(self.net(x), target)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    @torch.no_grad()
    def forward(self, x):
        model.check_input(x, dtype=self.dtype, device=self.device)
        return self.net(x)

    def parameters(self):
        return {k: v.detach() for k, v in self.net.named_parameters()}

    def gradients(self):
        return {k: v.grad for k, v in self.net.named_parameters()}
