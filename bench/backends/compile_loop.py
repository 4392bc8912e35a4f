"""torch.compile as people write it for training: the tutorial's loop around a compiled Net.

Unlike the functional whole-step graph of bench/backends/compile.py, these keep the tutorial's
objects (the Net, model.make_optimizer's optim.SGD, `loss.backward()`) and compile what users
compile:

  whole_iteration=False, optimizer=False   `torch.compile(net)` (the torch.compile tutorial,
              TorchBench): forward and its backward compiled, the MSE loss, `backward()`'s
              engine call, zero_grad and SGD.step eager.
  optimizer=True   the same plus `torch.compile` of a function calling `optimizer.step()`
              (PyTorch's recipe "Compiling the optimizer with torch.compile").
  whole_iteration=True   zero_grad, forward, loss, backward and step in one function under
              one torch.compile, as PyTorch's dynamo benchmark harness times training; Dynamo
              breaks the graph at `loss.backward()`, so compiled autograd is switched on for
              this function (torch._dynamo.config.compiled_autograd, read when torch.compile
              is called) and captures the backward as a graph of its own. Dynamo also breaks
              at zero_grad (marked not traceable) and at the graph breaks torch.optim puts
              around every step; the runner's `info` says how many graphs and breaks the
              first step made.

inductor_options: Inductor config passed as torch.compile's `options` to every torch.compile here
(none by default; bench.compile_study tries some).

Every variant passes dynamic=False: a runner compiles for its own batch size whatever ran
before it in the process (by default Dynamo would recompile a second batch size with a
dynamic batch dimension, and the graph timed would depend on the order of the benchmarks).
forward() calls the compiled Net under no_grad (a graph of its own: Dynamo guards on grad mode).
"""

import collections

import torch
from torch._dynamo.utils import counters

import model
from bench.backends import compile as compile_backend  # noqa: F401  (raises Dynamo's recompile limits)
from bench.backends import eager
from bench.backends.compile import unavailable as compile_unavailable

KERNELS = "inductor"  # the compiled regions' kernels; the eager parts run aten's


def unavailable(device, **options):
    return compile_unavailable(device)


def outside_kernels(device, optimizer=False, whole_iteration=False, **options):
    if whole_iteration:
        return ("Dynamo's guards at each compiled region and resume function, compiled autograd's "
                "capture of the autograd graph, the graphs' Python wrappers")
    if optimizer:
        return ("Python, the loss eager, the autograd engine, Dynamo's guards at each compiled region "
                "and the graphs' Python wrappers")
    return ("Python, the loss and SGD eager, the autograd engine running the compiled backward, "
            "Dynamo's guards and the graphs' Python wrappers")


def graph_counts():
    """Dynamo's running totals: graphs compiled, and graph breaks by reason."""
    return counters["stats"]["unique_graphs"], collections.Counter(counters["graph_break"])


def break_reason(text):
    """The first line of a graph-break reason, which names it (the rest is hints and links)."""
    return text.strip().splitlines()[0]


def step_structure(step):
    """Run `step` once under torch.profiler and count what it went through: Dynamo's compiled
    regions (one per compiled frame entered: entry points and the resume functions after each
    graph break), those of compiled autograd (ids starting with "!"), and Inductor graphs run."""
    from torch.profiler import profile

    with profile() as prof:
        result = step()
    names = [event.name for event in prof.events()]
    regions = [name for name in names if name.startswith("Torch-Compiled Region: ")]
    return result, {"compiled_regions": len(regions),
                    "compiled_autograd_regions": sum(": !" in name for name in regions),
                    "inductor_graphs": sum(name.startswith("## Call CompiledFxGraph") for name in names)}


# Graph breaks seen when a configuration's step was first traced, by its options: a second runner
# with the same options and batch size in one process reuses Dynamo's cached code and traces nothing.
TRACED_BREAKS = {}


class Runner(eager.Runner):
    """Eager's runner (its Net, optimizer, parameters and gradients), with what users compile compiled."""

    def __init__(self, state_dict, device="cpu", dtype=torch.float32, optimizer=False, whole_iteration=False,
                 inductor_options=None):
        super().__init__(state_dict, device=device, dtype=dtype)
        compile_options = {"dynamic": False, "options": inductor_options}
        self.compiled_net = torch.compile(self.net, **compile_options)
        self.info = {}  # what Dynamo made of the step: graphs, regions, graph breaks
        self.steps = 0
        self.key = (optimizer, whole_iteration, device, dtype, repr(inductor_options))

        if whole_iteration:
            def iteration(x, target):
                self.optimizer.zero_grad()
                loss = model.loss_fn(self.net(x), target)
                loss.backward()
                self.optimizer.step()
                return loss.detach()

            with torch._dynamo.config.patch(compiled_autograd=True):
                self._step = torch.compile(iteration, **compile_options)
            return

        if optimizer:
            def optimizer_step():
                self.optimizer.step()

            optimizer_step = torch.compile(optimizer_step, **compile_options)
        else:
            optimizer_step = self.optimizer.step

        def step(x, target):
            self.optimizer.zero_grad()
            loss = model.loss_fn(self.compiled_net(x), target)
            loss.backward()
            optimizer_step()
            return loss.detach()

        self._step = step

    def train_step(self, x, target):
        model.check_input(x, target, dtype=self.dtype, device=self.device)
        self.steps += 1
        if self.steps > 2:
            return self._step(x, target)
        if self.steps == 1:  # compiles: record the graph breaks Dynamo traced
            return self._first_step(x, target)
        loss, structure = step_structure(lambda: self._step(x, target))
        self.info.update(structure)
        return loss

    def _first_step(self, x, target):
        graphs, breaks = graph_counts()
        loss = self._step(x, target)
        new_graphs, new_breaks = graph_counts()
        if new_graphs > graphs:
            breaks = new_breaks - breaks
            TRACED_BREAKS[self.key] = {"graph_breaks": sum(breaks.values()), "graph_break_reasons": "; ".join(
                f"{break_reason(reason)} x{count}" for reason, count in breaks.items())}
        self.info.update(TRACED_BREAKS.get(self.key, {}))
        return loss

    @torch.no_grad()
    def forward(self, x):
        model.check_input(x, dtype=self.dtype, device=self.device)
        return self.compiled_net(x)
