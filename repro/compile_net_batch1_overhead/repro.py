"""torch.compile(net) trains slower than eager at batch 1 on CPU, with every op on aten.

Plain torch. Times one training step (zero_grad, forward, MSE, backward, SGD) of the tutorial's LeNet at
batch 1, 1 thread, with torch.utils.benchmark: eager, torch.compile(net) with Inductor's defaults, and with
mode='lite' options + the C++ wrapper (every op through aten). Usage: python repro.py
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.benchmark import Timer


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 3), nn.Conv2d(6, 16, 3)
        self.fc1, self.fc2, self.fc3 = nn.Linear(576, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = torch.flatten(F.max_pool2d(F.relu(self.conv2(x)), 2), 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def step_time(options):
    torch.manual_seed(0)
    net = Net()
    run = net if options is None else torch.compile(net, dynamic=False, options=options or None)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, t = torch.randn(1, 1, 32, 32), torch.randn(1, 10)

    def step():
        opt.zero_grad()
        F.mse_loss(run(x), t).backward()
        opt.step()
    for _ in range(20):  # compile and warm up outside the timed region
        step()
    return Timer("step()", globals={"step": step}).blocked_autorange(min_run_time=2).median * 1e6


if __name__ == "__main__":
    torch.set_num_threads(1)
    print("torch", torch.__version__, "| 1 thread |", torch.backends.cpu.get_cpu_capability())
    lite = {**torch._inductor.list_mode_options("lite"), "cpp_wrapper": True}
    eager = step_time(None)
    for name, options in [("eager", None), ("inductor defaults", {}), ("lite options + cpp_wrapper", lite)]:
        us = eager if options is None else step_time(options)
        print(f"{name:28s} {us:8.1f} us/step  eager/this {eager / us:.2f}x")
