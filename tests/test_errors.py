"""Bad input gets one clear ValueError, the same from every backend, before any kernel runs;
missing optional pieces are skipped with their reason."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import model
from bench import backends
from bench.backends import eager

BAD_INPUTS = [
    (torch.zeros(1, 32, 32), "input: expected shape (B, 1, 32, 32) with B >= 1, got (1, 32, 32)"),
    (torch.zeros(2, 3, 32, 32), "input: expected shape (B, 1, 32, 32) with B >= 1, got (2, 3, 32, 32)"),
    (torch.zeros(2, 1, 28, 28), "input: expected shape (B, 1, 32, 32) with B >= 1, got (2, 1, 28, 28)"),
    (torch.zeros(0, 1, 32, 32), "input: expected shape (B, 1, 32, 32) with B >= 1, got (0, 1, 32, 32)"),
    (torch.zeros(2, 1, 32, 32, dtype=torch.int64),
     "input: expected a floating-point dtype, got torch.int64"),
    (torch.zeros(2, 1, 32, 32, dtype=torch.float64),
     "input: expected dtype torch.float32, got torch.float64"),
    (torch.zeros(2, 1, 32, 32, device="meta"), "input: expected device cpu, got meta"),
    ([[0.0]], "input: expected a torch.Tensor of shape (B, 1, 32, 32), got list"),
]
BAD_TARGETS = [
    (torch.zeros(2, 10), "target: expected shape (3, 10) to match the input's batch, got (2, 10)"),
    (torch.zeros(3, 1, 10), "target: expected shape (3, 10) to match the input's batch, got (3, 1, 10)"),
    (torch.zeros(3, 10, dtype=torch.float64),
     "target: expected dtype torch.float32 on cpu like the input, got torch.float64 on cpu"),
]


@pytest.fixture(scope="module")
def runners():
    state = model.make_net().state_dict()
    made = {}
    for name in backends.CONFIGS:
        if not backends.unavailable(name, "cpu"):
            made[name] = backends.create(name, state)
    return made


def kernel_spy(monkeypatch):
    """Counts convolutions run through torch.nn.functional (eager's kernels)."""
    calls = []
    original = torch.nn.functional.conv2d
    monkeypatch.setattr(torch.nn.functional, "conv2d", lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


# Where each backend's runner enters its engine: the attributes through which every kernel runs.
# Python's F.conv2d is eager's alone; compile, aotinductor and ONNX Runtime never call it.
ENGINE_ENTRIES = {
    "eager": ["net"],  # the module (its forward runs every kernel)
    "torchscript": ["net"],  # the scripted module
    "compile": ["_step", "_infer"],  # the compiled step and forward callables
    "compile_loop": ["_step", "compiled_net"],  # the loop around the compiled Net, and that Net
    "aotinductor": ["_run"],  # loads and runs the step or forward library
    "onnxruntime": ["train_session", "infer_session"],  # their run* methods
}


class EngineSpy:
    """Stands in for an engine entry: records every call into it (and into its run* methods), then
    delegates."""

    def __init__(self, target, label, calls):
        self._target, self._label, self._calls = target, label, calls

    def __call__(self, *args, **kwargs):
        self._calls.append(self._label)
        return self._target(*args, **kwargs)

    def __getattr__(self, name):
        value = getattr(self._target, name)
        if name.startswith("run") and callable(value):
            def run(*args, **kwargs):
                self._calls.append(f"{self._label}.{name}")
                return value(*args, **kwargs)
            return run
        return value


def engine_spy(runner, name, monkeypatch):
    """Spies on every engine entry of `runner` (configuration `name`); returns the list of calls."""
    module = backends.CONFIGS[name][0] if name in backends.CONFIGS else name
    assert module in ENGINE_ENTRIES, f"no engine entry known for backend {name!r}: add it to ENGINE_ENTRIES"
    calls = []
    for attr in ENGINE_ENTRIES[module]:
        monkeypatch.setattr(runner, attr, EngineSpy(getattr(runner, attr), attr, calls))  # must exist
    return calls


def assert_rejected_before_engine(runner, name, monkeypatch, call, args, message):
    """`call(*args)` raises ValueError(message) and never entered the runner's engine."""
    calls = engine_spy(runner, name, monkeypatch)
    try:
        with pytest.raises(ValueError) as raised:
            getattr(runner, call)(*args)
        assert str(raised.value) == message, name
        assert not calls, f"{name}.{call}: entered its engine ({calls}) before the input was rejected"
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("call", ["forward", "train_step"])
def test_engine_spies_see_a_valid_call(runners, monkeypatch, call):
    """The spies are on the path every kernel takes: a valid call goes through them."""
    x, target = model.make_batch(1)
    for name, runner in runners.items():
        calls = engine_spy(runner, name, monkeypatch)
        getattr(runner, call)(*((x,) if call == "forward" else (x, target)))
        assert calls, f"{name}.{call} ran without entering its spied engine"
        monkeypatch.undo()


@pytest.mark.parametrize(("x", "message"), BAD_INPUTS, ids=[m.split(",")[0][:40] for _, m in BAD_INPUTS])
def test_bad_input_same_clear_error_from_net_and_every_backend(runners, monkeypatch, x, message):
    if isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.device.type == "cpu":
        calls = kernel_spy(monkeypatch)
        with pytest.raises(ValueError) as raised:
            model.Net()(x)
        assert str(raised.value) == message
        assert not calls, "the Net ran a kernel before the input was rejected"
        monkeypatch.undo()
    target = torch.zeros(x.shape[0] if isinstance(x, torch.Tensor) and x.dim() else 1, 10)
    for name, runner in runners.items():
        assert_rejected_before_engine(runner, name, monkeypatch, "forward", (x,), message)
        assert_rejected_before_engine(runner, name, monkeypatch, "train_step", (x, target), message)


class EngineFirst(eager.Runner):
    """Wrong on purpose: runs its engine before checking the input. The Net's own check still raises
    the same ValueError, so only the spy can tell."""

    def train_step(self, x, target):
        output = self.net(x)
        model.check_input(x, target, dtype=self.dtype, device=self.device)
        return model.loss_fn(output, target)


def test_engine_spy_catches_a_runner_that_runs_its_engine_first(monkeypatch):
    x, message = BAD_INPUTS[1]
    args = (x, torch.zeros(2, 10))
    wrong = EngineFirst(model.make_net().state_dict())
    with pytest.raises(AssertionError, match="entered its engine"):
        assert_rejected_before_engine(wrong, "eager", monkeypatch, "train_step", args, message)
    right = backends.create("eager", model.make_net().state_dict())  # passes the same check
    assert_rejected_before_engine(right, "eager", monkeypatch, "train_step", args, message)


@pytest.mark.parametrize(("target", "message"), BAD_TARGETS, ids=["batch", "rank", "dtype"])
def test_bad_target_same_clear_error_from_every_backend(runners, monkeypatch, target, message):
    x = torch.zeros(3, 1, 32, 32)
    for name, runner in runners.items():
        assert_rejected_before_engine(runner, name, monkeypatch, "train_step", (x, target), message)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True, "8"])
