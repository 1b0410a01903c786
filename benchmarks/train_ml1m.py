"""Train a model on ML-1M (SASRec preprocessing) end to end and print one table row.

    python benchmarks/train_ml1m.py                       # SASRec, GPU if present
    python benchmarks/train_ml1m.py --device cpu --epochs 1   # one-epoch CPU reference
    python benchmarks/train_ml1m.py --model sasrec -o model.dim=256 -o model.blocks=4

Reports seconds per training epoch, training tokens/s (supervised positions),
peak GPU memory, epochs to early stop, and test HR@10 / NDCG@10 of the best
epoch under both protocols (U: all items, F: seen items filtered).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from seqrec_core import hookimpl
from seqrec_core.data import load_dataset
from seqrec_core.plugins import load_plugins
from seqrec_core.recipe import load_recipe
from seqrec_core.run import resolve_device
from seqrec_core.train import Trainer

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/ml-1m-sasrec/ml-1m.txt"


class Recorder:
    name = "recorder"

    def __init__(self):
        self.epochs: list[dict] = []

    @hookimpl
    def on_epoch_end(self, run, event):
        self.epochs.append(event)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--model", default="sasrec")
    p.add_argument("--device", default="auto")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("-o", dest="overrides", action="append", default=[])
    args = p.parse_args()

    out = Path(tempfile.mkdtemp(prefix="seqrec-bench-"))
    os.environ.setdefault("SEQREC_CACHE", str(out / "cache"))
    registry = load_plugins()
    recipe = load_recipe(
        None,
        registry,
        overrides=args.overrides,
        data={
            "name": f"bench-{args.model}",
            "dataset": {"name": "files", "path": args.data, "format": "sasrec"},
            "model": {"name": args.model, "max_len": 200, "dim": 64, "blocks": 2, "dropout": 0.2}
            if args.model == "sasrec"
            else {"name": args.model},
            "loss": {"name": "ce"},
            "train": {
                "epochs": args.epochs,
                "batch_size": 128,
                "lr": 1e-3,
                "device": args.device,
                "patience": args.patience,
                "monitor": "NDCG@10",
            },
            "eval": {"ks": [10], "metrics": ["hr", "ndcg"]},
            "callbacks": [],
            "output": {"runs_dir": str(out / "runs"), "checkpoints_dir": str(out / "ckpt")},
        },
    )
    data = load_dataset(recipe, registry)
    device = resolve_device(recipe.train.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rec = Recorder()
    trainer = Trainer(recipe, registry, data, 42, recipe.name, device, [rec])
    t0 = time.perf_counter()
    result = trainer.fit()
    total = time.perf_counter() - t0
    recipe.eval.filter_seen = True
    test_f = trainer.evaluate("test")

    train_times = [e["train_time"] for e in rec.epochs]
    tps = [e["tokens_per_s"] for e in rec.epochs]
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    name = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"CPU x{torch.get_num_threads()}"
    )
    table = Table(
        title=f"{args.model} on ML-1M ({data.n_users} users, {data.n_items} items), {name}"
    )
    cols = [
        "model",
        "config",
        "s/epoch (train)",
        "tokens/s",
        "peak GPU GiB",
        "epochs (best)",
        "total s",
        "HR@10 U",
        "NDCG@10 U",
        "HR@10 F",
        "NDCG@10 F",
    ]
    for c in cols:
        table.add_column(c, justify="right")
    opts = recipe.model_options.model_dump()
    config = ", ".join(
        f"{k}={v}" for k, v in opts.items() if k in ("dim", "blocks", "max_len", "heads")
    )
    table.add_row(
        args.model,
        config,
        f"{np.median(train_times):.2f}",
        f"{np.median(tps) / 1e6:.2f}M",
        f"{peak:.2f}",
        f"{result.epochs_run} ({result.best_epoch})",
        f"{total:.0f}",
        f"{result.test['HR@10']:.4f}",
        f"{result.test['NDCG@10']:.4f}",
        f"{test_f['HR@10']:.4f}",
        f"{test_f['NDCG@10']:.4f}",
    )
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
