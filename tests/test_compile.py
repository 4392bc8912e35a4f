"""torch.compile as users write it for training (bench/backends/compile_loop.py): what Dynamo makes of
each loop, and that each trains like the tutorial's eager loop. Agreement with float64 is checked for
every configuration in test_agreement.py."""

import copy

import pytest
import torch

import model
from bench import backends

LOOPS = ["compile-net", "compile-net-opt", "compile-iter"]
BATCH = 4
STEPS = 3


@pytest.fixture(scope="module")
def trained():
    """Each loop and eager after STEPS steps on the same batches, from the same parameters."""
    reason = backends.unavailable("compile-net", "cpu")
    if reason:
        pytest.skip(reason)
    # A fresh Dynamo, as in a user's new process: the graph breaks a runner records are those its first
    # step traces, and frames other runners of this process compiled before would not be traced again.
    torch._dynamo.reset()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny steps on a shared 2-core machine
    try:
        state = model.make_net(0).state_dict()
        pool = model.make_batch_pool(BATCH, samples=STEPS * BATCH)
        runners = {name: backends.create(name, state) for name in ["eager", *LOOPS]}
        losses = {name: [runner.train_step(x, target) for x, target in pool]
                  for name, runner in runners.items()}
        yield runners, losses
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", LOOPS)
def test_loop_trains_like_eager(trained, name):
    runners, losses = trained
    torch.testing.assert_close(losses[name], losses["eager"])
    torch.testing.assert_close(runners[name].parameters(), runners["eager"].parameters())
    torch.testing.assert_close(runners[name].gradients(), runners["eager"].gradients())
    x = model.make_batch(BATCH, seed=1)[0]
    torch.testing.assert_close(runners[name].forward(x), runners["eager"].forward(x))


def test_compiled_net_leaves_loss_backward_and_step_to_eager(trained):
    info = trained[0]["compile-net"].info
    # one compiled region (the Net), whose forward and AOTAutograd backward are two Inductor graphs
    assert info["compiled_regions"] == 1 and info["inductor_graphs"] == 2, info
    assert info["compiled_autograd_regions"] == 0 and info["graph_breaks"] == 0, info


def test_compiled_optimizer_step_is_a_graph_of_its_own(trained):
    net, with_step = trained[0]["compile-net"].info, trained[0]["compile-net-opt"].info
    assert with_step["inductor_graphs"] == net["inductor_graphs"] + 1, with_step
    assert with_step["graph_breaks"] >= 1, with_step  # torch.optim's own breaks around every step


def test_whole_iteration_captures_the_backward_with_compiled_autograd(trained):
    info = trained[0]["compile-iter"].info
    assert info["compiled_autograd_regions"] == 1, info  # loss.backward() ran as a compiled graph
    assert "backward" in info["graph_break_reasons"] and info["graph_breaks"] >= 1, info
    # forward + loss, the compiled-autograd backward and the SGD update: one Inductor graph each
    assert info["inductor_graphs"] == 3, info


def test_first_steps_record_their_graphs_once(trained):
    runner = trained[0]["compile-iter"]
    before = dict(runner.info)
    runner.train_step(*model.make_batch(BATCH, seed=2))
    assert runner.info == before  # later steps run without the profiler and change nothing


