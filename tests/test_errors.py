"""Bad input gets one clear ValueError, the same from every backend, before any kernel runs;
missing optional pieces are skipped with their reason."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import model
from bench import backends

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
    """Counts convolutions run through torch, so a test can tell a check happened before any kernel."""
    calls = []
    original = torch.nn.functional.conv2d
    monkeypatch.setattr(torch.nn.functional, "conv2d", lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


@pytest.mark.parametrize(("x", "message"), BAD_INPUTS, ids=[m.split(",")[0][:40] for _, m in BAD_INPUTS])
def test_bad_input_same_clear_error_from_net_and_every_backend(runners, monkeypatch, x, message):
    calls = kernel_spy(monkeypatch)
    if isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.device.type == "cpu":
        with pytest.raises(ValueError) as raised:
            model.Net()(x)
        assert str(raised.value) == message
    target = torch.zeros(x.shape[0] if isinstance(x, torch.Tensor) and x.dim() else 1, 10)
    for name, runner in runners.items():
        for call, args in ((runner.forward, (x,)), (runner.train_step, (x, target))):
            with pytest.raises(ValueError) as raised:
                call(*args)
            assert str(raised.value) == message, name
    assert not calls, "a kernel ran before the input was rejected"


@pytest.mark.parametrize(("target", "message"), BAD_TARGETS, ids=["batch", "rank", "dtype"])
def test_bad_target_same_clear_error_from_every_backend(runners, target, message):
    x = torch.zeros(3, 1, 32, 32)
    for name, runner in runners.items():
        with pytest.raises(ValueError) as raised:
            runner.train_step(x, target)
        assert str(raised.value) == message, name


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
    assert "needs a C++ compiler" in backends.unavailable("compile", "cpu")


def test_cuda_timing_waits_for_the_device(monkeypatch):
    from bench import test_benchmarks

    events = []
    monkeypatch.setattr(backends, "synchronize", lambda device: events.append(("sync", device)))
    call = test_benchmarks.timed_call(lambda: events.append("step"), "cuda")
    call()
    assert events == ["step", ("sync", "cuda")]
    events.clear()
    test_benchmarks.timed_call(lambda: events.append("step"), "cpu")()
    assert events == ["step"]


@pytest.mark.parametrize("command", ["report", "agreement", "profile", "compile_time"])
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