def test_bad_batch_size_is_rejected(batch_size):
    with pytest.raises(ValueError, match=f"batch size must be a positive integer, got {batch_size!r}"):
        model.make_batch(batch_size)


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(0, 40), min_size=1, max_size=5))
def test_any_invalid_shape_gets_the_clear_error(runners, shape):
    valid = len(shape) == 4 and shape[0] >= 1 and shape[1:] == [1, 32, 32]
    x = torch.zeros(shape)
    if valid:
        assert model.Net()(x).shape == (shape[0], 10)
        return
    expected = f"input: expected shape (B, 1, 32, 32) with B >= 1, got {tuple(shape)}"
    with pytest.raises(ValueError) as raised:
        model.Net()(x)
    assert str(raised.value) == expected
    for runner in runners.values():
        with pytest.raises(ValueError) as raised:
            runner.forward(x)
        assert str(raised.value) == expected


@settings(max_examples=15, deadline=None)
@given(batch_size=st.sampled_from([1, 3, 8]), seed=st.integers(0, 2**31 - 1),
       scale=st.floats(1e-3, 1e3), offset=st.floats(-10, 10))
def test_forward_agrees_across_backends_for_any_valid_input(runners, batch_size, seed, scale, offset):
    x = torch.randn(batch_size, 1, 32, 32, generator=torch.Generator().manual_seed(seed)) * scale + offset
    expected = runners["eager"].forward(x)
    tolerance = 1e-5 * (1 + expected.abs().max().item())
    for name, runner in runners.items():
        torch.testing.assert_close(runner.forward(x), expected, rtol=1e-4, atol=tolerance, msg=name)


def test_torchscript_skipped_with_reason_when_torch_jit_is_gone(monkeypatch):
    monkeypatch.delattr(torch.jit, "script")
    assert backends.unavailable("torchscript", "cpu") == "torch.jit.script is gone from this torch build"


def test_compile_skipped_with_reason_without_a_cpp_compiler(monkeypatch):
    from torch._inductor import cpp_builder

    def no_compiler():
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    assert "needs a C++ compiler" in backends.unavailable("compile-step", "cpu")


def test_cuda_timing_waits_for_the_device(monkeypatch):
    from bench.measure import timing

    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device: events.append(("sync", device)))
    call = timing.synchronized(lambda: events.append("step"), "cuda")
    call()
    assert events == ["step", ("sync", "cuda")]
    events.clear()
    timing.synchronized(lambda: events.append("step"), "cpu")()
    assert events == ["step"]


@pytest.mark.parametrize("command", ["report", "agreement", "profile", "compile_time", "draw_net"])
def test_commands_refuse_an_out_folder_they_cannot_write_before_any_work(tmp_path, capsys, command):
    import importlib

    main = importlib.import_module(f"bench.{command}").main
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    try:
        code = main(["--out", str(a_file)])
    except SystemExit as exited:
        code = exited.code
    assert code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument --out: {a_file} is not a writable folder" in last
