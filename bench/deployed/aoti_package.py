"""AOTInductor: torch.export of the eval-mode Net (a dynamic batch) compiled ahead of time by
Inductor into a .pt2 package with the weights inside it, frozen (Inductor freezing on), loaded
with torch._inductor.aoti_load_package and called under inference_mode.

On CPU Inductor compiles the OpenMP thread count into the library, so one package is built per
thread count (net-aoti-<threads>t.pt2). A package is bound to the torch that built it
(pytorch/pytorch#123745); its load can spend time in the compiler (#191715), which the cold start
measures on its own.
"""

import os
import tempfile

import torch

import model
from bench import files
from bench.deployed import check_file

EXPECTED = "an AOTInductor .pt2 package of the Net (a zip archive) built by this torch"
INDUCTOR_CONFIGS = {"freezing": True}
SETTINGS = {
    "export": "torch.export, batch dimension dynamic (1..4096)",
    "inductor_configs": INDUCTOR_CONFIGS,
    "calls": "torch.inference_mode()",
}
MAX_BATCH = 4096


def unavailable():
    from bench.backends.compile import unavailable as compile_unavailable

    reason = compile_unavailable("cpu")
    if reason:
        return reason
    if not hasattr(torch._inductor, "aoti_compile_and_package"):
        return f"torch {torch.__version__} has no torch._inductor.aoti_compile_and_package"
    return None


def artifact(threads):
    return f"net-aoti-{threads}t.pt2"


def build(state_dict, path, threads):
    net = model.net_for_inference(state_dict)
    x, _ = model.make_batch(2)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # the count compiled into the library
    try:
        with torch.no_grad():
            program = torch.export.export(net, (x,), dynamic_shapes=({0: batch},))
        folder = os.path.dirname(os.path.abspath(path))
        with tempfile.TemporaryDirectory(dir=folder, prefix=".aoti-") as scratch:
            built = torch._inductor.aoti_compile_and_package(
                program,
                package_path=os.path.join(scratch, os.path.basename(path)),
                inductor_configs=dict(INDUCTOR_CONFIGS),
            )
            files.replace_atomic(path, lambda tmp: os.replace(built, tmp))
    finally:
        torch.set_num_threads(before)


def check(path):
    check_file(path, EXPECTED, zip_archive=True)


def load(path, threads, mode):
    runner = torch._inductor.aoti_load_package(path)

    def call(x):
        with torch.inference_mode():
            return runner(x)

    return call
