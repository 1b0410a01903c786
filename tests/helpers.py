"""Shared test helpers for model tests: a registry of the built-in plugins,
a small synthetic-data recipe, and a callback that records epoch losses."""

from __future__ import annotations

import seqrec_metrics
import seqrec_pop
import seqrec_synthetic
from seqrec_core import hookimpl
from seqrec_core.plugins import load_plugins
from seqrec_core.recipe import Recipe, load_recipe


def model_registry(monkeypatch, tmp_path, *model_plugins):
    """Synthetic data + POP + metrics + ``model_plugins``; private data cache."""
    monkeypatch.delenv("SEQREC_DISABLE_PLUGINS", raising=False)
    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))
    return load_plugins(
        extra=[seqrec_synthetic, *model_plugins, seqrec_pop, seqrec_metrics],
        use_entry_points=False,
    )


def synthetic_recipe(
    registry,
    tmp_path,
    model: dict,
    epochs: int = 5,
    dataset_seed: int = 0,
    name: str = "t",
    **train,
) -> Recipe:
    """150 users × 40 items of synthetic data, CPU, Recall/NDCG@10, no callbacks."""
    data = {
        "name": name,
        "dataset": {
            "name": "synthetic",
            "n_users": 150,
            "n_items": 40,
            "mean_length": 15,
            "seed": dataset_seed,
        },
        "model": model,
        "train": {"epochs": epochs, "batch_size": 32, "lr": 0.01, "device": "cpu", **train},
        "eval": {"ks": [10], "metrics": ["recall", "ndcg"]},
        "callbacks": [],
        "output": {"runs_dir": str(tmp_path / "runs"), "checkpoints_dir": str(tmp_path / "ckpt")},
    }
    return load_recipe(None, registry, data=data)


class LossRecorder:
    """Callback: the training loss of every epoch, in ``values``."""

    name = "losses"

    def __init__(self):
        self.values: list[float] = []

    @hookimpl
    def on_epoch_end(self, run, event):
        self.values.append(event["train_loss"])


def trained_and_reloaded(recipe, registry, width: int):
    """Train ``recipe`` (seed 0, CPU), reload ``best.safetensors`` for inference and
    return ``(trainer, data, loaded_model, test_histories)`` — the histories are
    the first 20 test users, ``width`` items wide."""
    import torch

    from seqrec_core.data import load_dataset
    from seqrec_core.recommend import load_for_inference
    from seqrec_core.train import Trainer

    data = load_dataset(recipe, registry)
    trainer = Trainer(recipe, registry, data, 0, "t", torch.device("cpu"))
    trainer.fit()
    loaded, *_ = load_for_inference(trainer.best_path, registry)
    seqs = torch.from_numpy(data.padded("test", data.eval_users("test")[:20], width))
    trainer.model.eval()
    return trainer, data, loaded, seqs
