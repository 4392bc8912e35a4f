"""ONNX Runtime: the Net exported to ONNX, trained by a one-step graph of standard ops.

The training step is `train_step.onnx` from export.train_graph: parameters go in, updated
parameters come out. They are fed back as the next step's inputs without copies: two sets of
parameter buffers (torch tensors on the runner's device) take turns as inputs and outputs, each
turn with its own IOBinding prepared once. Every step binds its batch anew (the benchmarks feed
a different batch tensor each call, and every backend pays for taking it).

The forward pass takes the parameters as inputs too (export.train_graph.build_forward), like
compile and aotinductor: it is bound to the current buffer set, so training never forces a
session rebuild and no backend's forward gains from constant weights.

The training graph is one of export.train_graph.TRAIN_GRAPHS (option `train_graph`): by default
train_graph.DEFAULT_TRAIN_GRAPH on CPU and "portable" on CUDA, whose provider has no kernels for
the other variant's Col2Im and MaxUnpool (train_graph_for says which; asking for "unpool" on
CUDA makes the backend unavailable).

On CUDA: strict float32 (the CUDA provider's TF32 is off, like torch's in bench.backends), and
no silent split between GPU and CPU: ONNX Runtime would run any node its CUDA provider lacks on
the CPU provider with copies each step; here that fallback is refused, so a graph with such a
node fails at session creation and the backend is unavailable with that reason.
`info["node_providers"]` records, from ONNX Runtime's profiler over one call, how many nodes of
each session ran on which provider.

Export and session creation happen once, in __init__ (their times in `export_seconds` and
`session_seconds`); the session options are in `info`. float32 only.

`profile_prefix` (optional) turns on ONNX Runtime's own profiler for both sessions: each writes
a JSON trace named `<profile_prefix>_<date>.json` (the train session's path comes back from
`train_session.end_profiling()`); bench.profile uses it. Off by default.
"""

import functools
import hashlib
import json
import os
import tempfile
import time

import numpy as np
import torch

import model
from bench import backends, files

_IMPORT_ERROR = None
try:
    import onnx
    import onnxruntime as ort
    import onnxscript  # noqa: F401  (the exporter needs it)
except ImportError as error:  # pragma: no cover - depends on the environment
    _IMPORT_ERROR = error

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
# Session config entry (onnxruntime_session_options_config_keys.h): "1" makes session creation
# fail when a node would be placed on the CPU provider that was not asked for.
DISABLE_CPU_FALLBACK = "session.disable_cpu_ep_fallback"
# ("forward" or a training-graph variant, opset, parameter shapes) -> checked ModelProto, see _models
_TEMPLATES = {}
KERNELS = "onnxruntime"


def train_graph_for(device, train_graph=None):
    """The training-graph variant a Runner on `device` uses: `train_graph` when given, else
    "portable" on CUDA (the only one its provider can run whole), the CPU default elsewhere."""
    from export import train_graph as graphs

    if train_graph is not None:
        graphs.check_train_graph(train_graph)
        return train_graph
    return graphs.PORTABLE if torch.device(device).type == "cuda" else graphs.DEFAULT_TRAIN_GRAPH


def unavailable(device, train_graph=None):
    if _IMPORT_ERROR is not None:
        return f"cannot import {_IMPORT_ERROR.name or 'onnxruntime/onnx/onnxscript'}: {_IMPORT_ERROR}"
    device = torch.device(device).type
    if device not in PROVIDERS:
        return f"no ONNX Runtime provider for device {device!r}"
    if PROVIDERS[device] not in ort.get_available_providers():
        return f"{PROVIDERS[device]} is not available in this onnxruntime build (install onnxruntime-gpu)"
    if device == "cuda":
        from export import train_graph as graphs

        chosen = train_graph_for(device, train_graph)
        if chosen != graphs.PORTABLE:
            return (f"the {chosen!r} training graph uses Col2Im and MaxUnpool, which the CUDA provider "
                    f"does not implement; on CUDA use {graphs.PORTABLE!r}")
        return _cuda_sessions_fail(chosen)
    return None


def outside_kernels(device, **options):
    return "ONNX Runtime's session run: input and output binding, its executor and allocator"


@functools.cache
def _cuda_sessions_fail(train_graph):
    """Why the sessions cannot be created on the CUDA provider alone, or None (checked once)."""
    state = model.make_net(0).state_dict()
    forward, train, _ = _models(state, _default_opset(), train_graph)
    for name, proto in (("forward", forward), (f"{train_graph} training-step", train)):
        try:
            ort.InferenceSession(proto.SerializeToString(), session_options("cuda"),
                                 providers=providers("cuda"))
        except Exception as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            return (f"the {name} graph has nodes the CUDA provider cannot run and CPU fallback is "
                    f"refused: {first}")
    return None


