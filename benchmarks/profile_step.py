"""Where a training step's GPU time goes: torch.profiler kernel table per model.

    python benchmarks/profile_step.py                       # sasrec + xlstm, d=256, 4 blocks, B=128, L=200
    python benchmarks/profile_step.py --models sasrec --dim 64 --blocks 2 --items 3416

One optimizer step (bf16 autocast, full-softmax CE — the trainer's code path,
``seqrec_core.train.LossStep``) is profiled after warm-up; the table lists the
kernels by total CUDA time, and the step's wall time next to its summed kernel
time shows how launch-bound it is.
"""

from __future__ import annotations

import argparse
import time

import torch
from benchtools import ADAMW, add_size_args, build_model, check_options, random_batch, sync
from torch.profiler import ProfilerActivity, profile

from seqrec_core.plugins import load_plugins
from seqrec_core.train import LossStep, build_optimizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_size_args(p, models=["sasrec", "xlstm"])
    p.add_argument("--loss", default="ce")
    p.add_argument("--plain", action="store_true", help="plain CE instead of the fused one")
    p.add_argument("--rows", type=int, default=25)
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    registry = load_plugins()
    loss_cfg = type("Loss", (), {"name": args.loss, "fused": not args.plain, "negatives": 1})()
    extra = check_options(args, registry, args.models)
    if extra:
        print(f"model options{extra}")
    for name in args.models:
        profile_model(name, registry, args, device, loss_cfg, ADAMW)


def profile_model(name, registry, args, device, loss_cfg, opt_cfg) -> None:
    torch.manual_seed(0)
    model = build_model(registry.get("models", name), args).to(device).train()
    opt = build_optimizer(opt_cfg, model, device)
    step = LossStep(model, loss_cfg, model.encode, None)
    inputs, _, sel, targets = random_batch(model, args, device)

    def one():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = step(inputs, sel, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):
        one()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(10):
        one()
    sync(device)
    wall = (time.perf_counter() - t0) / 10
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            one()
        sync(device)
    events = prof.key_averages()
    cuda = torch.autograd.DeviceType.CUDA
    kernel_us = sum(e.self_device_time_total for e in prof.events() if e.device_type == cuda) / 3
    print(
        f"\n== {name}: d={args.dim} blocks={args.blocks} B={args.batch} L={args.max_len} "
        f"items={args.items}: wall {wall * 1e3:.2f} ms/step, "
        f"{args.batch * args.max_len / wall / 1e6:.2f}M tok/s, "
        f"kernels {kernel_us / 1e3:.2f} ms/step ({kernel_us / 1e3 / (wall * 1e3):.0%} busy)"
    )
    print(
        events.table(
            sort_by="self_device_time_total", row_limit=args.rows, max_name_column_width=70
        )
    )


if __name__ == "__main__":
    main()
