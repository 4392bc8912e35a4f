import pytest

from bench import backends


@pytest.fixture(params=list(backends.CONFIGS))
def backend(request):
    """Every configured backend on CPU, skipped with its reason where it cannot run here."""
    reason = backends.unavailable(request.param, "cpu")
    if reason:
        pytest.skip(f"{request.param}: {reason}")
    return request.param
