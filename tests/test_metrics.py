"""Ranks and metrics on hand-made score matrices (docs/protocol.md, sections 7–8).

Every expected number is worked out in the comments from the scores, never
copied from the code's output.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import seqrec_metrics
from seqrec_core.evaluate import RankingResult, compute_metrics, rank_targets, seen_mask

NAN = float("nan")
METRICS = {m.name: m for m in seqrec_metrics.METRICS}


def ranks_of(scores, targets, exclude=None) -> list[int]:
    r, _ = rank_targets(
        torch.tensor(scores, dtype=torch.float32),
        torch.tensor(targets),
        None if exclude is None else torch.tensor(exclude),
    )
    return r.tolist()


# ------------------------------------------------------------------------ ranks


def test_rank_counts_candidates_scoring_at_least_the_target():
    # Column 0 is padding: its huge score must never count.
    # items 1..5 score .1 .5 .3 .9 .2; target 3 (.3) is beaten by 2 (.5) and 4 (.9).
    assert ranks_of([[100.0, 0.1, 0.5, 0.3, 0.9, 0.2]], [3]) == [3]
    # The best item has rank 1, the worst rank n_items.
    assert ranks_of([[100.0, 0.1, 0.5, 0.3, 0.9, 0.2]], [4]) == [1]
    assert ranks_of([[100.0, 0.1, 0.5, 0.3, 0.9, 0.2]], [1]) == [5]


def test_ties_with_the_target_count_against_the_model():
    # Items 1, 2, 3 tie at 1.0: target 2 ties with two others → rank 3, not 1 or 2.
    assert ranks_of([[0.0, 1.0, 1.0, 1.0, 0.0, 0.0]], [2]) == [3]
    # Target 1 ties with item 4 only; item 2 is better → rank 3.
    assert ranks_of([[0.0, 0.5, 0.9, 0.1, 0.5]], [1]) == [3]


@pytest.mark.parametrize("n_items", [1, 4, 50])
def test_constant_scorer_gets_the_worst_rank(n_items):
    scores = torch.full((3, n_items + 1), 7.0)
    targets = torch.tensor([1, n_items, (n_items + 1) // 2])
    ranks, _ = rank_targets(scores, targets)
    assert ranks.tolist() == [n_items] * 3


def test_nan_scores_are_the_worst():
    # NaN items never beat a real target: items 1 and 3 are NaN, 2 scores .2 > 0.
    assert ranks_of([[0.0, NAN, 0.2, NAN, -1.0, 0.0]], [5]) == [2]
    # A NaN target ranks behind all 5 candidates (it ties with the other NaN).
    assert ranks_of([[0.0, 0.5, NAN, NAN, 0.1, 0.2]], [2]) == [5]
    # All NaN: like a constant scorer.
    assert ranks_of([[NAN] * 4], [2]) == [3]


def test_bf16_and_float64_scores_are_ranked_like_float32():
    scores = torch.tensor([[0.0, 0.25, 0.5, 0.75, 1.0]])
    for dtype in (torch.bfloat16, torch.float64):
        ranks, _ = rank_targets(scores.to(dtype), torch.tensor([2]))
        assert ranks.tolist() == [3]  # .5 is beaten by .75 and 1.0


def test_filter_seen_removes_history_but_keeps_the_target():
    scores = [[0.0, 0.9, 0.8, 0.7, 0.1]]
    # Unfiltered: target 3 (.7) is beaten by 1 and 2 → rank 3.
    assert ranks_of(scores, [3]) == [3]
    # History {1, 2} removed → only 3 and 4 remain → rank 1.
    assert ranks_of(scores, [3], [[False, True, True, False, False]]) == [1]
    # The target 2 is also in the history (a repeat): it stays a candidate.
    # Candidates {2, 3, 4}; only 2 itself scores >= .8 → rank 1.
    assert ranks_of(scores, [2], [[False, True, True, False, False]]) == [1]
    # Excluding the padding column changes nothing.
    assert ranks_of(scores, [3], [[True, False, False, False, False]]) == [3]


def test_seen_mask_marks_history_items_but_never_padding():
    histories = torch.tensor([[0, 0, 3, 1], [2, 2, 2, 2]])
    mask = seen_mask(histories, n_items=4)
    assert mask.tolist() == [
        [False, True, False, True, False],
        [False, False, True, False, False],
    ]


def test_topk_lists_best_candidates_first():
    scores = torch.tensor([[100.0, 0.1, 0.5, 0.3, 0.9, 0.2], [0.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    _, top = rank_targets(scores, torch.tensor([1, 1]), k=3)
    # Row 0: .9 (4), .5 (2), .3 (3); row 1: items in order 1, 2, 3. Never padding.
    assert top.tolist() == [[4, 2, 3], [1, 2, 3]]
    exclude = torch.tensor([[False, False, False, False, True, False]] * 2)
    _, top = rank_targets(scores, torch.tensor([1, 1]), exclude, k=2)
    assert top.tolist() == [[2, 3], [1, 2]]  # item 4 is not a candidate any more


def test_topk_never_contains_padding_or_excluded_items():
    # Four items, history {1, 2} filtered: only 3 and 4 are candidates, so a
    # top-4 list can hold at most those two. Padding (0) and the excluded items
    # must not appear, or Coverage@K counts items nobody was recommended.
    scores = torch.tensor([[0.0, 4.0, 3.0, 2.0, 1.0]])
    exclude = torch.tensor([[False, True, True, False, False]])
    _, top = rank_targets(scores, torch.tensor([3]), exclude, k=4)
    assert top.tolist() == [[3, 4, 0, 0]], f"top-K holds non-candidates: {top.tolist()}"
    result = RankingResult(ranks=np.array([1]), topk=top.numpy(), n_items=4)
    assert METRICS["coverage"].compute(result, 4) == pytest.approx(2 / 4)


def test_nan_and_minus_inf_are_the_same_worst_score():
    # -inf must stay -inf (torch.nan_to_num would turn it into the lowest finite
    # float, which then beats NaN). Item 1 is NaN, item 3 is -inf: they tie.
    scores = [[9.0, NAN, 0.5, -math.inf, 0.1]]
    assert ranks_of(scores, [3]) == [4]  # ties with item 1, behind 2 and 4
    assert ranks_of(scores, [1]) == [4]


def test_topk_leaves_out_unscorable_items():
    # NaN and -inf scores are "never recommend": such candidates are left out of
    # top-K lists, whose tail is then 0 (padding), and Coverage ignores 0.
    scores = torch.tensor([[9.0, NAN, 0.5, -math.inf, 0.1]])
    _, top = rank_targets(scores, torch.tensor([1]), k=4)
    assert top.tolist() == [[2, 4, 0, 0]]
    result = RankingResult(ranks=np.array([4]), topk=top.numpy(), n_items=4)
    assert METRICS["coverage"].compute(result, 4) == pytest.approx(2 / 4)


# ---------------------------------------------------------------------- metrics

# Ranks from the examples above, one per user: 3, 3, 5, 2, 5 (n_items = 5).
RANKS = [3, 3, 5, 2, 5]


def result_of(ranks, topk=None, n_items=5) -> RankingResult:
    topk = np.zeros((len(ranks), 0), np.int64) if topk is None else np.asarray(topk)
    return RankingResult(ranks=np.asarray(ranks, dtype=np.int64), topk=topk, n_items=n_items)


@pytest.mark.parametrize(
    "k, hits",
    [(1, 0), (2, 1), (3, 3), (4, 3), (5, 5), (10, 5)],  # how many of RANKS are <= k
)
def test_hit_rate_recall_precision(k, hits):
    result = result_of(RANKS)
    assert METRICS["hr"].compute(result, k) == pytest.approx(hits / 5)
    assert METRICS["recall"].compute(result, k) == pytest.approx(hits / 5)
    assert METRICS["precision"].compute(result, k) == pytest.approx(hits / 5 / k)


def test_ndcg_at_k():
    result = result_of(RANKS)
    g2, g3, g5 = 1 / math.log2(3), 1 / math.log2(4), 1 / math.log2(6)  # ranks 2, 3, 5
    assert METRICS["ndcg"].compute(result, 1) == pytest.approx(0.0)
    assert METRICS["ndcg"].compute(result, 2) == pytest.approx(g2 / 5)
    assert METRICS["ndcg"].compute(result, 3) == pytest.approx((2 * g3 + g2) / 5)
    assert METRICS["ndcg"].compute(result, 5) == pytest.approx((2 * g3 + g2 + 2 * g5) / 5)
    # A target at rank 1 scores exactly 1.
    assert METRICS["ndcg"].compute(result_of([1, 1]), 1) == pytest.approx(1.0)


def test_mrr_full_and_at_k():
    result = result_of(RANKS)
    full = (1 / 3 + 1 / 3 + 1 / 5 + 1 / 2 + 1 / 5) / 5
    assert METRICS["mrr"].compute(result, None) == pytest.approx(full)
    assert METRICS["mrr_at_k"].compute(result, 1) == pytest.approx(0.0)
    assert METRICS["mrr_at_k"].compute(result, 2) == pytest.approx((1 / 2) / 5)
    assert METRICS["mrr_at_k"].compute(result, 3) == pytest.approx((1 / 3 + 1 / 3 + 1 / 2) / 5)
    assert METRICS["mrr_at_k"].compute(result, 5) == pytest.approx(full)


def test_coverage_counts_distinct_items_in_all_top_k_lists():
    # Three users' top-3 lists over 5 items.
    result = result_of([1, 1, 1], topk=[[1, 2, 5], [2, 3, 5], [1, 2, 4]])
    cov = METRICS["coverage"]
    assert cov.compute(result, 1) == pytest.approx(2 / 5)  # {1, 2}
    assert cov.compute(result, 2) == pytest.approx(3 / 5)  # {1, 2, 3}
    assert cov.compute(result, 3) == pytest.approx(5 / 5)  # {1, 2, 3, 4, 5}


def test_metrics_of_no_users_are_zero():
    result = result_of([], topk=np.zeros((0, 5), np.int64))
    values = compute_metrics(result, seqrec_metrics.METRICS, [1, 5])
    assert values and all(v == 0.0 for v in values.values())


def test_compute_metrics_labels_and_values_end_to_end():
    # Two users over 4 items, scored once; every metric at K = 1 and 2.
    scores = torch.tensor(
        [
            [0.0, 0.4, 0.3, 0.2, 0.1],  # target 2 → rank 2; top-2 = 1, 2
            [0.0, 0.0, 0.0, 0.0, 1.0],  # target 1 ties with 2, 3, beaten by 4 → rank 4
        ]
    )
    ranks, top = rank_targets(scores, torch.tensor([2, 1]), k=2)
    assert ranks.tolist() == [2, 4]
    result = RankingResult(ranks=ranks.numpy(), topk=top.numpy(), n_items=4)
    got = compute_metrics(result, seqrec_metrics.METRICS, [1, 2])
    names = ["HR", "Recall", "NDCG", "MRR", "Precision", "Coverage"]
    assert set(got) == {f"{n}@{k}" for n in names for k in (1, 2)} | {"MRR"}
    assert got["HR@1"] == 0.0 and got["Recall@1"] == 0.0
    assert got["HR@2"] == pytest.approx(0.5) and got["Recall@2"] == pytest.approx(0.5)
    assert got["NDCG@2"] == pytest.approx((1 / math.log2(3)) / 2)
    assert got["MRR@2"] == pytest.approx((1 / 2) / 2)
    assert got["MRR"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert got["Precision@2"] == pytest.approx(0.5 / 2)
    # Row 0's top-1 is item 1, row 1's is item 4; top-2 adds item 2 and one of {1, 2, 3}.
    assert got["Coverage@1"] == pytest.approx(2 / 4)
    assert got["Coverage@2"] in (pytest.approx(3 / 4), pytest.approx(4 / 4))


def test_registered_metric_names_match_the_protocol():
    assert {m.name for m in seqrec_metrics.METRICS} == {
        "hr",
        "recall",
        "ndcg",
        "mrr_at_k",
        "mrr",
        "precision",
        "coverage",
    }
    assert not METRICS["mrr"].at_k
    assert all(m.at_k for m in seqrec_metrics.METRICS if m.name != "mrr")
