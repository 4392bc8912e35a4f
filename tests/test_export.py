"""The ONNX export: validity, names, batch sizes, agreement with eager, the CLI's errors."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import model  # noqa: E402
from bench.backends import eager  # noqa: E402
from bench.backends import onnxruntime as ort_backend  # noqa: E402
from export import to_onnx, train_graph  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5
KEYS = list(model.make_net(0).state_dict())


FORWARD = "forward with parameter inputs"
# The training step's variants by their names in the protos fixture; TRAIN_FILE is the default one.
TRAIN_GRAPH_PROTOS = {train_graph.UNPOOL: "train_step.onnx (unpool)",
                      train_graph.PORTABLE: "train_step.onnx (portable)"}


@pytest.fixture(scope="module")
def protos():
    """The models for make_net(0), exported once (the ORT backend reuses its three)."""
    state = model.make_net(0).state_dict()
    forward, train, _ = ort_backend._models(state, train_graph.DEFAULT_OPSET)
    inference = train_graph.build_inference(state)
    made = {to_onnx.INFERENCE_FILE: inference, to_onnx.TRAIN_FILE: train, FORWARD: forward}
    for variant, name in TRAIN_GRAPH_PROTOS.items():
        made[name] = ort_backend._models(state, train_graph.DEFAULT_OPSET, variant)[1]
    assert made[TRAIN_GRAPH_PROTOS[train_graph.DEFAULT_TRAIN_GRAPH]] is train
    return made


def session(proto):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", [to_onnx.INFERENCE_FILE, *TRAIN_GRAPH_PROTOS.values(), FORWARD])
def test_models_pass_full_checker_with_standard_ops_only(protos, name):
    proto = protos[name]
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    assert {o.domain for o in proto.opset_import} <= {"", "ai.onnx"}
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    assert not proto.functions
    train_graph.check(proto)


def _batch_dim(value_info):
    dim = value_info.type.tensor_type.shape.dim[0]
    return dim.dim_param if dim.HasField("dim_param") else dim.dim_value


def test_names_and_dynamic_batch(protos):
    inference, train = protos[to_onnx.INFERENCE_FILE], protos[to_onnx.TRAIN_FILE]
    assert [i.name for i in inference.graph.input] == ["input"]
    assert [o.name for o in inference.graph.output] == ["output"]
    assert [i.name for i in train.graph.input] == ["input", "target", *KEYS]
    assert [o.name for o in train.graph.output] == ["loss", *[k + ".updated" for k in KEYS]]
    forward = protos[FORWARD]
    assert [i.name for i in forward.graph.input] == ["input", *KEYS]
    assert not {i.name for i in forward.graph.initializer} & set(KEYS)  # weights are inputs
    for value_info in [inference.graph.input[0], inference.graph.output[0], *train.graph.input[:2]]:
        assert isinstance(_batch_dim(value_info), str), f"{value_info.name}: batch dimension is not dynamic"


def op_types(proto):
    return {(n.domain or "ai.onnx", n.op_type) for n in proto.graph.node}


def test_portable_train_graph_has_no_col2im_maxunpool_or_shape_ops(protos):
    """The portable step has none of the ops some runtimes lack (ONNX Runtime's CUDA provider:
    Col2Im, MaxUnpool; OpenVINO: MaxUnpool), no com.microsoft op, and no Shape, whose consumers
    ONNX Runtime would place on the CPU provider in a CUDA session. The unpool variant has the
    first two, so the test tells the variants apart."""
    portable = op_types(protos[TRAIN_GRAPH_PROTOS[train_graph.PORTABLE]])
    unpool = op_types(protos[TRAIN_GRAPH_PROTOS[train_graph.UNPOOL]])
    lacking = {("ai.onnx", "Col2Im"), ("ai.onnx", "MaxUnpool")}
    assert lacking <= unpool
    assert not portable & (lacking | {("ai.onnx", "Shape")})
    assert {domain for domain, _ in portable} == {"ai.onnx"}
    assert {("ai.onnx", "ConvTranspose"), ("ai.onnx", "CumSum")} <= portable


def test_reference_runtime_runs_one_portable_step_like_eager(protos):
    """onnx's own reference runtime (pure numpy, no ONNX Runtime) runs the portable step whole."""
    from onnx.reference import ReferenceEvaluator

    net = model.make_net(0)
    x, target = model.make_batch(2, seed=7)
    feeds = {"input": x.numpy(), "target": target.numpy(),
             **{k: v.numpy() for k, v in net.state_dict().items()}}
    loss, *updated = ReferenceEvaluator(protos[TRAIN_GRAPH_PROTOS[train_graph.PORTABLE]]).run(None, feeds)
    runner = eager.Runner(net.state_dict())
    assert abs(float(loss) - runner.train_step(x, target).item()) <= TOLERANCE
    for k, value in zip(KEYS, updated, strict=True):
        assert abs(torch.from_numpy(value) - runner.parameters()[k]).max() <= TOLERANCE, k
    assert not torch.equal(torch.from_numpy(updated[-1]), net.state_dict()[KEYS[-1]])  # it stepped


