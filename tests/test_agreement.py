"""Agreement across backends with eager float64 (bench/measure/agreement.py), that the check can fail, and
the command around it (bench/studies/agreement_study.py)."""

import json
import math
import subprocess
import sys

import pytest
import torch

import model
from bench import backends
from bench.backends import eager
from bench.measure import agreement
from bench.studies import agreement_study as agreement_command

STEPS = agreement.DEFAULT_STEPS  # 20
BATCH = agreement.DEFAULT_BATCH_SIZE  # the injected faults' batch size (their sizes are tuned to it)
# The real backends' batch size (one for all: torch.compile compiles once per shape), not 8: torch 2.13's
# Inductor gets torch.compile(net)'s convolution gradients wrong at batch 8 (tests/test_compile.py),
# which would fail the compiled loops here for torch's reason, not the suite's.
BACKENDS_BATCH = 4
PARAMS = list(model.make_net(0).state_dict())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread for this module: on a busy 2-core machine two spinning OpenMP threads
    made each tiny step 10-30x slower (the whole file took minutes). What is checked is the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def all_results():
    """One check of every backend available on CPU; torch.compile compiles once for the module."""
    names = [n for n in backends.CONFIGS if not backends.unavailable(n, "cpu")]
    return {r.backend: r for r in agreement.check(names, "cpu", steps=STEPS, batch_size=BACKENDS_BATCH)}


def quantities(result, step):
    return {row.quantity for row in result.rows if row.step == step}


# (a) every available backend agrees with float64 after 20 steps --------------------------------

def test_backend_agrees_with_float64(backend, all_results):
    result = all_results[backend]
    failing = [(r.quantity, r.step, r.max_abs, r.note) for r in result.rows if not r.passed]
    assert result.passed, f"{backend}: {result.error or failing}"
    assert agreement.status(result) == "pass"
    assert result.max_abs_error is not None and result.max_abs_error < 1e-6
    hidden = any(q.startswith("implied grad ") for q in quantities(result, 1))  # aotinductor, onnxruntime
    for step in (1, STEPS):  # everything was compared, at both steps, gradients too
        expected = {"loss", "output", *(f"param {p}" for p in PARAMS)}
        expected |= {f"implied grad {p}" if hidden else f"grad {p}" for p in PARAMS}
        assert quantities(result, step) == expected


# (b) two eager float32 runs are bit-identical ---------------------------------------------------

def test_two_eager_runs_are_bit_identical():
    identical, detail = agreement.repeat_identical("cpu", steps=STEPS, batch_size=BATCH)
    assert identical, detail


class Jittery(eager.Runner):
    """Every other instance's learning rate is one float32 ulp higher: two runs are not identical."""

    count = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        Jittery.count += 1
        if Jittery.count % 2 == 0:
            lr = torch.tensor(model.LEARNING_RATE, dtype=torch.float32)
            self.optimizer.param_groups[0]["lr"] = torch.nextafter(lr, torch.tensor(1.0)).item()


def test_repeat_check_sees_a_one_ulp_difference():
    identical, detail = agreement.repeat_identical("cpu", steps=3, batch_size=BATCH, factory=Jittery)
    assert not identical
    assert "param" in detail


# (c) the check catches wrong backends -----------------------------------------------------------

class LearningRateOff(eager.Runner):
    """The learning rate 1% too high."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.optimizer.param_groups[0]["lr"] = model.LEARNING_RATE * 1.01


class GradientDropped(eager.Runner):
    """conv1.bias never updated: its gradient is dropped before the SGD step."""

    def train_step(self, x, target):
        self.optimizer.zero_grad()
        loss = model.loss_fn(self.net(x), target)
        loss.backward()
        self.net.conv1.bias.grad = None  # SGD skips a parameter without a gradient
        self.optimizer.step()
        return loss.detach()


class HalfPrecision(eager.Runner):
    """The forward (training and inference) computed in bfloat16, cast back to float32."""

    def train_step(self, x, target):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return super().train_step(x, target)

    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return super().forward(x).float()


class BiasIgnored(eager.Runner):
    """forward() (inference only) leaves out fc3's bias; training is right."""

    @torch.no_grad()
    def forward(self, x):
        params = {k: v for k, v in self.net.named_parameters()}
        params["fc3.bias"] = torch.zeros_like(params["fc3.bias"])
        return torch.func.functional_call(self.net, params, (x,))


# Subtle changes to the update rule: over 20 steps each moves the parameters by less than 1e-5, so an
# allclose test at 1e-5 passes them, but each is hundreds of float32 roundings away from float64.

