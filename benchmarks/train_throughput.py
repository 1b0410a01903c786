"""Training throughput: seqrec's step vs plain PyTorch, same model, same batch.

    python benchmarks/train_throughput.py                     # every model, d=256, 4 blocks, B=128, L=200, 10.7k items
    python benchmarks/train_throughput.py --models sasrec xlstm --compile
    python benchmarks/train_throughput.py --device cpu --dim 16 --blocks 1 --max-len 20 --items 100 --batch 8

For each model, one optimizer step (AdamW, bf16 autocast on CUDA) on a random
B x L batch, timed as the median of CUDA-synchronised repeats after warm-up:

* ``plain`` — the textbook step: encoder, all ``[B*L, items+1]`` logits
  materialised and cast to fp32, ``F.cross_entropy`` (seqrec's ``loss.fused:
  false``);
* ``seqrec eager`` — fused output layer + CE (aligned catalogue width), eager;
* ``seqrec (CUDA graph)`` — the trainer's default step on one GPU: the same
  forward and backward replayed from a CUDA graph (``train.cuda_graphs``);
* with ``--compile`` also ``torch.compile`` of the encoder (``train.compile``).

Both start from the same weights; the table prints the first step's loss of
each (they must agree within bf16 rounding), tokens/s, ms/step, peak GPU
memory and the speed-up over plain.
"""

from __future__ import annotations

import argparse

import torch
from benchtools import ADAMW, add_size_args, build_model, check_options, random_batch, timed
from rich.console import Console
from rich.table import Table

from seqrec_core.losses import full_ce, fused_ce
from seqrec_core.plugins import load_plugins
from seqrec_core.train import GraphStep, LossStep, build_optimizer


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_size_args(p)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd encoders")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


def main(argv=None) -> list[dict]:
    args = parse(argv)
    device = torch.device(args.device)
    registry = load_plugins()
    names = args.models or [n for n in registry.names("models") if n != "pop"]
    amp = device.type == "cuda"
    extra = check_options(args, registry, names)
    title = (
        f"training step on {torch.cuda.get_device_name() if amp else 'CPU'}: d={args.dim}, "
        f"blocks={args.blocks}, L={args.max_len}, B={args.batch}, {args.items:,} items, "
        f"{'bf16' if amp else 'fp32'}, AdamW{extra}"
    )
    table = Table(title=title)
    cols = ["model", "step", "first loss", "tokens/s", "ms/step", "peak GiB", "vs plain"]
    for col in cols:
        table.add_column(col, justify="right")
    rows = []
    for name in names:
        rows += bench(name, registry.get("models", name), args, device, amp)
        if amp:
            torch.cuda.empty_cache()
    for row in rows:
        table.add_row(
            row["model"],
            row["step"],
            f"{row['loss']:.4f}",
            f"{row['tokens_per_s'] / 1e6:.2f}M",
            f"{row['ms']:.2f}",
            f"{row['peak_gib']:.2f}",
            f"{row['speedup']:.2f}x",
        )
    Console(width=160).print(table)
    return rows


def bench(name, cls, args, device, amp) -> list[dict]:
    torch.manual_seed(0)
    model = build_model(cls, args).to(device).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    inputs, labels, sel, targets = random_batch(model, args, device)
    tokens = int(targets.numel())
    dense = torch.where(sel, labels, 0)  # every position, 0 = no target (the graph's input)
    variants = [("plain", full_ce, model.encode), ("seqrec eager", fused_ce, model.encode)]
    if device.type == "cuda":
        variants.append(("seqrec (CUDA graph)", None, model.encode))
    if args.compile:
        compiled = torch.compile(model.encode)
        variants.append(("seqrec + compile", fused_ce, compiled))
        if device.type == "cuda":
            variants.append(("seqrec + compile (CUDA graph)", None, compiled))
    rows, base = [], None
    for label, loss_fn, encode in variants:
        model.load_state_dict(state)
        opt = build_optimizer(ADAMW, model, device)
        if loss_fn is None:  # the trainer's default step on CUDA
            loss_cfg = type("Loss", (), {"name": "ce", "fused": True})()
            graph = GraphStep(LossStep(model, loss_cfg, encode, None), *inputs.shape, device, amp)

            def step(graph=graph, opt=opt):
                loss = graph(inputs, dense)
                opt.step()
                return loss

        else:

            def step(loss_fn=loss_fn, encode=encode, opt=opt):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    loss = loss_fn(encode(inputs)[sel], targets, model.output_embeddings())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                return loss

        torch.manual_seed(1)
        first = float(step().detach())
        if amp:
            torch.cuda.reset_peak_memory_stats()
        sec = timed(step, device, args.warmup, args.repeat)
        peak = torch.cuda.max_memory_allocated() / 2**30 if amp else float("nan")
        base = base or sec
        rows.append(
            {
                "model": name,
                "step": label,
                "loss": first,
                "tokens_per_s": tokens / sec,
                "ms": sec * 1e3,
                "peak_gib": peak,
                "speedup": base / sec,
            }
        )
    return rows


if __name__ == "__main__":
    main()
