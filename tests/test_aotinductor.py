"""What the aotinductor backend adds over the shared backend tests: its thread policy and its
on-disk library cache."""

import pytest
import torch

import model
from bench import backends
from bench.backends import aotinductor

pytestmark = pytest.mark.skipif(bool(backends.unavailable("aotinductor", "cpu")),
                                reason=str(backends.unavailable("aotinductor", "cpu")))


def test_small_batches_run_on_one_thread_and_torch_threads_are_restored():
    runner = backends.create("aotinductor", model.make_net(seed=0).state_dict())
    before = torch.get_num_threads()
    runner.train_step(*model.make_batch(1))
    assert runner.info["threads"] == 1
    assert torch.get_num_threads() == before
    runner.train_step(*model.make_batch(aotinductor.SMALL_BATCH + 1))
    assert runner.info["threads"] == before


def test_second_runner_loads_the_cached_library_and_starts_from_its_own_parameters():
    x, target = model.make_batch(2)
    first = backends.create("aotinductor", model.make_net(seed=0).state_dict())
    first.train_step(x, target)
    second = backends.create("aotinductor", model.make_net(seed=1).state_dict())
    eager = backends.create("eager", model.make_net(seed=1).state_dict())
    loss = second.train_step(x, target)
    assert second.info["compile_cached"] is True
    torch.testing.assert_close(loss, eager.train_step(x, target), rtol=1e-5, atol=1e-6)
    for key, value in eager.parameters().items():
        torch.testing.assert_close(second.parameters()[key], value, rtol=1e-5, atol=1e-6)
    # The first runner's parameters are its own: the second runner's step did not move them.
    assert not torch.equal(first.parameters()["fc3.bias"], second.parameters()["fc3.bias"])
