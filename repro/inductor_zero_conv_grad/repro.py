"""torch.compile (Inductor, CPU) returns zero convolution weight gradients for a small LeNet.

Plain torch, no other import. Usage: python repro.py [batch_size ...] (default 8).
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3)
        self.conv2 = nn.Conv2d(6, 16, 3)
        self.fc1 = nn.Linear(16 * 6 * 6, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), (2, 2))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def grads(net, run, x, target):
    net.zero_grad()
    F.mse_loss(run(x), target).backward()
    return {n: p.grad.detach().clone() for n, p in net.named_parameters()}


def check(batch_size, **compile_kwargs):
    torch.manual_seed(0)
    net = Net()
    x, target = torch.randn(batch_size, 1, 32, 32), torch.randn(batch_size, 10)
    expected = grads(net, net, x, target)
    torch._dynamo.reset()
    got = grads(net, torch.compile(net, **compile_kwargs), x, target)
    error = {n: (got[n] - expected[n]).abs().max().item() for n in expected}
    worst = max(error.values())
    print(f"batch {batch_size:3d} {compile_kwargs or 'defaults'}: max |grad - eager grad| = {worst:.3g}; "
          f"max |conv1.weight.grad| eager {expected['conv1.weight'].abs().max():.3g} "
          f"compiled {got['conv1.weight'].abs().max():.3g}; "
          f"conv2 eager {expected['conv2.weight'].abs().max():.3g} "
          f"compiled {got['conv2.weight'].abs().max():.3g}"
          f" -> {'WRONG: ' + ', '.join(n for n, e in error.items() if e > 1e-4) if worst > 1e-4 else 'ok'}")
    return worst


if __name__ == "__main__":
    print("torch", torch.__version__, "| threads", torch.get_num_threads(), "|",
          torch.backends.cpu.get_cpu_capability())
    for b in [int(a) for a in sys.argv[1:]] or [8]:
        check(b)
        check(b, options={"layout_optimization": False})