def _default_opset():
    from export import train_graph

    return train_graph.DEFAULT_OPSET


def _template(what, state_dict, opset):
    """The checked ModelProto `what` ("forward" or a training-graph variant) for parameters shaped
    like these, and whether the export ran now (False: reused from this process or from disk)."""
    from export import train_graph

    key = (what, opset, tuple((k, tuple(v.shape)) for k, v in state_dict.items()))
    exported = False
    if key not in _TEMPLATES:
        path = _export_cache_path(key)
        proto = _load_cached(path)
        if proto is None:
            cpu = {k: v.detach().to("cpu", torch.float32) for k, v in state_dict.items()}
            if what == "forward":
                proto = train_graph.build_forward(cpu, opset)
            else:
                proto = train_graph.build_train_step(cpu, opset, train_graph=what)
            train_graph.check(proto)
            files.write_atomic(path, lambda f: f.write(proto.SerializeToString()))
            exported = True
        _TEMPLATES[key] = proto
    return _TEMPLATES[key], exported


def _export_cache_path(key):
    """Where an exported graph is kept between processes: in Inductor's cache folder (so a cold
    TORCHINDUCTOR_CACHE_DIR is cold here too), named by a hash of what the graph depends on: the
    export code itself, the versions of torch, onnx and onnxscript, the variant, opset and shapes.
    The weights are inputs of the graph, not part of it."""
    import onnxscript
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    from export import train_graph

    with open(train_graph.__file__, "rb") as f:
        source = hashlib.sha256(f.read()).hexdigest()
    ingredients = repr((key, source, torch.__version__, torch.version.git_version, onnx.__version__,
                        onnxscript.__version__))
    name = hashlib.sha256(ingredients.encode()).hexdigest()[:32]
    return os.path.join(cache_dir(), "lenet-bench-onnx", f"{key[0]}-{name}.onnx")


def _load_cached(path):
    """The graph saved at `path` by an earlier process, or None (missing or unreadable: export again)."""
    try:
        with open(path, "rb") as f:
            proto = onnx.ModelProto.FromString(f.read())
    except Exception:  # missing, or not a ModelProto (protobuf's DecodeError): export again
        return None
    return proto


def _models(state_dict, opset, train_graph=None):
    """(forward, train-step) ModelProtos for parameters shaped like these, both taking the
    parameters as inputs, and whether an export ran now (False: both reused from earlier in this
    process). One export serves every Runner. `train_graph`: the variant, default the CPU one."""
    forward, forward_exported = _template("forward", state_dict, opset)
    train, train_exported = _template(train_graph_for("cpu", train_graph), state_dict, opset)
    return forward, train, forward_exported or train_exported


def providers(device, device_id=0):
    """The provider list for `device`. On CUDA the CUDA provider alone, TF32 off (its default is
    on; the torch backends and the agreement check run strict float32)."""
    device = torch.device(device).type
    if device == "cuda":
        return [(PROVIDERS["cuda"], {"device_id": str(device_id), "use_tf32": "0"})]
    return [PROVIDERS["cpu"]]


def session_options(device="cpu", threads=None):
    """Sequential execution on `threads` intra-op threads (torch's count by default), no spinning;
    on CUDA no fallback to the CPU provider."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    # Idle pool threads spinning would steal cycles from whatever is timed after this backend.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if torch.device(device).type == "cuda":  # a node the CUDA provider lacks fails the session
        options.add_session_config_entry(DISABLE_CPU_FALLBACK, "1")
    return options


def node_providers(proto, device, feeds):
    """{provider: number of nodes it ran} over one call of `proto` on `device`, from ONNX
    Runtime's profiler (a throwaway session; its trace file is removed). `feeds`: name -> array."""
    with tempfile.TemporaryDirectory() as folder:
        options = session_options(device)
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(folder, "placement")
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=providers(device))
        session.run(None, feeds)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    counts = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            provider = event.get("args", {}).get("provider", "unknown")
            counts[provider] = counts.get(provider, 0) + 1
    return counts


