"""The tutorial's network and everything that defines one training step for it.

This is the only definition of the Net, the loss, the update rule and the synthetic
batch; every backend, export and test imports them from here. Uses torch only.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

LEARNING_RATE = 0.01  # the tutorial's optim.SGD(net.parameters(), lr=0.01)
IMAGE_SHAPE = (1, 32, 32)  # one single-channel 32x32 image per sample
NUM_OUTPUTS = 10


class Net(nn.Module):
    """The tutorial's LeNet-style network (a PyTorch tutorial, "from PyTorch to NLP, chapter 1: building a
    neural network"), the two bugs of its listing fixed."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3)  # 1 input channel, 6 feature maps, 3x3 kernel
        self.conv2 = nn.Conv2d(6, 16, 3)
        self.fc1 = nn.Linear(16 * 6 * 6, 120)  # 16 maps of 6x6 after two conv+pool stages
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, NUM_OUTPUTS)

    def forward(self, x):
        if not torch.jit.is_scripting():  # TorchScript cannot compile the check; its runner calls it
            check_input(x)
        x = F.max_pool2d(F.relu(self.conv1(x)), (2, 2))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(-1, self.num_flat_features(x))
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)

    def num_flat_features(self, x):  # the tutorial's listing lacks this colon
        size = x.size()[1:]  # the listing has x.size[1:]; all dimensions but the batch
        num_features = 1
        for s in size:
            num_features *= s
        return num_features


def loss_fn(output, target):
    """The tutorial's criterion, nn.MSELoss() with its default mean reduction."""
    return F.mse_loss(output, target)


def make_optimizer(params):
    """The tutorial's update rule: weight = weight - lr * gradient."""
    return torch.optim.SGD(params, lr=LEARNING_RATE)


def make_net(seed=0, device="cpu", dtype=torch.float32):
    """A Net with PyTorch's default initialisation drawn from a fixed seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Net()
    return net.to(device=device, dtype=dtype)


def net_for_inference(state_dict):
    """A Net holding these weights, in eval mode: what every deployed form is built from. The load
    is strict, so a foreign state_dict fails here, naming its keys."""
    net = Net()
    net.load_state_dict(state_dict)
    return net.eval()


def make_batch(batch_size, seed=0, device="cpu", dtype=torch.float32):
    """A seeded synthetic batch: input (B, 1, 32, 32) and target (B, 10), standard normal."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch size must be a positive integer, got {batch_size!r}")
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, *IMAGE_SHAPE, generator=generator)
    target = torch.randn(batch_size, NUM_OUTPUTS, generator=generator)
    return x.to(device=device, dtype=dtype), target.to(device=device, dtype=dtype)


# Samples in the pool every benchmark trains on: enough that the Net cannot fit them within a run
# (at batch 1 it fits one fixed sample in a few hundred steps, and then its parameters barely move),
# and the same 16 MiB of input at every batch size.
POOL_SAMPLES = 4096


def make_batch_pool(batch_size, samples=POOL_SAMPLES, seed=0, device="cpu", dtype=torch.float32):
    """Pre-generated batches (x, target) to cycle through, at least two: a new batch every step,
    as a data loader would give, with nothing generated inside the timed region."""
    count = max(2, -(-samples // batch_size))
    x, target = make_batch(count * batch_size, seed=seed, device=device, dtype=dtype)
    return [(x[i * batch_size:(i + 1) * batch_size], target[i * batch_size:(i + 1) * batch_size])
            for i in range(count)]


def check_input(x, target=None, dtype=None, device=None):
    """Raise one clear ValueError for a batch the Net cannot take, before any kernel runs.

    Every backend calls this, so every backend gives the same message for the same mistake.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"input: expected a torch.Tensor of shape (B, 1, 32, 32), got {type(x).__name__}")
    if x.dim() != 4 or tuple(x.shape[1:]) != IMAGE_SHAPE or x.shape[0] < 1:
        raise ValueError(f"input: expected shape (B, 1, 32, 32) with B >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"input: expected a floating-point dtype, got {x.dtype}")
    if dtype is not None and x.dtype != dtype:
        raise ValueError(f"input: expected dtype {dtype}, got {x.dtype}")
    if device is not None and x.device != torch.device(device):
        raise ValueError(f"input: expected device {torch.device(device)}, got {x.device}")
    if target is not None:
        expected = (x.shape[0], NUM_OUTPUTS)
        if not isinstance(target, torch.Tensor) or tuple(target.shape) != expected:
            got = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
            raise ValueError(f"target: expected shape {expected} to match the input's batch, got {got}")
        if target.dtype != x.dtype or target.device != x.device:
            raise ValueError(
                f"target: expected dtype {x.dtype} on {x.device} like the input, "
                f"got {target.dtype} on {target.device}"
            )