@pytest.mark.parametrize("train_name", TRAIN_GRAPH_PROTOS.values())
@pytest.mark.parametrize("batch_size", [1, 256])
def test_models_run_and_agree_at_batch(protos, batch_size, train_name):
    net = model.make_net(0)
    x, target = model.make_batch(batch_size, seed=batch_size)
    out = session(protos[to_onnx.INFERENCE_FILE]).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        expected = net(x)
    assert out.shape == (batch_size, 10)
    assert abs(torch.from_numpy(out) - expected).max() <= TOLERANCE

    feeds = {
        "input": x.numpy(),
        "target": target.numpy(),
        **{k: v.numpy() for k, v in net.state_dict().items()},
    }
    loss, *updated = session(protos[train_name]).run(None, feeds)
    runner = eager.Runner(net.state_dict())
    expected_loss = runner.train_step(x, target)
    assert loss.shape == ()
    assert abs(float(loss) - expected_loss.item()) <= TOLERANCE
    for k, value in zip(KEYS, updated, strict=True):
        assert abs(torch.from_numpy(value) - runner.parameters()[k]).max() <= TOLERANCE, k


def test_ort_runner_matches_eager_after_1_and_10_steps(protos):
    state = model.make_net(1).state_dict()
    ort_runner, eager_runner = ort_backend.Runner(state), eager.Runner(state)
    assert ort_runner.gradients() is None
    for step in range(10):
        x, target = model.make_batch(16, seed=step)
        ort_loss, eager_loss = ort_runner.train_step(x, target), eager_runner.train_step(x, target)
        assert ort_loss.dim() == 0 and abs(ort_loss - eager_loss) <= TOLERANCE
        if step in (0, 9):
            got, expected = ort_runner.parameters(), eager_runner.parameters()
            assert list(got) == KEYS
            diff = max(float(abs(got[k] - expected[k]).max()) for k in KEYS)
            assert diff <= TOLERANCE, f"after {step + 1} steps: max abs parameter difference {diff}"
    assert not torch.equal(ort_runner.parameters()["fc3.bias"], state["fc3.bias"])  # it really trained
    x, _ = model.make_batch(5)
    assert abs(ort_runner.forward(x) - eager_runner.forward(x)).max() <= TOLERANCE


