"""Popularity buckets: assignment on hand-made counts, per-bucket metrics and
list shares, and the analysis of a model on real (synthetic) data."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import model_registry, synthetic_recipe

import seqrec_metrics
from seqrec_core.data import load_dataset
from seqrec_core.errors import SeqrecError
from seqrec_core.evaluate import RankingResult, evaluate
from seqrec_core.plugins import load_plugins
from seqrec_core.research.buckets import (
    analyze_buckets,
    bucket_report,
    list_shares,
    plot_buckets,
    popularity_buckets,
)
from seqrec_core.research.reports import PNG_MAGIC

HEAD, MID, TAIL = 0, 1, 2


def test_buckets_of_a_hand_made_count_vector():
    #          pad  1  2  3  4  5  6  7  8  9  10
    counts = [0, 5, 1, 9, 3, 3, 0, 7, 2, 8, 4]
    b = popularity_buckets(np.array(counts), (0.2, 0.5))
    # By count: 3 (9), 9 (8) | 7 (7), 1 (5), 10 (4) | 4, 5 (3), 8 (2), 2 (1), 6 (0)
    assert b[0] == -1
    assert sorted(np.flatnonzero(b == HEAD)) == [3, 9]
    assert sorted(np.flatnonzero(b == MID)) == [1, 7, 10]
    assert sorted(np.flatnonzero(b == TAIL)) == [2, 4, 5, 6, 8]


def test_ties_split_by_item_id_and_other_cuts():
    b = popularity_buckets(np.array([0, 3, 3, 3, 3, 3]), (0.2, 0.5))
    assert b[1:].tolist() == [HEAD, MID, MID, TAIL, TAIL]
    b = popularity_buckets(np.array([0, 1, 2, 3, 4]), (0.5, 1.0))  # no tail
    assert b[1:].tolist() == [MID, MID, HEAD, HEAD]


@pytest.mark.parametrize("cuts", [(0.5, 0.2), (0.0, 0.5), (0.2, 1.5), (0.2,)])
def test_bad_cuts(cuts):
    with pytest.raises(SeqrecError, match="cut points"):
        popularity_buckets(np.array([0, 1, 2]), cuts)


@pytest.fixture
def metrics():
    registry = load_plugins(extra=[seqrec_metrics], use_entry_points=False)
    return [registry.get("metrics", m) for m in ("hr", "ndcg", "coverage")]


def test_metrics_per_bucket_of_the_target(metrics):
    buckets = np.array([-1, HEAD, HEAD, MID, TAIL, TAIL])  # 5 items
    result = RankingResult(
        ranks=np.array([1, 3, 1, 2, 5]),
        topk=np.array([[1, 2], [1, 3], [4, 5], [1, 0], [2, 1]]),
        n_items=5,
        targets=np.array([1, 2, 3, 4, 5]),  # head, head, mid, tail, tail
        users=np.arange(5),
    )
    report = bucket_report(result, buckets, metrics, ks=[1, 2], k=2)
    assert report.users == {"head": 2, "mid": 1, "tail": 2}
    assert report.sizes == {"head": 2, "mid": 1, "tail": 2}
    assert report.metrics["head"]["HR@1"] == 0.5
    assert report.metrics["mid"]["HR@1"] == 1.0
    assert report.metrics["tail"]["HR@2"] == 0.5
    assert report.metrics["overall"]["HR@2"] == pytest.approx(3 / 5)
    # 9 filled slots: items 1,2,1,3,4,5,1,2,1 → head 6, mid 1, tail 2
    assert report.lists["head share@2"] == pytest.approx(6 / 9)
    assert report.lists["tail share@2"] == pytest.approx(2 / 9)
    assert report.lists["coverage@2"] == 1.0
    assert report.lists["tail coverage@2"] == 1.0
    flat = report.flat()
    assert flat["HR@1[mid]"] == 1.0 and flat["users[tail]"] == 2.0
    assert [r["bucket"] for r in report.rows()] == ["overall", "head", "mid", "tail"]


def test_list_shares_ignore_empty_slots():
    buckets = np.array([-1, HEAD, MID, TAIL, TAIL])
    shares = list_shares(np.array([[3, 0, 0], [3, 4, 0]]), buckets, 3)
    assert shares["tail share@3"] == 1.0
    assert shares["coverage@3"] == 0.5
    assert shares["tail coverage@3"] == 1.0
    assert shares["head coverage@3"] == 0.0


def test_analyze_buckets_agrees_with_evaluate(monkeypatch, tmp_path):
    registry = model_registry(monkeypatch, tmp_path)  # includes POP
    recipe = synthetic_recipe(registry, tmp_path, {"name": "pop"}, epochs=0)
    data = load_dataset(recipe, registry)
    model = registry.get("models", "pop")(recipe.model_options, data.n_items)
    model.prepare(data)
    metrics = [registry.get("metrics", m) for m in ("hr", "ndcg")]
    report = analyze_buckets(model, data, metrics, ks=[10])
    overall = evaluate(model, data, "test", metrics, ks=[10])
    assert report.metrics["overall"] == pytest.approx(overall)
    users = report.users
    assert sum(users.values()) == len(data.eval_users("test"))
    weighted = sum(report.metrics[b]["HR@10"] * n for b, n in users.items()) / sum(users.values())
    assert weighted == pytest.approx(overall["HR@10"])
    # POP recommends the same head items to everyone.
    assert report.lists["head share@10"] > report.lists["tail share@10"]
    png = plot_buckets(report, "NDCG@10", tmp_path / "b.png")
    assert png.read_bytes()[:8] == PNG_MAGIC
