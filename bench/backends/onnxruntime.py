"""ONNX Runtime: the Net exported to ONNX, trained by a one-step graph of standard ops.

The training step is `train_step.onnx` from export.train_graph: parameters go in, updated
parameters come out. They are fed back as the next step's inputs without copies: two sets of
parameter buffers (torch tensors on the runner's device) take turns as inputs and outputs, each
turn with its own IOBinding prepared once, so a step binds only the batch and runs.

Export and session creation happen once, in __init__ (their times in `export_seconds` and
`session_seconds`); the session options are in `info`. float32 only.

`profile_prefix` (optional) turns on ONNX Runtime's own profiler for both sessions: each writes
a JSON trace named `<profile_prefix>_<date>.json` (the train session's path comes back from
`train_session.end_profiling()`); bench.profile uses it. Off by default.
"""

import time

import numpy as np
import torch

import model
from bench import backends

_IMPORT_ERROR = None
try:
    import onnx
    import onnxruntime as ort
    import onnxscript  # noqa: F401  (the exporter needs it)
except ImportError as error:  # pragma: no cover - depends on the environment
    _IMPORT_ERROR = error

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
_TEMPLATES = {}  # (opset, parameter shapes) -> (inference proto, train-step proto), see _models


def unavailable(device):
    if _IMPORT_ERROR is not None:
        return f"cannot import {_IMPORT_ERROR.name or 'onnxruntime/onnx/onnxscript'}: {_IMPORT_ERROR}"
    device = torch.device(device).type
    if device not in PROVIDERS:
        return f"no ONNX Runtime provider for device {device!r}"
    if PROVIDERS[device] not in ort.get_available_providers():
        return f"{PROVIDERS[device]} is not available in this onnxruntime build (install onnxruntime-gpu)"
    return None


def _models(state_dict, opset):
    """(inference, train-step) ModelProtos for parameters shaped like these, and whether the
    export ran now (False: reused from earlier in this process).

    The train-step graph takes the parameters as inputs and the inference graph's
    initializers are replaced by `with_parameters`, so one export serves every Runner.
    """
    from export import train_graph

    key = (opset, tuple((k, tuple(v.shape)) for k, v in state_dict.items()))
    exported = key not in _TEMPLATES
    if exported:
        cpu = {k: v.detach().to("cpu", torch.float32) for k, v in state_dict.items()}
        inference = train_graph.build_inference(cpu, opset)
        train = train_graph.build_train_step(cpu, opset)
        for proto in (inference, train):
            train_graph.check(proto)
        _TEMPLATES[key] = (inference, train)
    return (*_TEMPLATES[key], exported)


def with_parameters(inference, parameters):
    """A copy of the inference model whose initializers hold `parameters` (named by key)."""
    proto = onnx.ModelProto()
    proto.CopyFrom(inference)
    for init in proto.graph.initializer:
        if init.name in parameters:
            value = parameters[init.name].detach().to("cpu", torch.float32).contiguous().numpy()
            init.CopyFrom(onnx.numpy_helper.from_array(value, init.name))
    return proto


