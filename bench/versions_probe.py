"""`python -m bench.versions_probe`: does this torch have the zero-convolution-gradient defect?

torch.compile(net) (Inductor's defaults, CPU) and eager each take one MSE backward on the same
seeded batch of 8; the largest gradient difference and each convolution gradient's largest value
are printed as one JSON line. The defect (found on torch 2.13.0, tests/test_compile.py): the
compiled convolution gradients are all zero. Batch 8 is where 2.13.0 shows it (6-16 do).
"""

import copy
import json
import sys

import torch

import model

TOLERANCE = 1e-5  # the threshold tests/test_compile.py uses


def probe(batch_size=8):
    net = model.make_net(0)
    reference = copy.deepcopy(net)
    x, target = model.make_batch(batch_size)
    model.loss_fn(torch.compile(net)(x), target).backward()
    model.loss_fn(reference(x), target).backward()
    named = dict(net.named_parameters())
    pairs = zip(net.parameters(), reference.parameters())
    error = max((p.grad - q.grad).abs().max().item() for p, q in pairs)
    return {"torch": torch.__version__, "batch_size": batch_size, "max_gradient_difference": error,
            "conv_weight_grad_max": {name: named[name].grad.abs().max().item()
                                     for name in ("conv1.weight", "conv2.weight")},
            "defect": error > TOLERANCE}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    batch = int(argv[0]) if argv else 8
    print(json.dumps(probe(batch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
