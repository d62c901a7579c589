"""A short warm-up (`python -m training.sft` with the given flags) that prints, after every
optimizer step, its seconds and the process's resident and peak memory; with `--trim`, glibc
is also asked to give freed memory back after every step (`training.sft._return_freed_memory`).

    PYTHONPATH=. python training/results/2026-12-07-warmup-memory-xeon-avx2/mem_steps.py [--trim] \
        --config cpu-qwen-reader --name NAME --sft_examples 60 --sft_grad_accum 1 --sft_steps 10 \
        --sft_max_length 1280 --sft_save_steps 100
"""
import sys
import time

from transformers import TrainerCallback

import training.sft as sft
from training.logs import peak_rss_mb, rss_mb

TRIM = "--trim" in sys.argv


class StepMemory(TrainerCallback):
    def __init__(self, progress):
        self.progress, self.t = progress, None

    def on_step_begin(self, args, state, control, **kw):
        if self.t is None:
            self.t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.progress.on_step_end(args, state, control, **kw)
        if TRIM:
            sft._return_freed_memory()
        now = time.perf_counter()
        print(f"MEM step {state.global_step} s {now - self.t:.1f} rss {rss_mb():.0f} peak {peak_rss_mb():.0f}",
              flush=True)
        self.t = now


progress_callback = sft.progress_callback
sft.progress_callback = lambda *a, **kw: StepMemory(progress_callback(*a, **kw))
sys.exit(sft.main([a for a in sys.argv[1:] if a != "--trim"]))
