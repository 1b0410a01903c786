"""Per-model speed table: training throughput, inference latency, streaming.

    python benchmarks/model_bench.py                          # every model, GPU if present
    python benchmarks/model_bench.py --models sasrec xlstm --dim 64 --blocks 2
    python benchmarks/model_bench.py --ml1m ../shared/data/ml-1m-sasrec/ml-1m.txt

For each model (same options: ``dim``, ``blocks``/``layers``, ``heads``,
``max_len``) it prints

* training tokens/s and ms/step — one optimizer step on a random batch
  (B x L item ids over ``--items`` items, full-softmax CE, bf16 autocast on
  CUDA), the same code path as the trainer — with the plain (unfused) CE and
  with the fused CE the trainer uses, and the first step's loss of each on
  identical weights;
* seconds per ML-1M epoch (when ``--ml1m`` is given), from the trainer itself;
* inference latency of ``predict`` + top-10 for B=1 and B=256 histories of
  length L;
* for models with a recurrent state: one streaming ``step`` vs recomputing
  ``predict`` over histories of 50, 200 and 1000 items.

Timings: CUDA-synchronised medians after warm-up.
"""

from __future__ import annotations

import argparse

import torch
from benchtools import ADAMW, add_size_args, build_model, check_options, timed
from rich.console import Console
from rich.table import Table