class WeightDecay(eager.Runner):
    """SGD with weight decay 1e-4."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.optimizer.param_groups[0]["weight_decay"] = 1e-4


class Momentum(eager.Runner):
    """SGD with momentum 0.00025."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.optimizer.param_groups[0]["momentum"] = 2.5e-4


class LearningRateOffSlightly(eager.Runner):
    """The learning rate 0.03% too high (0.010003)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.optimizer.param_groups[0]["lr"] = model.LEARNING_RATE * 1.0003


class GradientScaled(eager.Runner):
    """One layer's gradient off by a factor: `scale` times fc1.weight's gradient goes into the update."""

    scale = 1.0005

    def train_step(self, x, target):
        self.optimizer.zero_grad()
        loss = model.loss_fn(self.net(x), target)
        loss.backward()
        self.net.fc1.weight.grad.mul_(self.scale)
        self.optimizer.step()
        return loss.detach()


class GradientSummed(GradientScaled):
    """fc1.weight's gradient of the loss summed over the batch instead of averaged (x batch size)."""

    scale = BATCH


class BiasFrozen(eager.Runner):
    """fc1.bias never updated: it has no gradient."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.net.fc1.bias.requires_grad_(False)


# Each passes the criterion this module replaced (allclose at 1e-5, else RMSE <= 2-3x eager's + 1e-6).
SUBTLE = {"weight decay 1e-4": WeightDecay, "momentum 0.00025": Momentum,
          "lr 0.03% high": LearningRateOffSlightly, "fc1.weight gradient x1.0005": GradientScaled}
WRONG = {"lr off by 1%": LearningRateOff, "conv1.bias gradient dropped": GradientDropped,
         "bfloat16 forward": HalfPrecision, "fc3.bias ignored in forward": BiasIgnored,
         "fc1.bias frozen": BiasFrozen, "fc1.weight gradient summed": GradientSummed, **SUBTLE}


@pytest.fixture(scope="module")
def wrong_results():
    results = agreement.check([], "cpu", steps=STEPS, batch_size=BATCH, extra=WRONG)
    return {r.backend: r for r in results}


@pytest.mark.parametrize("name", list(WRONG))
def test_wrong_backend_is_caught(name, wrong_results):
    result = wrong_results[name]
    assert result.error is None
    assert not result.passed
    assert agreement.status(result) == "FAIL"
    failing = {row.quantity for row in result.rows if not row.passed}
    assert failing
    if name == "fc3.bias ignored in forward":  # only the forward pass is wrong, and only it fails
        assert failing == {"output"}
    if name == "conv1.bias gradient dropped":
        assert {"param conv1.bias", "grad conv1.bias"} <= failing


def old_criterion_passes(result):
    """The criterion this one replaced passed a row allclose at rtol=atol=1e-5 (max abs <= 1e-5 implies it),
    else with RMSE <= k * eager's + 1e-6. True only where it surely passed every row."""
    return all(row.max_abs <= 1e-5 or row.rmse <= 1e-6 for row in result.rows if row.rmse is not None)


@pytest.mark.parametrize("name", list(SUBTLE))
def test_subtle_fault_passed_the_old_criterion_and_fails_now(name, wrong_results):
    result = wrong_results[name]
    assert old_criterion_passes(result)
    assert not result.passed and agreement.status(result) == "FAIL"
    assert result.worst_rmse_ratio > 100  # hundreds of float32 roundings, not a rounding difference
    assert result.max_abs_error < 1e-5


def test_worst_rmse_ratio_tells_backends_apart(all_results, wrong_results):
    eager_result = all_results["eager"]
    assert eager_result.worst_rmse_ratio == max(row.rmse_ratio for row in eager_result.rows
                                                if row.rmse_ratio is not None)
    assert eager_result.worst_rmse_ratio <= 1.0  # eager float32 is itself the in-order yardstick
    for name, result in all_results.items():
        assert result.worst_rmse_ratio < agreement.K, name
        assert result.worst_max_ratio < agreement.K_MAX, name
    assert eager_result.worst_max_ratio <= 1.0
    assert all(r.worst_rmse_ratio > 100 for r in wrong_results.values())


def test_prebuilt_runner_under_a_backend_name():
    """How the benchmark session checks the runner it times: built beforehand from make_net(seed=0), handed
    in through `extra` under its backend's own name, with no backend names."""
    runner = backends.create("eager", model.make_net(seed=0).state_dict())
    [result] = agreement.check([], "cpu", steps=3, batch_size=BATCH, extra={"eager": lambda *args: runner})
    assert result.backend == "eager" and agreement.status(result) == "pass"
    assert result.worst_rmse_ratio <= 1.0


