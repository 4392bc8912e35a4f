"""OpenVINO (pip `openvino`, the optional extra) on the same net.onnx, CPU plugin.

Precision pinned: INFERENCE_PRECISION_HINT f32 (the CPU plugin otherwise runs bf16 where the
hardware has it, silently; openvino.genai#164). Batch 1 is compiled with the LATENCY hint and run as
one synchronous request (inputs and outputs shared, not copied; the output valid until the next call);
the large batches with the THROUGHPUT hint, the batch split over the
plugin's optimal number of infer requests, run at once in an AsyncInferQueue (one stream each),
which is what that hint is for. INFERENCE_NUM_THREADS is the thread count."""

import numpy as np
import torch

from bench.deployed import ort_optimized as ort_runtime

EXPECTED = ort_runtime.EXPECTED
SEPARATE_THROUGHPUT = True  # a second compiled model, THROUGHPUT hint, for the large batches
SETTINGS = {
    "device": "CPU",
    "INFERENCE_PRECISION_HINT": "f32",
    "PERFORMANCE_HINT": "LATENCY at batch 1 (one synchronous request), THROUGHPUT at 64 and 256 "
    "(the batch split over OPTIMAL_NUMBER_OF_INFER_REQUESTS, an AsyncInferQueue)",
    "INFERENCE_NUM_THREADS": "the thread count",
}


def unavailable():
    try:
        import openvino  # noqa: F401
    except ImportError as error:
        return f"openvino is not installed ({error}); pip install -e '.[openvino]'"
    return None


def artifact(threads):
    return ort_runtime.SOURCE  # the plugin reads ONNX itself; nothing of its own to save


def build(state_dict, path, threads):
    ort_runtime.build_source(state_dict, path)


def check(path):
    ort_runtime.check(path)


def load(path, threads, mode):
    import openvino as ov

    core = ov.Core()
    hint = "LATENCY" if mode == "latency" else "THROUGHPUT"
    compiled = core.compile_model(
        core.read_model(path),
        "CPU",
        {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": threads},
    )
    requests = compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS") if hint == "THROUGHPUT" else 1
    if requests <= 1:
        request = compiled.create_infer_request()

        def call(x):
            return torch.from_numpy(request.infer({0: x.numpy()}, share_inputs=True, share_outputs=True)[0])

        return call
    queue = ov.AsyncInferQueue(compiled, requests)
    outputs = {}
    queue.set_callback(
        lambda request, index: outputs.__setitem__(index, request.get_output_tensor(0).data.copy())
    )

    def call_split(x):
        outputs.clear()
        chunks = np.array_split(x.numpy(), requests)
        for index, chunk in enumerate(chunks):
            queue.start_async({0: chunk}, userdata=index, share_inputs=True)
        queue.wait_all()
        return torch.from_numpy(np.concatenate([outputs[i] for i in range(len(chunks))]))

    return call_split
