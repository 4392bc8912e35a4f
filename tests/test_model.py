"""The facts the PyTorch tutorial states about its Net, loss and update (model/), as tests."""

import pytest
import torch

import model
from bench import backends

TUTORIAL_SHAPES = {
    "conv1.weight": (6, 1, 3, 3), "conv1.bias": (6,),
    "conv2.weight": (16, 6, 3, 3), "conv2.bias": (16,),
    "fc1.weight": (120, 16 * 6 * 6), "fc1.bias": (120,),
    "fc2.weight": (84, 120), "fc2.bias": (84,),
    "fc3.weight": (10, 84), "fc3.bias": (10,),
}


def test_ten_parameter_tensors_with_the_tutorials_shapes():
    net = model.Net()
    params = list(net.parameters())
    assert len(params) == 10
    assert params[0].size() == (6, 1, 3, 3)  # the tutorial prints params[0].size(): conv1.weight
    assert {k: tuple(v.shape) for k, v in net.named_parameters()} == TUTORIAL_SHAPES


def test_output_is_one_by_ten_for_one_image():
    net = model.Net()
    assert net(torch.randn(1, 1, 32, 32)).shape == (1, 10)


def test_num_flat_features_counts_all_but_the_batch_dimension():
    assert model.Net().num_flat_features(torch.zeros(5, 16, 6, 6)) == 16 * 6 * 6


def test_forward_follows_the_tutorials_graph():
    """conv1 -> relu -> pool -> conv2 -> relu -> pool -> flatten -> fc1 -> relu -> fc2 -> relu -> fc3."""
    import torch.nn.functional as F

    net = model.make_net(seed=3)
    x, _ = model.make_batch(2, seed=3)
    h = F.max_pool2d(F.relu(net.conv1(x)), 2)
    h = F.max_pool2d(F.relu(net.conv2(h)), 2).flatten(1)
    expected = net.fc3(F.relu(net.fc2(F.relu(net.fc1(h)))))
    torch.testing.assert_close(net(x), expected, rtol=0, atol=0)


def test_loss_is_mean_squared_error():
    output, target = torch.randn(1, 10), torch.randn(1, 10)
    assert torch.equal(model.loss_fn(output, target), torch.nn.MSELoss()(output, target))
    assert torch.allclose(model.loss_fn(output, target), ((output - target) ** 2).mean())


def test_gradients_absent_before_backward_present_after_and_accumulating():
    net = model.make_net()
    x, target = model.make_batch(1)
    assert net.conv1.bias.grad is None  # the tutorial prints None before backward
    model.loss_fn(net(x), target).backward()
    first = net.conv1.bias.grad.clone()
    assert first.shape == (6,) and first.abs().sum() > 0
    model.loss_fn(net(x), target).backward()  # no zero_grad: gradients add up
    torch.testing.assert_close(net.conv1.bias.grad, 2 * first)
    net.zero_grad()
    assert net.conv1.bias.grad is None or not net.conv1.bias.grad.any()


def test_one_sgd_step_moves_each_parameter_by_minus_lr_times_grad():
    assert model.LEARNING_RATE == 0.01
    net = model.make_net()
    optimizer = model.make_optimizer(net.parameters())
    x, target = model.make_batch(4)
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    optimizer.zero_grad()
    model.loss_fn(net(x), target).backward()
    grads = {k: v.grad.clone() for k, v in net.named_parameters()}
    optimizer.step()
    for name, p in net.named_parameters():
        assert torch.equal(p.detach(), before[name].add(grads[name], alpha=-model.LEARNING_RATE)), name


def test_batches_are_seeded_and_shaped():
    x, target = model.make_batch(3, seed=7)
    assert x.shape == (3, 1, 32, 32) and target.shape == (3, 10)
    x2, target2 = model.make_batch(3, seed=7)
    assert torch.equal(x, x2) and torch.equal(target, target2)
    assert not torch.equal(x, model.make_batch(3, seed=8)[0])


def test_nets_from_one_seed_are_identical():
    a, b = model.make_net(seed=5).state_dict(), model.make_net(seed=5).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_each_backend_trains_parameters_change_and_loss_falls(backend):
    state = model.make_net(seed=0).state_dict()
    runner = backends.create(backend, state)
    x, target = model.make_batch(4, seed=1)  # not 6-16: torch's bug, tests/test_compile.py
    losses = []
    for _ in range(5):
        before = {k: v.clone() for k, v in runner.parameters().items()}
        losses.append(float(runner.train_step(x, target)))
        after = runner.parameters()
        assert set(after) == set(TUTORIAL_SHAPES)
        for name in after:
            assert not torch.equal(after[name], before[name]), f"{backend}: {name} did not change"
    assert losses[-1] < losses[0], f"{backend}: loss did not fall over 5 steps: {losses}"


def test_each_backend_forward_matches_eager(backend):
    state = model.make_net(seed=0).state_dict()
    x, _ = model.make_batch(8, seed=1)
    expected = backends.create("eager", state).forward(x)
    torch.testing.assert_close(backends.create(backend, state).forward(x), expected, rtol=1e-5, atol=1e-5)


def test_unknown_backend_device_names_the_choices():
    with pytest.raises(ValueError, match="unknown backend 'nope'; choose from: eager"):
        backends.unavailable("nope", "cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'; choose from: cpu, cuda"):
        backends.unavailable("eager", "tpu")


def test_cuda_is_skipped_with_its_reason_when_absent():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert "CUDA is not available" in backends.unavailable("eager", "cuda")


def test_eager_runner_is_the_tutorials_loop():
    """The float64 reference of the agreement check is the eager runner, so it must be exactly
    the tutorial's loop: zero_grad, forward, MSE loss, backward, SGD(lr=0.01).step()."""
    state = model.make_net(seed=2).state_dict()
    runner = backends.create("eager", state)
    net = model.Net()
    net.load_state_dict(state)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    for step in range(3):
        x, target = model.make_batch(4, seed=step)
        optimizer.zero_grad()
        loss = torch.nn.MSELoss()(net(x), target)
        loss.backward()
        optimizer.step()
        assert torch.equal(runner.train_step(x, target), loss.detach())
    for name, p in net.named_parameters():
        assert torch.equal(runner.parameters()[name], p.detach()), name
        assert torch.equal(runner.gradients()[name], p.grad), name