def test_rows_report_errors_and_ratios(wrong_results):
    rows = {(r.quantity, r.step): r for r in wrong_results["lr off by 1%"].rows}
    row = rows[("param fc3.bias", STEPS)]
    assert not row.passed and row.note == "too far from float64"
    assert 1e-5 < row.max_abs < 1e-3 and row.max_rel > 0 and row.rmse_ratio > 100
    assert wrong_results["lr off by 1%"].max_abs_error >= row.max_abs


# (c2) faults local to a few elements: an RMSE over a tensor dilutes them, its largest element does not --

class ParameterElementDrifts(eager.Runner):
    """The last element of fc1.weight's first row drifts by +1e-7 after every step (a tail-of-vector bug)."""

    def train_step(self, x, target):
        loss = super().train_step(x, target)
        with torch.no_grad():
            self.net.fc1.weight[0, -1] += 1e-7
        return loss


class GradientElementOff(eager.Runner):
    """One element of fc1.weight's gradient is 4e-7 off (about 1e-3 of its size) before the update."""

    def train_step(self, x, target):
        self.optimizer.zero_grad()
        loss = model.loss_fn(self.net(x), target)
        loss.backward()
        self.net.fc1.weight.grad[0, -1] += 4e-7
        self.optimizer.step()
        return loss.detach()


def wrong_row_of_conv1(row):
    """A forward hook: conv1's output row `row` (every channel and sample) 1e-4 too large (a border bug)."""

    def hook(module, args, output):
        output = output.clone()
        output[..., row, :] *= 1 + 1e-4
        return output
    return hook


class ConvBorderRowWrong(eager.Runner):
    """conv1's first output row wrong, in training and inference. (Its last two rows and columns never
    reach the loss: max_pool2d's floor drops conv2's last row, so a fault there changes nothing.)"""

    row = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.net.conv1.register_forward_hook(wrong_row_of_conv1(self.row))


class ConvUnusedRowWrong(ConvBorderRowWrong):
    row = -1


class HiddenGradients(eager.Runner):
    """Eager that does not expose its gradients, like aotinductor and onnxruntime."""

    def gradients(self):
        return None


class HiddenGradientScaled(GradientScaled):
    """fc1.weight's gradient x1.0005 inside the update, and the gradients not exposed."""

    def gradients(self):
        return None


LOCAL = {"fc1.weight[0, -1] drifts": ParameterElementDrifts, "one gradient element off": GradientElementOff,
         "conv1's first row wrong": ConvBorderRowWrong}


@pytest.fixture(scope="module")
def local_results():
    extra = {**LOCAL, "eager again": agreement.backend_factory("eager"),
             "unused row wrong": ConvUnusedRowWrong, "hidden gradients": HiddenGradients,
             "hidden gradient x1.0005": HiddenGradientScaled}
    return {r.backend: r for r in agreement.check([], "cpu", steps=STEPS, batch_size=BATCH, extra=extra)}


@pytest.mark.parametrize("name", list(LOCAL))
def test_local_fault_is_caught_by_its_largest_element(name, local_results):
    result = local_results[name]
    assert not result.passed and agreement.status(result) == "FAIL"
    assert result.worst_max_ratio > agreement.K_MAX
    failing = {row.quantity for row in result.rows if not row.passed}
    if name == "fc1.weight[0, -1] drifts":  # the RMSE over 69,120 elements alone passes it
        assert failing == {"param fc1.weight"}
        assert result.worst_rmse_ratio < agreement.K / 1.5
        assert all(row.note == "an element too far from float64" for row in result.rows if not row.passed)
    if name == "one gradient element off":
        assert "grad fc1.weight" in failing


def test_eager_against_itself_passes_both_criteria(local_results):
    result = local_results["eager again"]
    assert result.passed and agreement.status(result) == "pass"
    assert result.worst_rmse_ratio <= 1.0 and result.worst_max_ratio <= 1.0  # it is the in-order yardstick


def test_a_fault_that_cannot_reach_the_loss_passes(local_results):
    """The same function: conv1's last row is wrong but never read. The check judges results, not code."""
    assert local_results["unused row wrong"].passed


def test_hidden_gradients_are_judged_by_the_update(local_results):
    right, wrong = local_results["hidden gradients"], local_results["hidden gradient x1.0005"]
    assert right.passed and {f"implied grad {p}" for p in PARAMS} <= quantities(right, STEPS)
    assert not any(q.startswith("grad ") for q in quantities(right, STEPS))
    assert not wrong.passed
    assert {"implied grad fc1.weight", "param fc1.weight"} <= {r.quantity for r in wrong.rows if not r.passed}