class Runner:
    def __init__(self, state_dict, device="cpu", dtype=torch.float32, opset=None, train_graph=None,
                 profile_prefix=None):
        if dtype != torch.float32:
            raise ValueError(f"onnxruntime backend: float32 only, got {dtype}")
        from export import train_graph as graphs

        self.device, self.dtype = torch.device(device), dtype
        self.train_graph = train_graph_for(self.device, train_graph)
        reason = unavailable(self.device, self.train_graph)
        if reason:
            raise RuntimeError(f"onnxruntime backend unavailable on {self.device}: {reason}")
        self.keys = list(state_dict)
        opset = opset or graphs.DEFAULT_OPSET

        start = time.perf_counter()
        forward, train, exported = _models(state_dict, opset, self.train_graph)
        self.export_seconds = time.perf_counter() - start
        self._ort_device = "cuda" if self.device.type == "cuda" else "cpu"
        self._device_id = (self.device.index or 0) if self.device.type == "cuda" else 0
        self._provider = PROVIDERS[self.device.type]
        self._providers = providers(self.device, self._device_id)
        # Where each node runs, from one profiled call of each graph: on CUDA only, where a node could
        # land elsewhere; on CPU the one provider runs every node, and two more sessions would be waste.
        placement = None
        if self.device.type == "cuda":
            x, target = (t.numpy() for t in model.make_batch(1))
            params = {k: v.detach().to("cpu", torch.float32).numpy() for k, v in state_dict.items()}
            placement = {
                "forward": node_providers(forward, self.device, {"input": x, **params}),
                "train": node_providers(train, self.device, {"input": x, "target": target, **params}),
            }
        options = session_options(self.device)
        if profile_prefix:  # ONNX Runtime's per-node profiler, from session creation on
            options.enable_profiling = True
            options.profile_file_prefix = str(profile_prefix)
        start = time.perf_counter()
        self.train_session = self._session(train, options)
        self.infer_session = self._session(forward, options)
        self.session_seconds = time.perf_counter() - start
        self.info = {
            "provider": self._provider,
            "providers": list(self.train_session.get_providers()),
            "provider_options": {k: v for k, v in self.train_session.get_provider_options().items()
                                 if k == self._provider and self.device.type == "cuda"},
            "graph_optimization_level": str(options.graph_optimization_level),
            "execution_mode": str(options.execution_mode),
            "intra_op_num_threads": options.intra_op_num_threads,
            "inter_op_num_threads": options.inter_op_num_threads,
            "session.intra_op.allow_spinning": "0",
            "session.inter_op.allow_spinning": "0",
            DISABLE_CPU_FALLBACK: "1" if self.device.type == "cuda" else "0",
            "node_providers": placement,
            "opset": opset,
            "train_graph": self.train_graph,
            "export_cached": not exported,
            "io_binding": True,
            "forward_weights": "inputs",
        }

        # Two buffer sets; a step reads one and writes the other, then they swap roles.
        first = {
            k: v.detach().to(self.device, torch.float32).clone().contiguous() for k, v in state_dict.items()
        }
        self._buffers = [first, {k: torch.empty_like(v) for k, v in first.items()}]
        self._loss = torch.empty((), dtype=torch.float32, device=self.device)
        self._bindings = [self._train_binding(self._buffers[i], self._buffers[1 - i]) for i in (0, 1)]
        self._forward_bindings = [self._forward_binding(self._buffers[i]) for i in (0, 1)]
        self._current = 0  # index of the buffer set holding the current parameters

    def _session(self, proto, options):
        return ort.InferenceSession(proto.SerializeToString(), options, providers=self._providers)

    def _bind(self, binding, name, tensor, output=False):
        """Bind a contiguous float32 torch tensor's memory in place: no copy either way."""
        bind = binding.bind_output if output else binding.bind_input
        bind(name, self._ort_device, self._device_id, np.float32, list(tensor.shape), tensor.data_ptr())

    def _train_binding(self, source, destination):
        binding = self.train_session.io_binding()
        for k in self.keys:
            self._bind(binding, k, source[k])
            self._bind(binding, k + ".updated", destination[k], output=True)
        self._bind(binding, "loss", self._loss, output=True)
        return binding

    def _forward_binding(self, parameters):
        binding = self.infer_session.io_binding()
        for k in self.keys:
            self._bind(binding, k, parameters[k])
        return binding

    def _sync(self):
        backends.synchronize(self.device)

    def train_step(self, x, target):
        model.check_input(x, target, dtype=self.dtype, device=self.device)
        x, target = x.contiguous(), target.contiguous()
        binding = self._bindings[self._current]
        self._bind(binding, "input", x)  # every step: each call may bring another batch tensor
        self._bind(binding, "target", target)
        self._sync()  # inputs written by torch kernels must be complete before ORT reads them
        self.train_session.run_with_iobinding(binding)
        self._current = 1 - self._current
        return self._loss.clone()

    def forward(self, x):
        model.check_input(x, dtype=self.dtype, device=self.device)
        x = x.contiguous()
        out = torch.empty((x.shape[0], model.NUM_OUTPUTS), dtype=torch.float32, device=self.device)
        binding = self._forward_bindings[self._current]  # the current parameters, bound once
        self._bind(binding, "input", x)
        self._bind(binding, "output", out, output=True)
        self._sync()
        self.infer_session.run_with_iobinding(binding)
        return out

    def parameters(self):
        """A snapshot: the buffers themselves are overwritten by later steps."""
        return {k: v.clone() for k, v in self._buffers[self._current].items()}

    def gradients(self):
        return None  # the step graph updates in place of exposing gradients
