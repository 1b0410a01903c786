"""Data-parallel scaling: training tokens/s with 1 and 2 GPUs (torchrun + DDP).

    python benchmarks/ddp_scaling.py                    # SASRec + xLSTM, ML-20M-sized, 1 and 2 GPUs
    python benchmarks/ddp_scaling.py --models sasrec --gpus 1 2 4 8
    python benchmarks/ddp_scaling.py --tiny             # CPU + Gloo, tiny data: checks the plumbing

For every model and process count N the script launches
``python -m torch.distributed.run --standalone --nproc-per-node N`` on itself
(``--worker``); every rank trains the same recipe through the real
:class:`~seqrec_core.train.Trainer` (DDP, sharded windows, sharded evaluation)
and rank 0 writes a JSON line with the epoch's training tokens/s (supervised
positions of all ranks per second of training time, evaluation excluded). The
table reports the last epoch (the first one pays for kernel autotuning and
warm-up), the speed-up over N=1 and the scaling efficiency
``tokens/s(N) / (N × tokens/s(1))``.

Weak scaling: ``--batch-size`` is per GPU, so N GPUs step with an N times
larger global batch and take N times fewer steps per epoch (see
docs/distributed.md on learning rates). Both sides train eagerly (DDP steps
are never replayed from CUDA graphs). The default, 512 windows per GPU, keeps
a GPU busy; at 128 a d=64 eager step is bound by kernel launches (one GPU:
18 ms per step eagerly, 9 ms replayed from a CUDA graph), which every process
pays in full, so the speed-up measures the host more than the data
parallelism (README, "Data-parallel scaling": 1.56x at 128, 1.93x at 512 for
SASRec). Data: the ``synthetic`` dataset at MovieLens-20M size (138,000
users, 27,000 items, mean length 145: about 20M interactions), generated once
into a cache shared by the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ML20M = {"n_users": 138_000, "n_items": 27_000, "mean_length": 145}
TINY = {"n_users": 300, "n_items": 120, "mean_length": 30}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["sasrec", "xlstm"])
    p.add_argument("--gpus", nargs="+", type=int, default=[1, 2], help="process counts")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument(
        "--batch-size",
        type=int,
        default=512,
        help="windows per GPU per step (at 128 a d=64 step is launch-bound: see the docstring)",
    )
    p.add_argument("--max-len", type=int, default=200)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--windows", default="sliding", choices=["last", "sliding"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--tiny", action="store_true", help="tiny data and model, CPU + Gloo")
    p.add_argument("--cache", default=None, help="processed-data cache (default: a temp dir)")
    p.add_argument("--json", default=None, help="also write all results to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tiny:
        args.device = "cpu"
        args.max_len, args.dim, args.blocks, args.batch_size = 20, 16, 1, 32
    return args


# ------------------------------------------------------------------ worker (every rank)


def recipe_data(args: argparse.Namespace, model: str) -> dict:
    options = {"max_len": args.max_len, "dim": args.dim, "blocks": args.blocks, "dropout": 0.1}
    options["heads"] = args.heads
    if model == "xlstm" and args.tiny:
        options["chunk_size"] = 16
    return {
        "name": f"ddp-{model}",
        "dataset": {"name": "synthetic", **(TINY if args.tiny else ML20M), "seed": 0},
        "model": {"name": model, **options},
        "train": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": 1e-3,
            "device": args.device,
            "windows": args.windows,
            "patience": args.epochs + 1,
            "eval_every": args.epochs,
            "seeds": [0],
            "monitor": "NDCG@10",
            # Eager on both sides, like for like: DDP steps are always eager.
            "cuda_graphs": False,
        },
        "eval": {"ks": [10], "metrics": ["ndcg"], "both_protocols": False},
        "callbacks": [],
    }


def worker(args: argparse.Namespace, model: str) -> None:
    import torch

    from seqrec_core import distributed, hookimpl
    from seqrec_core.data import load_dataset
    from seqrec_core.plugins import load_plugins
    from seqrec_core.recipe import load_recipe
    from seqrec_core.run import resolve_device
    from seqrec_core.train import Trainer

    class Epochs:
        name = "epochs"

        def __init__(self):
            self.rows: list[dict] = []

        @hookimpl
        def on_epoch_end(self, run, event):
            self.rows.append(
                {k: event[k] for k in ("epoch", "tokens_per_s", "train_time", "train_loss")}
            )

    registry = load_plugins()
    out = Path(args.out)
    data_ = recipe_data(args, model)
    data_["output"] = {
        "runs_dir": str(out.parent / "runs"),
        "checkpoints_dir": str(out.parent / "ckpt"),
    }
    recipe = load_recipe(None, registry, data=data_)
    device = resolve_device(recipe.train.device)
    with distributed.session(device) as world:
        data = distributed.local_main_first(lambda: load_dataset(recipe, registry), "data")
        name = f"{model}-n{world.size}"
        epochs = Epochs()
        trainer = Trainer(recipe, registry, data, 0, name, device, [epochs])
        if trainer.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(trainer.device)
        result = trainer.fit()
        if world.is_main:
            peak = (
                torch.cuda.max_memory_allocated(trainer.device) / 2**30
                if trainer.device.type == "cuda"
                else float("nan")
            )
            row = {
                "model": model,
                "processes": world.size,
                "device": str(trainer.device),
                "gpu": torch.cuda.get_device_name(trainer.device)
                if trainer.device.type == "cuda"
                else "cpu",
                "params": trainer.model.num_parameters(),
                "stats": data.stats(),
                "epochs": epochs.rows,
                "peak_gib": peak,
                "test": result.test,
            }
            out.write_text(json.dumps(row))


# ------------------------------------------------------------------ launcher


def launch(args: argparse.Namespace, model: str, n: int, work: Path, cache: str) -> dict:
    out = work / f"{model}-{n}.json"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(n),
        __file__,
        "--worker",
        "--out",
        str(out),
        "--models",
        model,
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--max-len",
        str(args.max_len),
        "--dim",
        str(args.dim),
        "--blocks",
        str(args.blocks),
        "--heads",
        str(args.heads),
        "--windows",
        args.windows,
        "--device",
        args.device,
    ] + (["--tiny"] if args.tiny else [])
    env = {**os.environ, "SEQREC_CACHE": cache, "PYTHONUNBUFFERED": "1"}
    env.setdefault("OMP_NUM_THREADS", "1" if args.tiny else "4")
    print(f"$ {' '.join(cmd[2:6])} {model}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0 or not out.exists():
        raise SystemExit(f"{model} with {n} process(es) failed (exit {proc.returncode})")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.worker:
        worker(args, args.models[0])
        return
    from rich.console import Console
    from rich.table import Table

    work = Path(tempfile.mkdtemp(prefix="seqrec-ddp-"))
    cache = args.cache or str(work / "cache")
    rows = []
    for model in args.models:
        for n in args.gpus:
            rows.append(launch(args, model, n, work, cache))
            if args.json:  # after every launch, so a cut-short run keeps what it measured
                Path(args.json).write_text(json.dumps(rows, indent=2))

    first = rows[0]
    where = first["gpu"] if not args.tiny else "CPU (Gloo, --tiny)"
    stats = first["stats"]
    table = Table(
        title=(
            f"DDP scaling on {where}: {stats['users']:,} users, {stats['items']:,} items, "
            f"{stats['interactions']:,} interactions; d={args.dim}, blocks={args.blocks}, "
            f"L={args.max_len}, {args.batch_size} windows/GPU/step, {args.windows} windows"
        )
    )
    for col in ("model", "procs", "params", "tokens/s", "s/epoch", "speed-up", "efficiency"):
        table.add_column(col, justify="right")
    table.add_column("peak GiB/GPU", justify="right")
    base: dict[str, float] = {}
    for row in rows:
        last = row["epochs"][-1]
        tps = last["tokens_per_s"]
        if row["processes"] == 1:
            base[row["model"]] = tps
        one = base.get(row["model"])
        speed = tps / one if one else float("nan")
        row["speedup"], row["efficiency"] = speed, speed / row["processes"]
        table.add_row(
            row["model"],
            str(row["processes"]),
            f"{row['params']:,}",
            f"{tps:,.0f}",
            f"{last['train_time']:.2f}",
            f"{speed:.2f}x",
            f"{speed / row['processes']:.0%}",
            f"{row['peak_gib']:.1f}",
        )
    Console(width=160).print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