def test_implied_gradient_yardstick_carries_the_same_cancellation(local_results):
    """(p_before - p_after) / lr loses ~ulp(p) / lr: eager's implied gradient is far further from float64's
    gradient than eager's own gradient is, and the yardstick of an implied gradient is that far too."""
    rows = {(r.quantity, r.step): r for r in local_results["hidden gradients"].rows}
    exposed = {(r.quantity, r.step): r for r in local_results["eager again"].rows}
    implied, direct = rows[("implied grad fc1.weight", 1)], exposed[("grad fc1.weight", 1)]
    assert implied.yardstick_max > 10 * direct.yardstick_max
    assert implied.max_ratio <= 1.0


def test_the_second_yardstick_differs_at_batch_1():
    """The hidden units reversed sum the same products in another order, even with no batch to reverse."""
    state = model.make_net(0).state_dict()
    assert all(torch.equal(agreement.reverse_hidden_units(agreement.reverse_hidden_units(state))[k], v)
               for k, v in state.items())
    in_order = backends.create("eager", state)
    reordered = agreement.ReorderedEager(state, "cpu", torch.float32)
    x, target = model.make_batch(1, seed=1)
    torch.testing.assert_close(reordered.forward(x), in_order.forward(x))  # the same function
    in_order.train_step(x, target), reordered.train_step(x, target)
    a, b = in_order.gradients(), reordered.gradients()
    assert any(not torch.equal(a[k], b[k]) for k in a)  # rounded differently
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6)


def test_row_passes_only_within_both_criteria():
    ref = torch.ones(1000, dtype=torch.float64)
    base = ref + torch.linspace(-1e-7, 1e-7, 1000, dtype=torch.float64)
    one_off = ref.clone()
    one_off[-1] += 1e-5  # RMSE 3.2e-7, under 6 float32 ulps (Y = M = 1.2e-7); one element 83 ulps off
    row = agreement.judge_quantity("x", 1, one_off, ref, base)
    assert row.rmse_ratio < agreement.K and row.max_ratio > agreement.K_MAX
    assert not row.passed and row.note == "an element too far from float64"
    assert agreement.judge_quantity("x", 1, base.clone(), ref, base).passed


# (d) NaN or inf: reported as non-finite, never a pass -------------------------------------------

def poisoned_batches(value, at_step, tensor):
    def make(step):
        x, target = agreement._default_batch(BATCH, 0)(step)
        if step == at_step:
            (x if tensor == "input" else target).view(-1)[5] = value
        return x, target
    return make


@pytest.mark.parametrize("value,tensor", [(math.nan, "input"), (math.inf, "target")])
def test_nonfinite_batch_is_reported_and_fails(value, tensor):
    [result] = agreement.check(["eager"], "cpu", steps=3, batch_size=BATCH,
                               make_batch=poisoned_batches(value, 2, tensor))
    assert not result.passed
    assert agreement.status(result) == "FAIL: non-finite"
    after = [row for row in result.rows if row.step == 3]
    assert after and all(not row.passed for row in after)
    assert all(row.note.startswith("non-finite") for row in after)
    assert any(row.note == "non-finite (NaN/inf) in backend and float64 reference" for row in after)
    assert all(row.passed for row in result.rows if row.step == 1)  # step 1 was clean


class NaNAfterStepTwo(eager.Runner):
    """A backend that alone goes NaN: the reference stays finite."""

    steps = 0

    def train_step(self, x, target):
        loss = super().train_step(x, target)
        self.steps += 1
        if self.steps == 2:
            with torch.no_grad():
                self.net.fc2.weight[0, 0] = math.nan
        return loss


def test_nan_in_backend_only_is_reported():
    [result] = agreement.check([], "cpu", steps=3, batch_size=BATCH, extra={"nan": NaNAfterStepTwo})
    assert not result.passed and result.nonfinite
    notes = {row.quantity: row.note for row in result.rows if row.step == 3}
    assert notes["param fc2.weight"] == "non-finite (NaN/inf) in backend"
    assert notes["output"] == "non-finite (NaN/inf) in backend"
    assert math.isnan(result.max_abs_error) and math.isnan(result.worst_rmse_ratio)


def test_nan_never_matches_nan():
    nan = torch.tensor([math.nan, 1.0], dtype=torch.float64)
    row = agreement.judge_quantity("x", 1, nan.clone(), nan.clone(), nan.clone())
    assert not row.passed and row.note.startswith("non-finite")


