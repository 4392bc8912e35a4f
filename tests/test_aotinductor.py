"""What the aotinductor backend adds over the shared backend tests: its thread policy and its
on-disk library cache."""

import pytest
import torch

import model
from bench import backends
from bench.backends import aotinductor

pytestmark = pytest.mark.skipif(bool(backends.unavailable("aotinductor", "cpu")),
                                reason=str(backends.unavailable("aotinductor", "cpu")))


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="needs torch on 2+ threads to see a switch")
def test_small_batches_run_on_one_thread_and_torch_threads_are_restored(monkeypatch):
    runner = backends.create("aotinductor", model.make_net(seed=0).state_dict())
    before = torch.get_num_threads()
    runner.train_step(*model.make_batch(1))
    assert runner.info["threads"] == 1
    assert torch.get_num_threads() == before
    runner.train_step(*model.make_batch(aotinductor.SMALL_BATCH + 1))
    assert runner.info["threads"] == before

    def fail(inputs):
        raise RuntimeError("library failed")

    monkeypatch.setitem(runner._libraries, (True, 1), fail)
    with pytest.raises(RuntimeError, match="library failed"):
        runner.train_step(*model.make_batch(1))
    assert torch.get_num_threads() == before  # restored on the way out of an error too


def test_both_libraries_train_in_lockstep_with_eager_over_many_steps():
    """Batches on either side of SMALL_BATCH run different libraries on the same parameters."""
    runner = backends.create("aotinductor", model.make_net(seed=0).state_dict())
    eager = backends.create("eager", model.make_net(seed=0).state_dict())
    for step in range(8):
        batch_size = 2 if step % 2 else aotinductor.SMALL_BATCH + 4
        x, target = model.make_batch(batch_size, seed=step)
        torch.testing.assert_close(runner.train_step(x, target), eager.train_step(x, target),
                                   rtol=1e-5, atol=1e-6)
        for key, value in eager.parameters().items():
            torch.testing.assert_close(runner.parameters()[key], value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(runner.forward(x), eager.forward(x), rtol=1e-5, atol=1e-6)


def test_second_runner_loads_the_cached_library_and_starts_from_its_own_parameters():
    x, target = model.make_batch(2)
    first = backends.create("aotinductor", model.make_net(seed=0).state_dict())
    first.train_step(x, target)
    second = backends.create("aotinductor", model.make_net(seed=1).state_dict())
    eager = backends.create("eager", model.make_net(seed=1).state_dict())
    loss = second.train_step(x, target)
    assert (second.info["library_hit"], second.info["library_miss"]) == (1, 0)
    torch.testing.assert_close(loss, eager.train_step(x, target), rtol=1e-5, atol=1e-6)
    for key, value in eager.parameters().items():
        torch.testing.assert_close(second.parameters()[key], value, rtol=1e-5, atol=1e-6)
    # The first runner's parameters are its own: the second runner's step did not move them.
    first_eager = backends.create("eager", model.make_net(seed=0).state_dict())
    first_eager.train_step(x, target)
    for key, value in first_eager.parameters().items():
        torch.testing.assert_close(first.parameters()[key], value, rtol=1e-5, atol=1e-6)