class LastMaxPool(TorchFunctionMode):
    """F.max_pool2d (2x2, floor mode) that routes a tie to the last maximum of its window: the
    pool of the tensor flipped in both axes, flipped back, picks the last in row-major order."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.max_pool2d:
            x = args[0]
            x = x[:, :, : x.shape[2] // 2 * 2, : x.shape[3] // 2 * 2]  # floor mode's windows
            return F.max_pool2d(x.flip(2, 3), 2).flip(2, 3)
        return func(*args, **(kwargs or {}))


def eager_step(state, x, target, pool_mode=None):
    """One SGD step in eager float32, optionally under `pool_mode`: the updated parameters."""
    net = model.make_net(0)
    net.load_state_dict(state)
    with pool_mode or contextlib.nullcontext():
        model.loss_fn(net(x), target).backward()
    return {k: (p - model.LEARNING_RATE * p.grad).detach() for k, p in net.named_parameters()}


def max_diff(a, b):
    return max(float(abs(a[k] - b[k]).max()) for k in KEYS)


@pytest.mark.parametrize("variant", train_graph.TRAIN_GRAPHS)
def test_ort_step_breaks_max_pool_ties_like_pytorch(protos, variant):
    """conv1 outputs 0.5 everywhere (weight 0, bias 0.5), so every pooling window of both pools
    is tied, and with a random input the tied positions see different patches: where a tie's
    gradient goes changes conv1's weight gradient. Both training graphs must pick the first
    maximum, like PyTorch; the last-maximum variant is shown to be far off, so the check can fail."""
    state = model.make_net(0).state_dict()
    state["conv1.weight"] = torch.zeros_like(state["conv1.weight"])
    state["conv1.bias"] = torch.full_like(state["conv1.bias"], 0.5)
    x, target = model.make_batch(4, seed=3)
    target = target + 10  # a larger loss gradient, so the routing moves the parameters visibly
    first = eager_step(state, x, target)
    last = eager_step(state, x, target, LastMaxPool())
    assert max_diff(first, last) > 100 * TOLERANCE  # the routing shows in the parameters
    eager_runner = eager.Runner(state)  # the tutorial's loop: first is what PyTorch does
    eager_runner.train_step(x, target)
    assert max_diff(eager_runner.parameters(), first) <= TOLERANCE
    ort_runner = ort_backend.Runner(state, train_graph=variant)
    assert ort_runner.info["train_graph"] == variant
    ort_runner.train_step(x, target)
    assert max_diff(ort_runner.parameters(), first) <= TOLERANCE


def test_ort_runner_rejects_other_dtypes_and_bad_batches(protos):
    state = model.make_net(0).state_dict()
    with pytest.raises(ValueError, match="float32"):
        ort_backend.Runner(state, dtype=torch.float64)
    runner = ort_backend.Runner(state)
    for k in ("export_seconds", "session_seconds"):
        assert getattr(runner, k) >= 0
    assert runner.info["session.intra_op.allow_spinning"] == "0"
    assert runner.info["intra_op_num_threads"] == torch.get_num_threads()
    assert runner.info["forward_weights"] == "inputs"
    assert runner.info["node_providers"] is None  # counted on CUDA only, where a node could go astray
    # The count itself, on CPU: every node of both graphs ran on the CPU provider (its profiler says so).
    forward, train, _ = ort_backend._models(state, ort_backend._default_opset())
    x, target = (t.numpy() for t in model.make_batch(1))
    params = {k: v.numpy() for k, v in state.items()}
    for graph, feeds in ((forward, {"input": x, **params}),
                         (train, {"input": x, "target": target, **params})):
        counts = ort_backend.node_providers(graph, "cpu", feeds)
        assert list(counts) == ["CPUExecutionProvider"] and counts["CPUExecutionProvider"] > 5
    x, target = model.make_batch(2)
    with pytest.raises(ValueError, match="input"):
        runner.forward(x[:, :, :16])
    with pytest.raises(ValueError, match="target"):
        runner.train_step(x, target[:1])
    with pytest.raises(ValueError, match="dtype"):
        runner.train_step(x.double(), target.double())


def test_ort_forward_reads_the_live_parameters_and_every_step_binds_its_batch(protos, monkeypatch):
    """The forward session takes the current parameter buffers as inputs: after training steps it
    matches eager with no session rebuilt; and each step binds its batch (no binding cache)."""
    state = model.make_net(2).state_dict()
    ort_runner, eager_runner = ort_backend.Runner(state), eager.Runner(state)
    sessions = (ort_runner.infer_session, ort_runner.train_session)
    bound = []
    original = ort_runner._bind
    monkeypatch.setattr(ort_runner, "_bind", lambda binding, name, *a, **k: bound.append(name)
                        or original(binding, name, *a, **k))
    x, target = model.make_batch(8, seed=5)
    for step in range(3):
        ort_runner.train_step(x, target)  # the same tensors every time: still bound anew
        eager_runner.train_step(x, target)
        assert abs(ort_runner.forward(x) - eager_runner.forward(x)).max() <= TOLERANCE, step
    assert bound.count("input") == 6 and bound.count("target") == 3
    assert (ort_runner.infer_session, ort_runner.train_session) == sessions


def test_unavailable_names_a_reason_for_cuda_without_the_gpu_package():
    assert ort_backend.unavailable("cpu") is None
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    assert "onnxruntime-gpu" in ort_backend.unavailable("cuda")


def run_cli(*args):
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "export" / "to_onnx.py"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )


def assert_one_line_error(result):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_cli_out_is_a_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("keep")
    assert "not a folder" in assert_one_line_error(run_cli("--out", path))
    assert path.read_text() == "keep"


def test_cli_out_below_a_file_is_unwritable(tmp_path):
    (tmp_path / "file").write_text("")
    assert "not a writable folder" in assert_one_line_error(run_cli("--out", tmp_path / "file" / "sub"))


def test_cli_out_without_write_permission(tmp_path):
    """A folder nobody may write to: permission bits do not stop root, so use one that stops
    root too when they do not (/proc refuses new entries to everyone)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):  # root
            if not os.path.isdir("/proc/self"):
                pytest.skip("permission bits do not stop this user and there is no /proc")
            folder = "/proc/lenet-bench-out"
        assert "not a writable folder" in assert_one_line_error(run_cli("--out", folder))
    finally:
        (tmp_path / "locked").chmod(0o700)