# (e) the command ---------------------------------------------------------------------------------

def test_command_writes_json_and_markdown(tmp_path, capsys):
    code = agreement_command.main(["--backends", "eager", "--devices", "cpu,cuda", "--steps", "3",
                                   "--batch-size", str(BATCH), "--margin-batch-sizes", f"1,{BATCH}",
                                   "--margin-threads", "1", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "param conv1.weight" in out and "bit-identical" in out
    if not torch.cuda.is_available():
        assert "cuda: skipped (CUDA is not available" in out
    data = json.loads((tmp_path / "agreement.json").read_text())
    [result] = data["results"]
    assert result["backend"] == "eager" and result["status"] == "pass"
    assert {(r["quantity"], r["step"]) for r in result["rows"]} >= {("loss", 1), ("loss", 3), ("output", 3)}
    assert data["eager_repeat"]["cpu"]["bit_identical"] is True
    margins = [(m["batch_size"], m["threads"], m["status"]) for m in data["margins"]]
    assert margins == [(1, 1, "pass"), (BATCH, 1, "pass")]
    md = (tmp_path / "agreement.md").read_text()
    assert "| eager | cpu | param fc3.bias | 3 |" in md
    assert "| eager | cpu | 1 | 1 |" in md and f"| eager | cpu | {BATCH} | 1 |" in md  # the margins table
    assert "worst largest element error ratio over every backend and run:" in md
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_command_exits_nonzero_on_disagreement(tmp_path, monkeypatch, capsys):
    real = agreement.backend_factory  # "torchscript" made wrong; the eager reference and baseline not
    monkeypatch.setattr(agreement, "backend_factory",
                        lambda name: LearningRateOff if name == "torchscript" else real(name))
    code = agreement_command.main(["--backends", "torchscript", "--devices", "cpu", "--steps", "5",
                                   "--batch-size", str(BATCH), "--margin-batch-sizes", str(BATCH),
                                   "--margin-threads", "1", "--out", str(tmp_path)])
    assert "torchscript on cpu: FAIL" in capsys.readouterr().out
    assert code == 1
    assert json.loads((tmp_path / "agreement.json").read_text())["results"][0]["status"] == "FAIL"


@pytest.mark.parametrize("args,message", [
    (["--backends", "eager,nope"], "unknown backend 'nope'; choose from: eager"),
    (["--devices", "tpu"], "unknown device 'tpu'; choose from: cpu, cuda"),
    (["--steps", "0"], "--steps: expected a positive integer, got '0'"),
])
def test_bad_arguments_give_one_line(args, message, capsys, tmp_path):
    assert agreement_command.main([*args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not list(tmp_path.iterdir())


def test_bad_argument_from_the_shell_has_no_traceback(tmp_path):
    command = [sys.executable, "-m", "bench.agreement", "--backends", "nope", "--out", str(tmp_path)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "unknown backend 'nope'; choose from:" in proc.stderr


# the long run (--drift), short here --------------------------------------------------------------

def test_drift_records_every_step(tmp_path, capsys):
    code = agreement_command.main(["--drift", "--steps", "30", "--backends", "eager,torchscript",
                                   "--devices", "cpu", "--batch-size", str(BATCH), "--out", str(tmp_path)])
    assert code == 0
    [run] = json.loads((tmp_path / "drift.json").read_text())["runs"]
    assert set(run["errors"]) == {"eager", "torchscript"}
    for errs in run["errors"].values():
        assert len(errs) == 30 and all(0 < e < 1e-6 for e in errs)
    assert run["errors"]["eager"] == run["errors"]["torchscript"]  # the same kernels here
    assert run["criterion"] == {"eager": "pass", "torchscript": "pass"}  # judged after the last step
    assert run["margins"]["torchscript"]["worst_max_ratio"] < agreement.K_MAX
    png = (tmp_path / "drift.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_long_run_trains_on_one_fixed_batch():
    batches = agreement.fixed_batch(BATCH, seed=3)
    assert all(torch.equal(batches(1)[0], batches(step)[0]) for step in (2, 500))


def test_drift_grows_for_a_wrong_backend():
    run = agreement.drift(["eager"], "cpu", steps=10, batch_size=BATCH, extra={"lr off": LearningRateOff})
    assert run["errors"]["lr off"][-1] > 100 * run["errors"]["eager"][-1]
    assert run["errors"]["lr off"][-1] > run["errors"]["lr off"][0]
