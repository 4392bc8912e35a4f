import pytest

from bench import backends


@pytest.fixture(params=list(backends.CONFIGS))
def backend(request):
    """Every configured backend on CPU, skipped with its reason where it cannot run here."""
    reason = backends.unavailable(request.param, "cpu")
    if reason:
        pytest.skip(f"{request.param}: {reason}")
    return request.param


# torch.compile(net) on CPU (torch 2.13, Inductor's default channels-last layout optimisation) returns zero
# convolution gradients at batch 6, 8 and 16 (right at 1-5 and 32-256, and with the optimisation off):
# reproduced with plain torch in tests/test_compile.py. The tests' batch size is 8.
TORCH_BUG = ("torch.compile(net) on CPU: zero convolution gradients at batch 8 (Inductor's channels-last "
             "layout)")


@pytest.fixture
def expect_torch_bug(request):
    """expect_torch_bug(backend, names): a strict expected failure when `backend` is one of `names`, so the
    test fails once torch gets it right and the entry can go."""
    def expect(backend, names):
        if backend in names:
            request.applymarker(pytest.mark.xfail(strict=True, reason=TORCH_BUG))
    return expect
