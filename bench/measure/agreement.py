"""Numerical agreement of every backend with a float64 eager reference.

Every backend trains from the same initial parameters (`model.make_net(seed)`) on the same
batches (a fresh seeded `model.make_batch` per step), in lockstep with eager float64 (the
reference) and eager float32 (the yardsticks that set how much error float32 is allowed).
After step 1 and after step N it compares: the loss, the output of a forward pass on a fixed
batch, every gradient where the backend exposes it, and every parameter.

A quantity passes two tests against two eager float32 yardstick runs (the Net in order, and the Net
with its hidden units and its batch in reverse order; see EAGER_FLOAT32_REORDERED):
- RMSE: RMSE(backend, fp64) / Y is at most K, where Y is the larger of the yardsticks' RMSEs, but
  never less than one float32 ulp of the quantity's RMS size;
- largest element: max|backend - fp64| / M is at most K_MAX, where M is the larger of the
  yardsticks' largest element errors, but never less than one float32 ulp of the quantity's largest
  element. An RMSE over fc1.weight's 69,120 elements dilutes one wrong element ~260x; this does not.
A backend may round differently from eager, but not by far more than float32 rounding explains.
Unlike `torch._dynamo.utils.same()`, nothing passes for being allclose alone. Gradients are compared
for every backend: where a backend does not expose them, the gradient its update implies,
(p_before - p_after) / lr, is compared with float64's, against the yardsticks' implied gradients.
A NaN or inf anywhere in a backend's (or the reference's) value is reported as non-finite and
never passes. Also: two eager float32 runs of the same steps must be bit-identical.

API for the benchmarks:  check(names, device) -> [Result];  status(result) -> "pass" | "FAIL..."
The long run:  drift(names, device, steps) -> the max abs parameter error after every step.
The command `python -m bench.agreement`, its tables and the drift plot: bench/studies/agreement_study.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

import model
from bench import backends

DEFAULT_STEPS = 20
DEFAULT_DRIFT_STEPS = 1000
# One small batch size for every run: a torch.compile runner compiles once per new shape.
DEFAULT_BATCH_SIZE = 8

# The criterion: RMSE(backend, fp64) <= K * Y and max|backend - fp64| <= K_MAX * M. There is no allclose
# shortcut: over 20 steps at lr 0.01 a real change to the update rule (weight decay 1e-4, a gradient scaled
# by 1.0005) moves the parameters by less than 1e-5, inside any absolute tolerance one could set, yet its
# RMSE is hundreds of times Y. The RMSE alone misses a fault local to a few elements (one drifting weight
# of fc1.weight's 69,120 is diluted ~260x); the largest element error does not.
# How K and K_MAX are measured: `python -m bench.agreement` trains every backend for 20 steps at batch 1,
# 8, 64 and 256 on 1 and 2 threads and writes each one's worst ratio under each criterion, and the worst
# over all of them, to the margins table of results/agreement.md; `--steps 1000 --drift --threads 1`
# judges both criteria after 1,000 steps on one batch (results/drift.json, "margins"). The limits sit
# between those worst real-backend ratios (a rounding apart from eager's: a few elements of a bias
# gradient, where one rounding weighs most) and the injected faults of tests/test_agreement.py: the
# smallest local faults there measure tens of M, the subtle update-rule faults hundreds of Y. The
# tests hold both sides: every real backend under K and K_MAX, every fault over them.
K = 6.0
K_MAX = 6.0
# Y's floor: a yardstick can land on the float64 value by luck (the scalar loss, a 6-element bias)
# and would then fail a backend for one rounding; one float32 ulp of the quantity's RMS size (~5e-9
# for a parameter tensor) is the least rounding any float32 result carries.
EPS32 = torch.finfo(torch.float32).eps


def yardstick(ref, yardsticks_rmse):
    """Y: the yardsticks' RMSE, at least one float32 ulp of the reference's RMS size."""
    return max(yardsticks_rmse, EPS32 * torch.sqrt(torch.mean(torch.square(ref))).item())


def yardstick_max(ref, yardsticks_max):
    """M: the yardsticks' largest element error, at least one float32 ulp of the reference's largest
    element (the same floor as Y's, for the same reason)."""
    return max(yardsticks_max, EPS32 * ref.abs().max().item())


def criterion_text():
    """The criterion in one sentence, for the command's outputs."""
    return (f"pass when RMSE(backend, fp64) <= {K:g} x Y and max|backend - fp64| <= {K_MAX:g} x M, "
            "where Y and M are the larger RMSE and the larger largest element error of two eager fp32 runs "
            "(the Net in order; its hidden units and batch reversed) against fp64, at least one float32 ulp "
            f"({EPS32:.3g}) x the fp64 value's RMS and largest element; gradients a backend does not expose "
            "are judged by the gradient its update implies, (p_before - p_after) / lr, against the "
            "yardsticks' implied gradients; no allclose shortcut; NaN/inf never passes")


# Step i (1-based) trains on make_batch(B, seed=seed * SEED_STRIDE + i); the forward pass that
# is compared runs on make_batch(B, seed=seed * SEED_STRIDE), a batch no step trains on.
SEED_STRIDE = 1_000_003

REFERENCE = "eager float64"  # what every backend is compared with
EAGER_FLOAT32 = "eager float32"  # the first yardstick: the Net as written
# Rounding error compounds over many steps: on a fixed batch, after 1,000 steps eager float32
# itself is ~1e-3 from float64 in the output, and the same sums rounded in another order land
# up to ~10x further or nearer, at random. One eager run is one draw from that spread, so a
# second, equally valid float32 run is a second yardstick, and the allowed error is K (K_MAX) times
# the larger of the two. The second run is the same Net with every layer's hidden units (conv1's and
# conv2's channels, fc1's and fc2's units) in reverse order, trained on each batch in reverse order:
# the same function and the same products, but every sum over hidden units (conv2 over its input
# channels, fc1 over its 576 features, fc2, fc3, and their backward) and over the batch is added up
# in another order, as a compiler that reorders a reduction would. Reversing the batch alone left
# batch 1 with one yardstick (the same computation twice); the hidden units exist at every batch size.
# Over 20 steps both yardsticks are ~1e-7 and nothing changes.
EAGER_FLOAT32_REORDERED = "eager float32, hidden units and batch reversed"
# The eager runs every backend is judged against: they are not checked, and must not fail.
EAGER_RUNS = (REFERENCE, EAGER_FLOAT32, EAGER_FLOAT32_REORDERED)


def reverse_hidden_units(tensors):
    """The Net's parameters (or gradients) with every hidden layer's units in reverse order; fc3's
    outputs, the Net's own, stay in place. Applied twice it gives back what it was given."""
    t = dict(tensors)
    channels = t["conv2.weight"].shape[0]  # fc1's inputs are conv2's channels, each a block of 6x6
    fc1 = t["fc1.weight"]
    t["conv1.weight"], t["conv1.bias"] = t["conv1.weight"].flip(0), t["conv1.bias"].flip(0)
    t["conv2.weight"], t["conv2.bias"] = t["conv2.weight"].flip(0, 1), t["conv2.bias"].flip(0)
    t["fc1.weight"] = fc1.reshape(fc1.shape[0], channels, -1).flip(0, 1).reshape(fc1.shape)
    t["fc1.bias"] = t["fc1.bias"].flip(0)
    t["fc2.weight"], t["fc2.bias"] = t["fc2.weight"].flip(0, 1), t["fc2.bias"].flip(0)
    t["fc3.weight"] = t["fc3.weight"].flip(1)
    return t


class ReorderedEager:
    """Eager float32 on the Net with its hidden units reversed, trained on each batch with its
    samples reversed: mathematically the same step, summed in other orders (see EAGER_FLOAT32_REORDERED).
    parameters() and gradients() are given back in the Net's own order."""

    def __init__(self, state_dict, device, dtype):
        self.runner = backends.create(backends.EAGER, reverse_hidden_units(state_dict), device, dtype)
        self.forward = self.runner.forward

    def train_step(self, x, target):
        return self.runner.train_step(x.flip(0), target.flip(0))

    def parameters(self):
        return reverse_hidden_units(self.runner.parameters())

    def gradients(self):
        return reverse_hidden_units(self.runner.gradients())


@dataclass
class Row:
    quantity: str  # "loss", "output", "grad <name>", "implied grad <name>", "param <name>"
    step: int
    max_abs: float | None  # max |backend - fp64|
    max_rel: float | None  # max |backend - fp64| / |fp64| (0/0 counts as 0)
    rmse_ratio: float | None  # RMSE(backend, fp64) / yardstick_rmse; passes up to K
    passed: bool
    note: str = ""  # "within both", "too far from float64" (RMSE), "an element too far from float64", ...
    rmse: float | None = None  # RMSE(backend, fp64)
    yardstick_rmse: float | None = None  # Y: the larger RMSE(eager fp32 yardstick, fp64), >= 1 ulp
    max_ratio: float | None = None  # max_abs / yardstick_max; passes up to K_MAX
    yardstick_max: float | None = None  # M: the larger max|eager fp32 yardstick - fp64|, >= 1 ulp


@dataclass
class Result:
    backend: str
    device: str
    passed: bool
    rows: list[Row] = field(default_factory=list)
    # The largest max_abs over all rows but implied gradients (whose ~ulp(p) / lr cancellation would
    # set it for every backend that does not expose gradients, comparing nothing between backends).
    max_abs_error: float | None = None
    # The largest rmse_ratio over all rows (NaN if any is NaN): how far the backend is from float64 in
    # units of float32 rounding; it tells backends apart where max_abs_error (the loss's rounding) does not.
    worst_rmse_ratio: float | None = None
    worst_max_ratio: float | None = None  # the largest max_ratio over all rows (NaN if any is NaN)
    skipped: str | None = None  # why the backend could not run here
    error: str | None = None  # the exception a backend raised

    @property
    def nonfinite(self):
        return any(row.note.startswith("non-finite") for row in self.rows)


def status(result):
    """One word (or two) for the benchmark's JSON: "pass", "FAIL", "FAIL: non-finite",
    "FAIL: error", "skipped"."""
    if result.skipped:
        return "skipped"
    if result.passed:
        return "pass"
    if result.error:
        return "FAIL: error"
    if result.nonfinite:
        return "FAIL: non-finite"
    return "FAIL"


Factory = Callable[[dict, str, torch.dtype], object]  # (state_dict, device, dtype) -> Runner


def backend_factory(name):
    return lambda state_dict, device, dtype: backends.create(name, state_dict, device, dtype)


def _default_batch(batch_size, seed):
    return lambda step: model.make_batch(batch_size, seed=seed * SEED_STRIDE + step)


def _copy(value, dtype=torch.float64):
    """A detached CPU copy, never a view of a runner's live buffers; dtype None keeps it."""
    tensor = torch.as_tensor(value).detach()
    return tensor.to(device="cpu", dtype=dtype or tensor.dtype, copy=True)


def _observe(runner, loss, x_fixed, names, dtype=torch.float64, before=None):
    """Everything compared after a step: {quantity: tensor or None}; None = missing. "gradients" is
    None where the runner does not expose them. With `before` (its parameters before the step, float64)
    also the gradient its update implies, "implied grad <name>" = (before - after) / lr."""
    obs = {"loss": _copy(loss, dtype).reshape(())}
    grads = runner.gradients()
    if grads is None:
        obs["gradients"] = None
    else:
        for name in names:
            g = grads.get(name)
            obs[f"grad {name}"] = None if g is None else _copy(g, dtype)
    params = runner.parameters()
    for name in names:
        p = params.get(name)
        obs[f"param {name}"] = None if p is None else _copy(p, dtype)
        if before is not None and p is not None:  # float32 values are exact in float64: the cancellation
            obs[f"implied grad {name}"] = (before[name] - _copy(p)) / model.LEARNING_RATE  # is float32's
    obs["output"] = _copy(runner.forward(x_fixed), dtype)
    return obs


def _rmse(a, b):
    return torch.sqrt(torch.mean(torch.square(a - b))).item()


def judge_quantity(quantity, step, res, ref, yardsticks):
    """One Row: backend value `res` against float64 `ref`; the float32 `yardsticks` (one
    tensor or several) set Y and M (see yardstick, yardstick_max); the row passes when
    RMSE <= K * Y and its largest element error <= K_MAX * M."""
    if res is None:
        return Row(quantity, step, None, None, None, False, "missing from backend")
    if res.shape != ref.shape:
        return Row(quantity, step, None, None, None, False, f"shape {tuple(res.shape)} != {tuple(ref.shape)}")
    diff = (res - ref).abs()
    max_abs = diff.max().item()  # max propagates NaN
    rel = torch.where(diff == 0, torch.zeros_like(diff), diff / ref.abs())
    max_rel = rel.max().item()
    yardsticks = yardsticks if isinstance(yardsticks, (list, tuple)) else [yardsticks]
    rmse = _rmse(res, ref)
    y = yardstick(ref, max(_rmse(run, ref) for run in yardsticks))
    m = yardstick_max(ref, max((run - ref).abs().max().item() for run in yardsticks))
    row = Row(quantity, step, max_abs, max_rel, _ratio(rmse, y), False, "", rmse=rmse,
              yardstick_rmse=y, max_ratio=_ratio(max_abs, m), yardstick_max=m)
    bad_res, bad_ref = not torch.isfinite(res).all(), not torch.isfinite(ref).all()
    if bad_res or bad_ref:  # checked first: NaN must never pass, not even as NaN == NaN
        where = " and ".join(w for w, bad in [("backend", bad_res), ("float64 reference", bad_ref)] if bad)
        row.note = f"non-finite (NaN/inf) in {where}"
        return row
    rmse_ok, max_ok = row.rmse_ratio <= K, row.max_ratio <= K_MAX
    row.passed = rmse_ok and max_ok
    row.note = ("within both" if row.passed else "too far from float64" if not rmse_ok
                else "an element too far from float64")
    return row


def _ratio(error, allowed):
    if allowed > 0 or math.isnan(allowed):
        return error / allowed
    return 0.0 if error == 0 else math.inf  # only when the reference is all zeros


def _lockstep(factories, device, steps, batch_size, seed, make_batch, on_observe, observe_at, on_step=None):
    """Train every runner in `factories` ({name: (factory, dtype)}) in lockstep on the same
    batches; call on_observe(step, {name: obs}) at the steps in observe_at and
    on_step(step, {name: runner}) after every step. Returns {name: error message} for runners
    that raised (they are dropped from the rest of the run)."""
    state = model.make_net(seed).state_dict()
    names = list(state)  # the Net has parameters only, no buffers
    make_batch = make_batch or _default_batch(batch_size, seed)
    x_fixed, _ = _default_batch(batch_size, seed)(0)
    runners, errors = {}, {}
    for name, (factory, dtype) in factories.items():
        try:
            runners[name] = factory({k: v.to(dtype) for k, v in state.items()}, device, dtype)
        except Exception as error:
            if name in EAGER_RUNS:
                raise
            errors[name] = f"{type(error).__name__}: {error}"
    for step in range(1, steps + 1):
        x, target = make_batch(step)
        losses, before = {}, {}
        for name, runner in list(runners.items()):
            dtype = factories[name][1]
            try:
                if step in observe_at:  # for the gradient each update implies
                    before[name] = {k: _copy(v) for k, v in runner.parameters().items()}
                losses[name] = runner.train_step(x.to(device, dtype), target.to(device, dtype))
            except Exception as error:
                if name in EAGER_RUNS:
                    raise
                errors[name] = f"step {step}: {type(error).__name__}: {error}"
                del runners[name]
        if on_step is not None:
            on_step(step, runners)
        if step in observe_at:
            observed = {}
            for name, runner in list(runners.items()):
                dtype = factories[name][1]
                try:
                    observed[name] = _observe(runner, losses[name], x_fixed.to(device, dtype), names,
                                              before=before[name])
                except Exception as error:
                    if name in EAGER_RUNS:
                        raise
                    errors[name] = f"step {step}: {type(error).__name__}: {error}"
                    del runners[name]
            on_observe(step, observed)
    return errors


def _reference_factories():
    return {
        REFERENCE: (backend_factory(backends.EAGER), torch.float64),
        EAGER_FLOAT32: (backend_factory(backends.EAGER), torch.float32),
        EAGER_FLOAT32_REORDERED: (ReorderedEager, torch.float32),
    }


def _check_arguments(backend_names, device, steps):
    """The backends to run (default: all); ValueError naming the valid choices otherwise."""
    if backend_names is None:
        backend_names = list(backends.DEFAULT_CONFIGS)
    for name in backend_names:
        backends.check_choice("backend", name, backends.CONFIGS)
    backends.check_choice("device", device, backends.DEVICES)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return backend_names


def check(backend_names=None, device="cpu", steps=DEFAULT_STEPS, batch_size=DEFAULT_BATCH_SIZE, seed=0,
          extra=None, make_batch=None):
    """Compare each backend with eager float64 after step 1 and after step `steps`.

    backend_names: names in backends.CONFIGS (default: all); unavailable ones come back with
      `skipped` set. extra: {name: factory(state_dict, device, dtype) -> Runner}, runners to
      check beside them (the tests inject wrong ones this way); a name may be a backend's own
      when it is not in backend_names. A factory may return a runner built beforehand (the one a
      benchmark times) if it starts from model.make_net(seed).state_dict() and has not trained.
      make_batch: step -> (x, target)
      in float32 on the CPU, replacing the seeded batches (the tests inject NaN this way).
    """
    backend_names = _check_arguments(backend_names, device, steps)

    results, factories = {}, _reference_factories()
    for name in backend_names:
        reason = backends.unavailable(name, device)
        if reason:
            results[name] = Result(name, device, False, skipped=reason)
        else:
            factories[name] = (backend_factory(name), torch.float32)
    for name, factory in (extra or {}).items():
        if name in factories:
            raise ValueError(f"extra runner {name!r} clashes with a backend name")
        factories[name] = (factory, torch.float32)
    checked = [n for n in factories if n not in EAGER_RUNS]
    if checked and device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available")
    if not checked:
        return [results[n] for n in backend_names]
    for name in checked:
        results[name] = Result(name, device, True)

    def on_observe(step, observed):
        ref, yardsticks = observed[REFERENCE], (observed[EAGER_FLOAT32], observed[EAGER_FLOAT32_REORDERED])
        for name in checked:
            if name not in observed:
                continue
            obs = observed[name]
            hidden = obs.get("gradients", 0) is None  # not exposed: judge the gradient its update implies
            for quantity, value in ref.items():
                if quantity.startswith("implied grad ") or quantity == "gradients":
                    continue
                mine = f"implied {quantity}" if hidden and quantity.startswith("grad ") else quantity
                results[name].rows.append(
                    judge_quantity(mine, step, obs.get(mine), value, [run[mine] for run in yardsticks]))

    errors = _lockstep(factories, device, steps, batch_size, seed, make_batch, on_observe, {1, steps})
    for name in checked:
        result = results[name]
        result.error = errors.get(name)
        result.passed = result.error is None and all(row.passed for row in result.rows)
        direct = [row for row in result.rows if not row.quantity.startswith("implied ")]
        result.max_abs_error = _worst(row.max_abs for row in direct)
        result.worst_rmse_ratio = _worst(row.rmse_ratio for row in result.rows)
        result.worst_max_ratio = _worst(row.max_ratio for row in result.rows)
    return [results[n] for n in [*backend_names, *(extra or {})]]


def _worst(values):
    """max over the values that are not None, NaN if any is NaN, None if there are none."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return math.nan if any(math.isnan(v) for v in values) else max(values)


def _bits(value):
    return None if value is None else value.contiguous().reshape(-1).view(torch.uint8)


def repeat_identical(device="cpu", steps=DEFAULT_STEPS, batch_size=DEFAULT_BATCH_SIZE, seed=0, factory=None):
    """Run eager float32 (or `factory`) twice on the same steps and compare every quantity
    (loss, gradients, parameters, forward output) after every step, bit for bit.
    Returns (identical, detail)."""
    factory = factory or backend_factory(backends.EAGER)
    state = model.make_net(seed).state_dict()
    names = list(state)
    make_batch = _default_batch(batch_size, seed)
    x_fixed = make_batch(0)[0].to(device)
    runs = [factory(state, device, torch.float32) for _ in range(2)]
    differences = []
    for step in range(1, steps + 1):
        x, target = (t.to(device) for t in make_batch(step))
        # cuDNN picks among non-deterministic algorithms unless told not to
        with torch.backends.cudnn.flags(enabled=True, deterministic=True, allow_tf32=False):
            a, b = (_observe(r, r.train_step(x, target), x_fixed, names, dtype=None) for r in runs)
        for quantity in a:
            va, vb = a[quantity], b.get(quantity)
            if (va is None) != (vb is None) or (va is not None and not (
                    va.dtype == vb.dtype and va.shape == vb.shape and torch.equal(_bits(va), _bits(vb)))):
                differences.append(f"{quantity} at step {step}")
    if differences:
        more = " ..." if len(differences) > 5 else ""
        return False, f"{len(differences)} differ, first: {', '.join(differences[:5])}{more}"
    return True, f"every quantity bit-identical after each of {steps} steps"


# ------------------------------------------------------------- drift: the long run on one batch

def fixed_batch(batch_size, seed):
    """The same batch at every step: the long run trains on one fixed batch."""
    batch = model.make_batch(batch_size, seed=seed)
    return lambda step: batch


def drift(backend_names=None, device="cpu", steps=DEFAULT_DRIFT_STEPS, batch_size=DEFAULT_BATCH_SIZE, seed=0,
          extra=None):
    """Max abs parameter error vs eager float64 after every step of training on one fixed batch.
    Returns {"steps": n, "errors": {name: [per-step floats]}, "skipped": {...}, "failed": {...}}."""
    backend_names = _check_arguments(backend_names, device, steps)
    factories = {REFERENCE: (backend_factory(backends.EAGER), torch.float64)}
    skipped = {}
    for name in backend_names:
        reason = backends.unavailable(name, device)
        if reason:
            skipped[name] = reason
        else:
            factories[name] = (backend_factory(name), torch.float32)
    for name, factory in (extra or {}).items():
        factories[name] = (factory, torch.float32)
    errors = {name: [] for name in factories if name != REFERENCE}
    if not errors:
        return {"device": device, "steps": steps, "batch_size": batch_size, "seed": seed,
                "errors": {}, "skipped": skipped, "failed": {}}

    def on_step(step, runners):
        ref = {k: v.detach() for k, v in runners[REFERENCE].parameters().items()}
        for name, runner in runners.items():
            if name == REFERENCE:
                continue
            params = runner.parameters()
            worst = torch.stack([(torch.as_tensor(params[k]).to(v.device, torch.float64) - v).abs().max()
                                 for k, v in ref.items()]).max()
            errors[name].append(worst.item())

    failed = _lockstep(factories, device, steps, batch_size, seed, fixed_batch(batch_size, seed),
                       lambda *a: None, set(), on_step)
    return {"device": device, "steps": steps, "batch_size": batch_size, "seed": seed,
            "errors": errors, "skipped": skipped, "failed": failed}