from seqrec_core.losses import chunked_ce, full_ce
from seqrec_core.model import Recommender
from seqrec_core.plugins import load_plugins
from seqrec_core.train import build_optimizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_size_args(p)
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--ml1m", default=None, help="ml-1m.txt (SASRec format) to time one epoch")
    p.add_argument("--no-stream", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model's encode")
    args = p.parse_args()
    device = torch.device(args.device)
    registry = load_plugins()
    names = args.models or [n for n in registry.names("models") if n != "pop"]
    amp = device.type == "cuda"
    extra = check_options(args, registry, names)

    table = Table(
        title=(
            f"seqrec models on {torch.cuda.get_device_name() if amp else 'CPU'}: d={args.dim}, "
            f"blocks={args.blocks}, L={args.max_len}, B={args.batch}, {args.items:,} items, "
            f"{'bf16' if amp else 'fp32'}{extra}"
        )
    )
    for col in (
        "model",
        "params",
        "tokens/s unfused CE",
        "train tokens/s",
        "speed-up",
        "loss unfused / fused",
        "ms/step",
        "peak GiB",
        "ML-1M s/epoch",
        "predict B=1 ms",
        "predict B=256 ms",
    ):
        table.add_column(col, justify="right")
    stream = Table(title="streaming update vs full recompute (B=1, ms)")
    for col in ("model", "history", "step ms", "recompute ms", "speed-up"):
        stream.add_column(col, justify="right")

    for name in names:
        bench_model(name, registry.get("models", name), args, device, amp, table, stream)
        if amp:
            torch.cuda.empty_cache()

    console = Console(width=200)
    console.print(table)
    if stream.row_count:
        console.print(stream)


def bench_model(name, cls, args, device, amp, table, stream) -> None:
    """One row of ``table`` (and rows of ``stream``) for model ``name``."""
    torch.manual_seed(0)
    model = build_model(cls, args, args.max_len, args.items).to(device)
    opt = build_optimizer(
        ADAMW,
        model,
        device,
    )
    seqs = torch.randint(1, args.items + 1, (args.batch, args.max_len + 1), device=device)
    masked = model.objective == "masked"

    encode = torch.compile(model.encode) if args.compile else model.encode

    def train_step(loss_fn):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            if masked:
                inp, lab = model.mask_batch(seqs[:, 1:])
            else:
                inp, lab = seqs[:, :-1], seqs[:, 1:]
            h = encode(inp)
            sel = lab != 0
            loss = loss_fn(h[sel], lab[sel], model.output_embeddings())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    model.train()
    # Same loss value per step, fused vs unfused, on identical weights and batch.
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    loss_fused = float(train_step(chunked_ce))
    model.load_state_dict(state)
    torch.manual_seed(1)
    loss_plain = float(train_step(full_ce))
    plain = timed(lambda: train_step(full_ce), device, repeat=args.repeat)
    if amp:
        torch.cuda.reset_peak_memory_stats()
    step = timed(lambda: train_step(chunked_ce), device, repeat=args.repeat)
    peak = torch.cuda.max_memory_allocated() / 2**30 if amp else float("nan")
    tokens = args.batch * args.max_len
    model.eval()

    def predict(b):
        hist = seqs[:b, 1:]
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            return model.predict(hist).topk(10).indices

    lat1 = timed(lambda: predict(1), device, repeat=args.repeat)
    lat256 = timed(lambda: predict(min(256, args.batch)), device, repeat=args.repeat)
    if args.batch < 256:
        seqs = torch.randint(1, args.items + 1, (256, args.max_len + 1), device=device)
        lat256 = timed(lambda: predict(256), device, repeat=args.repeat)

    epoch = ml1m_epoch(name, args, device) if args.ml1m else float("nan")
    table.add_row(
        name,
        f"{model.num_parameters() / 1e6:.2f}M",
        f"{tokens / plain / 1e6:.2f}M",
        f"{tokens / step / 1e6:.2f}M",
        f"{plain / step:.2f}x",
        f"{loss_plain:.4f} / {loss_fused:.4f}",
        f"{step * 1e3:.1f}",
        f"{peak:.1f}",
        f"{epoch:.2f}",
        f"{lat1 * 1e3:.2f}",
        f"{lat256 * 1e3:.2f}",
    )
    if not args.no_stream and type(model).init_state is not Recommender.init_state:
        long_model = build_model(cls, args, 1024, args.items).to(device).eval()
        for n in (50, 200, 1000):
            hist = torch.randint(1, args.items + 1, (n,), device=device)
            state = long_model.init_state(hist[:-1])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                st = timed(
                    lambda s=state, h=hist: long_model.step(s, int(h[-1])),
                    device,
                    repeat=args.repeat,
                )
                with torch.no_grad():
                    rc = timed(
                        lambda h=hist: long_model.predict(h[None]), device, repeat=args.repeat
                    )
            stream.add_row(name, str(n), f"{st * 1e3:.2f}", f"{rc * 1e3:.2f}", f"{rc / st:.1f}x")


def ml1m_epoch(name: str, args, device) -> float:
    """Seconds of one training epoch on ML-1M through the real trainer."""
    import os
    import tempfile

    from seqrec_core import hookimpl
    from seqrec_core.data import load_dataset
    from seqrec_core.recipe import load_recipe
    from seqrec_core.train import Trainer

    out = tempfile.mkdtemp(prefix="seqrec-bench-")
    os.environ.setdefault("SEQREC_CACHE", os.path.join(out, "cache"))
    registry = load_plugins()
    cls = registry.get("models", name)
    model_opts = {
        k: v
        for k, v in build_model(cls, args, args.max_len, 10).options.model_dump().items()
        if k in ("dim", "blocks", "layers", "heads", "max_len", "chunk_size")
    }
    recipe = load_recipe(
        None,
        registry,
        data={
            "name": f"epoch-{name}",
            "dataset": {"name": "files", "path": args.ml1m, "format": "sasrec"},
            "model": {"name": name, **model_opts},
            "train": {
                "epochs": 2,
                "batch_size": args.batch,
                "device": device.type,
                "patience": 5,
                "monitor": "NDCG@10",
            },
            "eval": {"ks": [10], "metrics": ["ndcg"]},
            "callbacks": [],
            "output": {"runs_dir": f"{out}/runs", "checkpoints_dir": f"{out}/ckpt"},
        },
    )
    times = []

    class Rec:
        name = "rec"

        @hookimpl
        def on_epoch_end(self, run, event):
            times.append(event["train_time"])

    data = load_dataset(recipe, registry)
    Trainer(recipe, registry, data, 0, recipe.name, device, [Rec()]).fit()
    return times[-1]  # the second epoch: no warm-up / compilation in it


if __name__ == "__main__":
    main()
