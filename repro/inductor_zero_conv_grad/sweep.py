"""Sweep the public knobs over batch sizes 1..64 with repro.check; prints one line per (setting, batch)
and a summary table of the batch sizes that come out wrong. Usage: python sweep.py"""
import torch

from repro import check

SETTINGS = {
    "backend=aot_eager": {"backend": "aot_eager"},
    "backend=aot_eager_decomp_partition": {"backend": "aot_eager_decomp_partition"},
    "inductor defaults": {},
    "inductor layout_optimization=False": {"options": {"layout_optimization": False}},
    "inductor force_layout_optimization=True": {"options": {"force_layout_optimization": True}},
    "inductor freezing=True": {"options": {"freezing": True}},
}
BATCHES = [1, 2, 4, 5, 6, 8, 12, 16, 17, 24, 32, 48, 64]

if __name__ == "__main__":
    print("torch", torch.__version__, "| threads", torch.get_num_threads(), "|",
          torch.backends.cpu.get_cpu_capability())
    wrong = {name: [b for b in BATCHES if check(b, **kw) > 1e-4] for name, kw in SETTINGS.items()}
    print("\n| setting | batch sizes with wrong gradients (of " + ", ".join(map(str, BATCHES)) + ") |")
    print("|---|---|")
    for name, bs in wrong.items():
        print(f"| {name} | {', '.join(map(str, bs)) or 'none'} |")
