"""ONNX Runtime on net.onnx (export/to_onnx.py's inference model: the weights are initializers,
not graph inputs, so they can be constant-folded; onnxruntime#4507). At build time a session at
ORT_ENABLE_ALL writes its optimised graph beside it (SessionOptions.optimized_model_filepath),
net-ort.onnx; that is what is loaded, with no optimisation re-applied. The optimised file can hold
layout transforms (NCHWc) for this CPU's vector ISA: it is an artifact of this machine.
Threads: intra_op = the thread count, sequential execution, no spinning (idle pool threads spinning
would steal cycles from whatever runs next, eager's blocks included)."""

import os

import numpy as np
import torch

from bench import files
from bench.deployed import ArtifactError, check_file, first_line

EXPECTED = "an ONNX model of the Net (input 'input' (B, 1, 32, 32), weights as initializers)"
SETTINGS = {
    "graph_optimization_level": "ORT_ENABLE_ALL, applied at build time and saved "
    "(optimized_model_filepath); loaded with ORT_DISABLE_ALL",
    "execution_mode": "ORT_SEQUENTIAL",
    "intra_op_num_threads": "the thread count",
    "inter_op_num_threads": 1,
    "allow_spinning": 0,
    "calls": "IO binding: the batch copied into a bound input buffer, the output into a bound one "
    "(tried: session.run, slower at batch 1 in a probe; spinning allowed, no faster; docs/deployed.md)",
}
SOURCE = "net.onnx"


def unavailable():
    try:
        import onnxruntime  # noqa: F401
    except ImportError as error:
        return f"onnxruntime is not installed ({error}); pip install -e '.[ort]'"
    return None


def artifact(threads):
    return "net-ort.onnx"


def options(threads, level):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return opts


def build_source(state_dict, path):
    """net.onnx: the inference graph with the weights as initializers, checked, written whole."""
    from export import train_graph

    proto = train_graph.build_inference(state_dict)
    train_graph.check(proto)
    files.write_atomic(path, lambda f: f.write(proto.SerializeToString()))


def build(state_dict, path, threads):
    import onnxruntime as ort

    source = os.path.join(os.path.dirname(os.path.abspath(path)), SOURCE)
    if not os.path.exists(source):
        build_source(state_dict, source)

    def optimise(tmp):
        opts = options(threads, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        opts.optimized_model_filepath = tmp
        ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])

    files.replace_atomic(path, optimise, suffix=".onnx")


def check(path):
    """The file is an ONNX model with one graph input, 'input', and its weights as initializers."""
    import onnx

    check_file(path, EXPECTED)
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as error:
        raise ArtifactError(
            f"{path}: not an ONNX model ({type(error).__name__}: {first_line(error)}); expected {EXPECTED}"
        ) from None
    inputs = [i.name for i in proto.graph.input]
    if inputs != ["input"] or not proto.graph.initializer:
        raise ArtifactError(
            f"{path}: an ONNX model with inputs {inputs} and {len(proto.graph.initializer)} "
            f"initializers; expected {EXPECTED}"
        )


def load(path, threads, mode):
    import onnxruntime as ort

    session = ort.InferenceSession(
        path, options(threads, ort.GraphOptimizationLevel.ORT_DISABLE_ALL), providers=["CPUExecutionProvider"]
    )
    bound = {}  # batch size -> (input buffer, output buffer, binding)

    def binding(batch):
        """IO binding, as a server reusing its buffers would: the request is copied into a bound
        input buffer and the answer written into a bound output buffer (valid until the next call
        at that batch size). It saves session.run's per-call allocation and name lookups
        (docs/deployed.md, "Settings tried")."""
        if batch not in bound:
            x = np.zeros((batch, 1, 32, 32), np.float32)
            y = np.zeros((batch, 10), np.float32)
            io = session.io_binding()
            io.bind_cpu_input("input", x)
            io.bind_output("output", "cpu", 0, np.float32, y.shape, y.ctypes.data)
            bound[batch] = (x, y, io)
        return bound[batch]

    def call(x):
        x_buffer, y_buffer, io = binding(x.shape[0])
        np.copyto(x_buffer, x.numpy())
        session.run_with_iobinding(io)
        return torch.from_numpy(y_buffer)

    return call
