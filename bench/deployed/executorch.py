"""ExecuTorch with its XNNPACK delegate: torch.export of the eval-mode Net at each batch size in
BATCHES, lowered with to_edge_transform_and_lower and the XnnpackPartitioner into one .pte program
holding one method per batch size ("forward_<B>"); loaded with executorch.runtime, each call
executing the method of its batch size. Static shapes: with a dynamic batch dimension (max 256)
the program refused batch 64 at run time (executorch 1.5.1: "Attempted to resize a bounded tensor
with a maximum capacity of 15360 elements").

Not in any extra: the executorch wheel (1.5.1) installs beside torch 2.13.0 without replacing it,
but brings some thirty packages with it (torchao, pandas, scikit-learn, coremltools, hydra, ...),
so the suite measures it where it is installed (a virtual environment over the main one:
docs/deployed.md) and skips it with its reason elsewhere. Its own thread pool is sized to the
thread count (portable_lib._unsafe_reset_threadpool; it starts at the core count).
"""

import os

import torch

import model
from bench import files
from bench.deployed import check_file

EXPECTED = "an ExecuTorch .pte program of the Net (XNNPACK delegate)"
BATCHES = (1, 8, 64, 256)  # the measured batch sizes and the tests' (8)
SETTINGS = {
    "export": f"torch.export, one static method per batch size {BATCHES}",
    "lowering": "to_edge_transform_and_lower, XnnpackPartitioner (float32)",
    "runtime": "executorch.runtime: load_program, load_method('forward'), execute",
    "threads": "portable_lib._unsafe_reset_threadpool(thread count)",
}


def unavailable():
    try:
        import executorch.runtime  # noqa: F401
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner  # noqa: F401
    except Exception as error:  # ImportError, or its libraries built for another torch
        return (
            f"executorch is not installed here or does not load ({type(error).__name__}: "
            f"{(str(error).splitlines() or [''])[0]}); docs/deployed.md says how it was measured"
        )
    return None


def artifact(threads):
    return "net-xnnpack.pte"


def build(state_dict, path, threads):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    net = model.net_for_inference(state_dict)
    with torch.no_grad():
        programs = {f"forward_{b}": torch.export.export(net, (model.make_batch(b)[0],)) for b in BATCHES}
    lowered = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()]).to_executorch()
    files.write_atomic(path, lambda f: f.write(lowered.buffer))


def check(path):
    check_file(path, EXPECTED)
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:6] != b"ET":  # the flatbuffer's file identifier, "ET" and the schema version
        raise deployed_error(path, f"no ExecuTorch program identifier (bytes 4..8 are {head[4:8]!r})")


def deployed_error(path, why):
    from bench.deployed import ArtifactError

    return ArtifactError(f"{path}: {why}; expected {EXPECTED}")


def load(path, threads, mode):
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    portable_lib._unsafe_reset_threadpool(threads)
    program = Runtime.get().load_program(os.fspath(path))
    methods = {}

    def call(x):
        batch = x.shape[0]
        if batch not in methods:  # loaded on first use, as a server would on its first request of a size
            if f"forward_{batch}" not in program.method_names:
                raise ValueError(f"this program has methods for batch sizes {BATCHES}, not {batch}")
            methods[batch] = program.load_method(f"forward_{batch}")
        return methods[batch].execute([x])[0]

    return call
