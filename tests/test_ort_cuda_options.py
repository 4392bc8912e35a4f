"""ONNX Runtime on CUDA, checked without a GPU: the session options and provider options the
runner would use (strict float32, no silent CPU fallback) and the reason it gives when the
CUDA provider cannot take the whole graph."""

import types

import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

from bench.backends import onnxruntime as ort_backend  # noqa: E402


def test_cuda_provider_alone_with_tf32_off():
    assert ort_backend.providers("cuda:1", device_id=1) == [
        ("CUDAExecutionProvider", {"device_id": "1", "use_tf32": "0"})]
    assert ort_backend.providers("cpu") == ["CPUExecutionProvider"]


def test_cuda_session_refuses_cpu_fallback_and_cpu_session_does_not():
    key = "session.disable_cpu_ep_fallback"
    assert ort_backend.DISABLE_CPU_FALLBACK == key
    assert ort_backend.session_options("cuda").get_session_config_entry(key) == "1"
    with pytest.raises(RuntimeError, match="does not have configuration"):  # unset on CPU
        ort_backend.session_options("cpu").get_session_config_entry(key)
    for device in ("cpu", "cuda"):
        options = ort_backend.session_options(device)
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_fallback_refused_is_a_real_onnxruntime_setting():
    """The key is one ONNX Runtime knows: asking for the CPU provider's nodes to be refused while
    placing nodes on it fails, so the name is not a silently ignored typo."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    opsets = [helper.make_opsetid("", 18)]
    # The IR version that goes with the opset, as the exporter writes it, not onnx's newest (14 in
    # onnx 1.23), which onnxruntime before 1.31 refuses to load.
    proto = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(proto)
    options = ort_backend.session_options("cuda")
    # With no provider but the implicit CPU one, every node lands on the refused CPU provider.
    with pytest.raises(Exception, match="fallback to CPU EP has been explicitly disabled"):
        ort.InferenceSession(proto.SerializeToString(), options, providers=["CUDAExecutionProvider"]
                             if "CUDAExecutionProvider" in ort.get_available_providers() else [])


def test_a_graph_the_cuda_provider_cannot_take_makes_the_backend_unavailable(monkeypatch):
    """Session creation failing on the CUDA provider alone (what ONNX Runtime does when a node,
    such as Col2Im or MaxUnpool, has no CUDA kernel and fallback is refused) becomes a one-line
    reason, so the backend is skipped with it instead of failing."""
    def refuse(*args, **kwargs):
        raise RuntimeError("This session contains graph nodes that are assigned to the default CPU EP, "
                           "but fallback to CPU EP has been explicitly disabled by the user.\nmore")

    graph = types.SimpleNamespace(SerializeToString=lambda: b"")
    monkeypatch.setattr(ort_backend, "_models", lambda state, opset, train_graph: (graph, graph, False))
    monkeypatch.setattr(ort_backend.ort, "InferenceSession", refuse)
    ort_backend._cuda_sessions_fail.cache_clear()
    try:
        reason = ort_backend._cuda_sessions_fail("portable")
    finally:
        ort_backend._cuda_sessions_fail.cache_clear()
    assert reason.startswith("the forward graph has nodes the CUDA provider cannot run")
    assert "CPU fallback is refused: This session contains graph nodes" in reason and "\n" not in reason


def test_cuda_runs_the_portable_training_graph(monkeypatch):
    """The variant each device gets: on CUDA the portable one unless asked otherwise, and asking
    for the unpool one there (Col2Im, MaxUnpool: no CUDA kernels) is a reason to skip, given
    before any session is tried. The session check runs on the portable graph."""
    from export import train_graph

    assert ort_backend.train_graph_for("cuda") == ort_backend.train_graph_for("cuda:1") == "portable"
    assert ort_backend.train_graph_for("cpu") == train_graph.DEFAULT_TRAIN_GRAPH
    assert ort_backend.train_graph_for("cuda", "unpool") == "unpool"
    with pytest.raises(ValueError, match="unknown training graph 'col2im'; choose from: unpool, portable"):
        ort_backend.train_graph_for("cpu", "col2im")

    checked = []
    monkeypatch.setattr(ort_backend.ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort_backend, "_cuda_sessions_fail", lambda variant: checked.append(variant))
    assert ort_backend.unavailable("cuda") is None
    assert ort_backend.unavailable("cuda", train_graph="portable") is None
    assert checked == ["portable", "portable"]
    reason = ort_backend.unavailable("cuda", train_graph="unpool")
    assert "Col2Im and MaxUnpool" in reason and "use 'portable'" in reason and checked == ["portable"] * 2
    from bench import backends

    for name, (module, options) in backends.CONFIGS.items():  # every onnxruntime configuration
        if module == "onnxruntime":
            assert ort_backend.train_graph_for("cuda", **options) == "portable", name
