"""`seqrec analyze seen`: history items in the unfiltered top-K, on hand-made scores."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import model_registry, synthetic_recipe
from pydantic import BaseModel

import seqrec_core.cli
from seqrec_core.data import build_sequences, load_dataset
from seqrec_core.model import Recommender
from seqrec_core.research.seen import seen_in_top, seen_report
from seqrec_core.run import run_recipe


class _Options(BaseModel):
    max_len: int | None = None


class RepeatLast(Recommender):
    """Scores the user's last item first, then items by ascending id."""

    name = "repeat"
    Options = _Options
    objective = "none"

    def predict(self, seqs: torch.Tensor) -> torch.Tensor:
        scores = -torch.arange(self.n_items + 1, dtype=torch.float32).repeat(len(seqs), 1)
        scores.scatter_(1, seqs[:, -1:], 10.0)
        return scores


class Fresh(Recommender):
    """Scores every history item below every other item, ties broken by id."""

    name = "fresh"
    Options = _Options
    objective = "none"

    def predict(self, seqs: torch.Tensor) -> torch.Tensor:
        scores = -torch.arange(self.n_items + 1, dtype=torch.float32).repeat(len(seqs), 1)
        return scores.scatter_add_(1, seqs, torch.full(seqs.shape, -1000.0) * (seqs != 0))


@pytest.fixture
def data():
    # Test histories: a = [1, 2, 3, 4] → 5, b = [3, 1] → 6, d = [6, 5, 4] → 3 (c too short).
    seqs = {"a": [1, 2, 3, 4, 5], "b": [3, 1, 6], "c": [2, 6], "d": [6, 5, 4, 3]}
    rows = [(u, item, t) for u, items in seqs.items() for t, item in enumerate(items)]
    return build_sequences("toy", pd.DataFrame(rows, columns=["user", "item", "timestamp"]))


def test_seen_in_top_by_hand():
    topk = np.array([[1, 5, 0], [2, 3, 4]])
    hist = np.array([[0, 1, 2], [3, 4, 4]])
    assert seen_in_top(topk, hist).tolist() == [[True, False, False], [False, True, True]]


def test_a_model_repeating_the_last_item(data):
    report = seen_report(RepeatLast(_Options(), data.n_items), data, "test", ks=(1, 3))
    # top-3: a [4, 1, 2] all seen; b [1, 2, 3] two seen; d [4, 1, 2] one seen.
    assert report["users"] == 3
    assert report["seen share@3"] == pytest.approx((3 + 2 + 1) / 9)
    assert report["top-1 seen"] == report["seen share@1"] == 1.0
    assert report["last item@3"] == 1.0
    assert report["target seen"] == 0.0


def test_a_model_avoiding_the_history(data):
    report = seen_report(Fresh(_Options(), data.n_items), data, "test", ks=(1, 3))
    # a has only 5 and 6 unseen, so its top-3 is [5, 6, 1]; b and d have three unseen items.
    assert report["seen share@3"] == pytest.approx(1 / 9)
    assert report["top-1 seen"] == 0.0 and report["last item@3"] == 0.0


def test_cli_on_a_checkpoint(monkeypatch, tmp_path, capsys):
    registry = model_registry(monkeypatch, tmp_path)
    recipe = synthetic_recipe(registry, tmp_path, {"name": "pop"}, epochs=0)
    run_recipe(recipe, registry, samples=0)
    ckpt = tmp_path / "ckpt" / recipe.name / "best.safetensors"
    monkeypatch.setattr(seqrec_core.cli, "load_plugins", lambda **_: registry)
    out = tmp_path / "seen"
    assert seqrec_core.cli.main(["analyze", "seen", str(ckpt), "--out", str(out), "-k", "5"]) == 0
    assert "history items in the unfiltered top-5" in capsys.readouterr().out
    (row,) = csv.DictReader((out / "seen.csv").open())
    data = load_dataset(recipe, registry)
    model = registry.get("models", "pop")(recipe.model_options, data.n_items)
    model.prepare(data)
    direct = seen_report(model, data, "test", ks=(1, 5))
    assert float(row["seen share@5"]) == pytest.approx(direct["seen share@5"])
    assert 0.0 < direct["seen share@5"] < 1.0  # synthetic users revisit items, POP ignores that