def test_compile_study_bad_variant_is_one_line(capsys, tmp_path):
    from bench.studies import compile_study

    assert compile_study.main(["--variants", "compile-net,nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown variant 'nope'" in err
    assert compile_study.main(["--batch-sizes", "0", "--out", str(tmp_path)]) == 2
    assert not list(tmp_path.iterdir())


def test_compile_study_table_says_what_was_not_timed():
    from bench.studies import compile_study

    rows = [{"variant": "compile-net nchw", "batch_size": 64, "agreement": "pass",
             "speedup": [1.1, 1.0, 1.2], "load_average": [2.0, 2.5]},
            {"variant": "compile-step nchw", "batch_size": 64, "agreement": "FAIL"}]
    text = compile_study.render(rows, "python -m bench.compile_study")
    assert ("| compile-net nchw | Inductor's layout optimisation off: convolutions, pools and ReLUs stay "
            "NCHW | 64 | 1.10x [1.00, 1.20] | 2.0 - 2.5 |") in text
    assert ("| compile-step nchw | Inductor's layout optimisation off | 64 | agreement FAIL: not timed "
            "| - |") in text
    assert compile_study.VARIANTS["compile-step nchw"][1] == {
        "im2col": False, "cpp_wrapper": False, "inductor_options": {"layout_optimization": False}}


def compiled_gradient_error(batch_size, **options):
    """Largest difference between the gradients of torch.compile(net) (Inductor's defaults, or `options`)
    and eager's, after one MSE backward on a seeded batch: plain torch, none of the suite's runners."""
    net = model.make_net(0)
    reference = copy.deepcopy(net)
    x, target = model.make_batch(batch_size)
    model.loss_fn(torch.compile(net, options=options or None)(x), target).backward()
    model.loss_fn(reference(x), target).backward()
    return max((p.grad - q.grad).abs().max().item() for p, q in zip(net.parameters(), reference.parameters()))


def test_agreement_fails_compile_net_exactly_where_torch_gets_its_gradients_wrong():
    """torch 2.13's Inductor (CPU, its channels-last layout optimisation) returns zero convolution gradients
    for torch.compile(net) at batch 6-16; torch 2.11 gets them right. Whichever torch is installed, the
    suite's agreement check must fail the compile-net runner at batch 8 when plain torch shows the bug, and
    pass it when it does not."""
    reason = backends.unavailable("compile-net", "cpu")
    if reason:
        pytest.skip(reason)
    from bench.measure import agreement

    torch_is_wrong = compiled_gradient_error(8) > 1e-5
    [result] = agreement.check(["compile-net"], "cpu", steps=2, batch_size=8)
    assert agreement.status(result) == ("FAIL" if torch_is_wrong else "pass"), torch.__version__


def test_compiled_net_gradients_at_batch_8_match_eager_without_the_layout_optimisation():
    if backends.unavailable("compile-net", "cpu"):
        pytest.skip(backends.unavailable("compile-net", "cpu"))
    assert compiled_gradient_error(8, layout_optimization=False) < 1e-5


def test_compile_study_lite_variants_carry_modes_options_and_nothing_that_rewrites_the_net():
    from bench.studies import compile_study

    if not compile_study.LITE:
        pytest.skip(f"torch {torch.__version__} has no mode='lite'")
    lite = dict(torch._inductor.list_mode_options("lite"))
    assert lite.get("fallback_by_default") is True
    config, options, _ = compile_study.VARIANTS["compile-net lite"]
    assert config == "compile-net" and options["inductor_options"] == lite
    _, options, _ = compile_study.VARIANTS["compile-net lite nchw"]
    assert options["inductor_options"] == {**lite, "layout_optimization": False}
    _, options, _ = compile_study.VARIANTS["compile-net aten-fallback"]
    assert options["inductor_options"] == {"fallback_by_default": True}


def test_standalone_zero_gradient_reproducer_agrees_with_the_suites_check():
    """repro/inductor_zero_conv_grad/repro.py (plain torch) must call the batch-8 gradients wrong exactly
    when this file's own check does, on whichever torch is installed."""
    if backends.unavailable("compile-net", "cpu"):
        pytest.skip(backends.unavailable("compile-net", "cpu"))
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent.parent / "repro" / "inductor_zero_conv_grad" / "repro.py"
    spec = importlib.util.spec_from_file_location("zero_conv_grad_repro", path)
    repro = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(repro)
    assert (repro.check(8) > 1e-4) == (compiled_gradient_error(8) > 1e-5), torch.__version__
