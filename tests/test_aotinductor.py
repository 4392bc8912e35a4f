"""What the aotinductor backend adds over the shared backend tests: its thread policy and its
on-disk library cache and that cache's key."""

import importlib.util
import types

import pytest
import torch

import model
from bench import backends
from bench.backends import aotinductor

needs_aotinductor = pytest.mark.skipif(bool(backends.unavailable("aotinductor", "cpu")),
                                       reason=str(backends.unavailable("aotinductor", "cpu")))


@needs_aotinductor
def test_one_library_runs_every_batch_at_torchs_thread_count_in_lockstep_with_eager(monkeypatch):
    """No special case for small batches: batch 1 and batch 8 run the same library, at torch's
    current thread count, and train the same parameters as eager."""
    runner = backends.create("aotinductor", model.make_net(seed=0).state_dict())
    eager = backends.create("eager", model.make_net(seed=0).state_dict())
    threads = torch.get_num_threads()
    for step in range(6):
        x, target = model.make_batch(1 if step % 2 else 8, seed=step)
        torch.testing.assert_close(runner.train_step(x, target), eager.train_step(x, target),
                                   rtol=1e-5, atol=1e-6)
        assert runner.info["threads"] == threads
        assert torch.get_num_threads() == threads
        for key, value in eager.parameters().items():
            torch.testing.assert_close(runner.parameters()[key], value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(runner.forward(x), eager.forward(x), rtol=1e-5, atol=1e-6)
    assert sorted(runner._libraries) == [(False, threads), (True, threads)]

    # Another thread count set by the session gets a library built for that count.
    built = []
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads + 1)
    monkeypatch.setattr(aotinductor, "_library", lambda *args: built.append(args[-1]) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        runner.train_step(*model.make_batch(1))
    assert built == [threads + 1]


@needs_aotinductor
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


GRAPH = types.SimpleNamespace(code="def forward(self, x):\n    return x * 2\n")
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def key(module=aotinductor, graph=GRAPH, options=None, device=CPU, dtype=torch.float32, train=True):
    options = {"cpp.threads": 2} if options is None else options
    return module.cache_key(module.cache_ingredients(graph, options, device, dtype, train))


def test_cache_key_changes_with_each_ingredient(monkeypatch):
    base = key()
    assert key() == base  # deterministic
    other_graph = types.SimpleNamespace(code=GRAPH.code.replace("2", "3"))
    variants = {
        "graph": lambda: key(graph=other_graph),
        "options": lambda: key(options={"cpp.threads": 1}),
        "dtype": lambda: key(dtype=torch.float64),
        "train": lambda: key(train=False),
    }
    for name, variant in variants.items():
        assert variant() != base, name

    def other(value):  # a value that differs from the installed one, whatever is installed
        return f"{value}+other"

    installed = {"triton": aotinductor._triton_version(), "compiler": aotinductor.machine.compiler_version(),
                 "vector ISA": aotinductor._vec_isa()}
    changes = {  # each: something the library depends on, changed in isolation
        "torch version": lambda: monkeypatch.setattr(torch, "__version__", other(torch.__version__)),
        "torch git version": lambda: monkeypatch.setattr(torch.version, "git_version",
                                                         other(torch.version.git_version)),
        "triton": lambda: monkeypatch.setattr(aotinductor, "_triton_version",
                                              lambda: other(installed["triton"])),
        "compiler": lambda: monkeypatch.setattr(aotinductor.machine, "compiler_version",
                                                lambda: other(installed["compiler"])),
        "vector ISA": lambda: monkeypatch.setattr(aotinductor, "_vec_isa",
                                                  lambda: other(installed["vector ISA"])),
        "format": lambda: monkeypatch.setattr(aotinductor, "CACHE_FORMAT", aotinductor.CACHE_FORMAT + 1),
    }
    for name, change in changes.items():
        change()
        assert key() != base, name
        monkeypatch.undo()
        assert key() == base, f"{name}: not restored"
    # A setting outside the options passed (Inductor's own config, as a user might patch it).
    with torch._inductor.config.patch(epilogue_fusion=not torch._inductor.config.epilogue_fusion):
        assert key() != base, "inductor config"


def test_cache_key_of_a_cuda_library_includes_the_gpu(monkeypatch):
    assert aotinductor._gpu(CPU) is None
    monkeypatch.setattr(aotinductor, "_gpu", lambda device: ("NVIDIA H100", (9, 0)))
    h100 = key(device=CUDA, options={})
    monkeypatch.setattr(aotinductor, "_gpu", lambda device: ("NVIDIA A100", (8, 0)))
    assert key(device=CUDA, options={}) != h100


def test_cache_key_ignores_a_comment_edit_in_the_wrapping_code(tmp_path):
    source = open(aotinductor.__file__).read()
    edited = tmp_path / "aotinductor_edited.py"
    edited.write_text(source.replace("\ndef cache_key(", "\n# an edited comment\ndef cache_key(", 1))
    assert edited.read_text() != source
    spec = importlib.util.spec_from_file_location("aotinductor_edited", edited)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert key(module) == key()


def test_cache_key_ignores_the_metadata_a_build_writes_into_inductors_config(monkeypatch):
    """AOTInductor fills config.aot_inductor.metadata in place during a build; keyed on, every
    lookup after the first build in a process missed (and a cold run built each library twice)."""
    before = aotinductor._inductor_config()
    monkeypatch.setitem(torch._inductor.config.aot_inductor.metadata, "AOTI_DEVICE_KEY", "cpu")
    assert aotinductor._inductor_config() == before
    # config.patch, not monkeypatch: restoring a ConfigModule attribute by setattr breaks it
    with torch._inductor.config.patch(max_autotune=not torch._inductor.config.max_autotune):
        assert aotinductor._inductor_config() != before  # any other setting still counts