@pytest.mark.parametrize("args", [["--batch-size", "0"], ["--batch-size", "-3"], ["--opset", "7"],
                                  ["--train-graph", "col2im"]])
def test_cli_bad_numbers(tmp_path, args):
    assert_one_line_error(run_cli("--out", tmp_path, *args))
    assert list(tmp_path.iterdir()) == []


def test_cli_existing_file_needs_force(tmp_path):
    (tmp_path / to_onnx.TRAIN_FILE).write_bytes(b"old")
    assert "--force" in assert_one_line_error(run_cli("--out", tmp_path))
    assert (tmp_path / to_onnx.TRAIN_FILE).read_bytes() == b"old"


def test_write_atomic_interrupted_leaves_no_partial_file(tmp_path):
    target = tmp_path / "train_step.onnx"

    def chunks():
        yield b"x" * 1000
        raise KeyboardInterrupt  # halfway through

    with pytest.raises(KeyboardInterrupt):
        to_onnx.write_atomic(target, chunks())
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        to_onnx.write_atomic(target, chunks())
    assert list(tmp_path.iterdir()) == [target] and target.read_bytes() == b"old"


@pytest.fixture
def cached_export(monkeypatch, protos):
    """to_onnx.main() without re-running the exporter: it gets the module's protos."""
    monkeypatch.setattr(
        train_graph, "build_inference", lambda state_dict, opset: protos[to_onnx.INFERENCE_FILE]
    )
    monkeypatch.setattr(train_graph, "build_train_step",
                        lambda state_dict, opset, variant: protos[TRAIN_GRAPH_PROTOS[variant]])


@pytest.mark.parametrize("variant", [None, *train_graph.TRAIN_GRAPHS])
def test_main_writes_both_files_and_reports(tmp_path, protos, cached_export, capsys, variant):
    """--train-graph picks the variant written (the default one without the flag); parity holds."""
    choice = ["--train-graph", variant] if variant else []
    assert to_onnx.main(["--out", str(tmp_path), "--batch-size", "3", *choice]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([to_onnx.INFERENCE_FILE, to_onnx.TRAIN_FILE])
    out = capsys.readouterr().out
    assert to_onnx.TRAIN_FILE in out and "ok" in out
    written = onnx.load(str(tmp_path / to_onnx.TRAIN_FILE))
    onnx.checker.check_model(written, full_check=True)
    assert written == protos[TRAIN_GRAPH_PROTOS[variant or train_graph.DEFAULT_TRAIN_GRAPH]]


def test_main_interrupted_while_writing_leaves_no_partial_file(tmp_path, cached_export, monkeypatch):
    def interrupted_fsync(fd):
        raise KeyboardInterrupt  # after the data went to the temporary file, before the rename

    monkeypatch.setattr(os, "fsync", interrupted_fsync)
    assert to_onnx.main(["--out", str(tmp_path), "--batch-size", "2"]) != 0
    assert list(tmp_path.iterdir()) == []


def test_main_refuses_to_write_when_parity_fails(tmp_path, cached_export, monkeypatch):
    monkeypatch.setattr(to_onnx, "parity", lambda *args: (0.0, 1.0))
    assert to_onnx.main(["--out", str(tmp_path)]) == 1
    assert list(tmp_path.iterdir()) == []