def session_options(threads=None):
    """Sequential execution on `threads` intra-op threads (torch's count by default), no spinning."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    # Idle pool threads spinning would steal cycles from whatever is timed after this backend.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


class Runner:
    def __init__(self, state_dict, device="cpu", dtype=torch.float32, opset=None, profile_prefix=None):
        if dtype != torch.float32:
            raise ValueError(f"onnxruntime backend: float32 only, got {dtype}")
        from export import train_graph

        self.device, self.dtype = torch.device(device), dtype
        reason = unavailable(self.device)
        if reason:
            raise RuntimeError(f"onnxruntime backend unavailable on {self.device}: {reason}")
        self.keys = list(state_dict)
        opset = opset or train_graph.DEFAULT_OPSET
        self._steps = 0  # training steps run; the forward session is rebuilt when it lags

        start = time.perf_counter()
        inference, train, exported = _models(state_dict, opset)
        self.export_seconds = time.perf_counter() - start
        self._provider = provider = PROVIDERS[self.device.type]
        self._options = options = session_options()
        if profile_prefix:  # ONNX Runtime's per-node profiler, from session creation on
            options.enable_profiling = True
            options.profile_file_prefix = str(profile_prefix)
        self._inference = inference
        start = time.perf_counter()
        # On CUDA, ONNX Runtime places any node its CUDA provider lacks on the CPU provider.
        self._providers = [provider] if provider == PROVIDERS["cpu"] else [provider, PROVIDERS["cpu"]]
        self.train_session = ort.InferenceSession(
            train.SerializeToString(), options, providers=self._providers
        )
        self._forward_session(state_dict)
        self.session_seconds = time.perf_counter() - start
        self.info = {
            "provider": provider,
            "providers": list(self.train_session.get_providers()),
            "graph_optimization_level": str(options.graph_optimization_level),
            "execution_mode": str(options.execution_mode),
            "intra_op_num_threads": options.intra_op_num_threads,
            "inter_op_num_threads": options.inter_op_num_threads,
            "session.intra_op.allow_spinning": "0",
            "session.inter_op.allow_spinning": "0",
            "opset": opset,
            "export_cached": not exported,
            "io_binding": True,
            "forward_session_rebuilds": 0,
        }

        self._ort_device = "cuda" if self.device.type == "cuda" else "cpu"
        self._device_id = (self.device.index or 0) if self.device.type == "cuda" else 0
        # Two buffer sets; a step reads one and writes the other, then they swap roles.
        first = {
            k: v.detach().to(self.device, torch.float32).clone().contiguous() for k, v in state_dict.items()
        }
        self._buffers = [first, {k: torch.empty_like(v) for k, v in first.items()}]
        self._loss = torch.empty((), dtype=torch.float32, device=self.device)
        self._bindings = [self._train_binding(self._buffers[i], self._buffers[1 - i]) for i in (0, 1)]
        self._current = 0  # index of the buffer set holding the current parameters
        self._bound_batch = [None, None]  # per binding: (input ptr, shape, target ptr) last bound

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

    def _sync(self):
        backends.synchronize(self.device)

    def train_step(self, x, target):
        model.check_input(x, target, dtype=self.dtype, device=self.device)
        x, target = x.contiguous(), target.contiguous()
        binding = self._bindings[self._current]
        key = (x.data_ptr(), tuple(x.shape), target.data_ptr())
        if self._bound_batch[self._current] != key:
            self._bind(binding, "input", x)
            self._bind(binding, "target", target)
            self._bound_batch[self._current] = key
        self._sync()  # inputs written by torch kernels must be complete before ORT reads them
        self.train_session.run_with_iobinding(binding)
        self._current = 1 - self._current
        self._steps += 1
        return self._loss.clone()

    def _forward_session(self, parameters):
        """(Re)build the inference session with `parameters` as its initializers.

        Constant weights let ONNX Runtime pre-pack them and pick its blocked (NCHWc)
        convolutions, about twice as fast at batch 256 as weights fed as inputs; the price
        is this rebuild (tens of ms) on the first forward after the parameters changed.
        """
        proto = with_parameters(self._inference, parameters)
        self.infer_session = ort.InferenceSession(
            proto.SerializeToString(), self._options, providers=self._providers
        )
        self._forward_steps = self._steps

    def forward(self, x):
        model.check_input(x, dtype=self.dtype, device=self.device)
        if self._forward_steps != self._steps:  # trained since the session was built
            self._forward_session(self._buffers[self._current])
            self.info["forward_session_rebuilds"] += 1
        x = x.contiguous()
        out = torch.empty((x.shape[0], model.NUM_OUTPUTS), dtype=torch.float32, device=self.device)
        binding = self.infer_session.io_binding()
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
