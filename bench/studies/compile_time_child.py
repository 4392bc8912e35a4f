"""One fresh process of bench.compile_time: build one backend's runner and time its first calls.

    python -m bench.studies.compile_time_child BACKEND BATCH_SIZE --result FILE

Started by bench/studies/compile_time.py through bench/launch/process.py, with the
TORCHINDUCTOR_CACHE_DIR of its cold or warm run. Torch, the model and the backends are imported
inside `measure`, so their import time is part of what it records.
"""

import argparse
import sys
import time


def measure(name, batch):
    start = time.perf_counter()
    import torch

    import model
    from bench import backends
    imported = time.perf_counter() - start

    from bench.measure import timing

    state = model.make_net().state_dict()
    x, target = model.make_batch(batch)

    def once(call):  # seconds of one call
        return timing.timed_block(call, 1)

    t = time.perf_counter()
    runner = backends.create(name, state, "cpu")
    row = {"import_s": imported, "create_s": time.perf_counter() - t}
    row["export_s"] = getattr(runner, "export_seconds", None)
    row["session_s"] = getattr(runner, "session_seconds", None)
    row["first_train_step_s"] = once(lambda: runner.train_step(x, target))
    row["next_train_step_s"] = once(lambda: runner.train_step(x, target))
    row["first_forward_s"] = once(lambda: runner.forward(x))
    row["next_forward_s"] = once(lambda: runner.forward(x))
    from torch._dynamo.utils import counters

    row["cache"] = {f"{group}.{key}": int(value) for group in ("inductor", "aot_autograd")
                    for key, value in sorted(counters[group].items())
                    if "cache" in key and ("hit" in key or "miss" in key or "bypass" in key)}
    for key in ("library_hit", "library_miss"):  # aotinductor's own on-disk library cache
        if key in getattr(runner, "info", {}):
            row["cache"][f"aotinductor.{key}"] = runner.info[key]
    row["threads"] = torch.get_num_threads()
    row["torch"] = torch.__version__
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.studies.compile_time_child",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("backend")
    parser.add_argument("batch_size", type=int)
    parser.add_argument("--result", required=True, help="where the JSON row goes")
    args = parser.parse_args(argv)
    from bench.launch import process

    return process.child("bench.studies.compile_time_child", lambda: measure(args.backend, args.batch_size),
                         args.result)


if __name__ == "__main__":
    sys.exit(main())
