"""Is the data ever the bottleneck? GPU utilisation while the trainer trains.

Runs recipes through the real training loop (the whole training set lives on the
GPU as tensors and windows are cut there; no DataLoader) for a few epochs with
the ``gpu_monitor`` callback sampling NVML every ``--interval`` seconds, and
prints per epoch: training tokens/s, the epoch's training time and the GPU's
mean / max utilisation (the share of time a kernel was running). Evaluation runs
only after the last epoch, so the epochs measure training alone.

    python benchmarks/gpu_utilisation.py recipes/ml1m_sasrec.yaml recipes/ml1m_xlstm.yaml \\
        -o dataset.path=../shared/data/ml-1m-sasrec/ml-1m.txt
    python benchmarks/gpu_utilisation.py recipes/ml1m_sasrec.yaml -o train.cuda_graphs=false
    # ML-20M-sized synthetic data: ~10 s epochs, so NVML's samples see a steady state
    python benchmarks/gpu_utilisation.py recipes/quickstart.yaml --epochs 3 \
        -o dataset.n_users=138000 -o dataset.n_items=27000 -o dataset.mean_length=145 \
        -o model.max_len=200 -o model.dim=64 -o train.batch_size=128

Without a GPU the utilisation columns say why they are empty.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipes", nargs="+", help="recipe YAML files")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--interval", type=float, default=0.05, help="seconds between NVML samples")
    return p.parse_args(argv)


def measure(path: str, overrides: list[str], epochs: int, interval: float) -> list[dict]:
    """One row per epoch of ``path`` trained for ``epochs`` epochs."""
    from seqrec_core import hookimpl
    from seqrec_core.data import load_dataset
    from seqrec_core.plugins import load_plugins
    from seqrec_core.recipe import load_recipe
    from seqrec_core.run import build_callbacks, resolve_device
    from seqrec_core.train import Trainer

    class Epochs:
        name = "epochs"

        def __init__(self) -> None:
            self.rows: list[dict] = []

        @hookimpl(trylast=True)  # after gpu_monitor added its summary
        def on_epoch_end(self, run, event):
            gpus = event.get("gpu") or []
            self.rows.append(
                {
                    "epoch": event["epoch"],
                    "tokens_per_s": event.get("tokens_per_s", math.nan),
                    "train_s": event.get("train_time", math.nan),
                    "util": gpus[0]["utilization"] if gpus else None,
                    "util_max": gpus[0]["utilization_max"] if gpus else None,
                    "samples": gpus[0]["samples"] if gpus else 0,
                    "status": event.get("gpu_status", ""),
                }
            )

    registry = load_plugins()
    out = tempfile.mkdtemp(prefix="seqrec-util-")
    recipe = load_recipe(
        path,
        registry,
        [
            *overrides,
            f"train.epochs={epochs}",
            f"train.eval_every={epochs}",
            f"train.patience={epochs + 1}",
            "train.seeds=[0]",
            f"callbacks=[{{name: gpu_monitor, interval: {interval}}}]",
            f"output.runs_dir={out}/runs",
            f"output.checkpoints_dir={out}/ckpt",
        ],
    )
    device = resolve_device(recipe.train.device)
    data = load_dataset(recipe, registry)
    recorder = Epochs()
    callbacks = [*build_callbacks(recipe, registry), recorder]
    Trainer(recipe, registry, data, 0, recipe.name, device, callbacks).fit()
    return recorder.rows


def main(argv=None) -> list[dict]:
    args = parse(argv)
    header = "| recipe | epoch | tokens/s | train s | GPU util mean % | max % | samples |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    rows = []
    for path in args.recipes:
        for row in measure(path, args.override, args.epochs, args.interval):
            rows.append({"recipe": Path(path).stem, **row})
            util = "–" if row["util"] is None else f"{row['util']:.1f}"
            top = "–" if row["util_max"] is None else f"{row['util_max']:.0f}"
            note = f" ({row['status']})" if row["status"] else ""
            print(
                f"| {Path(path).stem} | {row['epoch']} | {row['tokens_per_s'] / 1e6:.2f}M | "
                f"{row['train_s']:.2f} | {util}{note} | {top} | {row['samples']} |",
                flush=True,
            )
    return rows


if __name__ == "__main__":
    main()
    sys.exit(0)
