"""torch.compile with Inductor: C++/OpenMP kernels on CPU, Triton kernels on CUDA.

How the step is captured: Dynamo does not trace `loss.backward()` (only compiled
autograd would), so the step is written functionally instead:
`torch.func.grad_and_value` over `functional_call` gives the loss and the gradients,
and the SGD update `p -= lr * g` is applied in place to the parameter tensors. The
whole step, forward + backward + update, is one graph (`fullgraph=True`) that
Inductor compiles and fuses as a unit. It is the same arithmetic as the tutorial's
zero_grad / backward / SGD(lr=0.01).step() loop: gradients start from zero each step.
"""

import torch
from torch.func import functional_call, grad_and_value

import model


def unavailable(device):
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    if torch.device(device).type == "cpu":
        from torch._inductor import cpp_builder

        try:
            cpp_builder.get_cpp_compiler()
        except Exception as error:  # Inductor's CPU backend needs a C++ compiler
            return f"Inductor's CPU backend needs a C++ compiler: {error}"
    return None


class Runner:
    def __init__(self, state_dict, device="cpu", dtype=torch.float32, mode="default", dynamic=False):
        self.device, self.dtype = torch.device(device), dtype
        self.net = model.Net().to(device=device, dtype=dtype)
        self.net.load_state_dict(state_dict)
        self.params = {k: v.detach() for k, v in self.net.named_parameters()}
        self.grads = None

        def loss_of(params, x, target):
            return model.loss_fn(functional_call(self.net, params, (x,)), target)

        loss_and_grads = grad_and_value(loss_of)

        def step(params, x, target):
            grads, loss = loss_and_grads(params, x, target)
            for name, p in params.items():
                p.sub_(grads[name], alpha=model.LEARNING_RATE)
            return loss, grads

        def infer(params, x):
            return functional_call(self.net, params, (x,))

        options = dict(mode=mode, dynamic=dynamic, fullgraph=True)
        self._step = torch.compile(step, **options)
        self._infer = torch.compile(infer, **options)

    def train_step(self, x, target):
        model.check_input(x, target, dtype=self.dtype, device=self.device)
        loss, self.grads = self._step(self.params, x, target)
        return loss

    @torch.no_grad()
    def forward(self, x):
        model.check_input(x, dtype=self.dtype, device=self.device)
        return self._infer(self.params, x)

    def parameters(self):
        return dict(self.params)

    def gradients(self):
        return self.grads
