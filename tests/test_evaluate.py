"""Full-ranking evaluation of a split with a fake model whose scores are known
(docs/protocol.md, sections 5–8)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import BaseModel

import seqrec_metrics
from seqrec_core.data import build_sequences
from seqrec_core.evaluate import evaluate, rank_split
from seqrec_core.model import Recommender


class NextOptions(BaseModel):
    max_len: int | None = None


class NextItem(Recommender):
    """Predicts "the item after the last one", cyclically over items 1..6.

    With last item L, item i scores -((i - L - 1) mod 6): L+1 scores 0 (best),
    L+2 scores -1, …, L itself -5. Every score in a row is distinct, and the
    scores depend on the last item only, so padding and truncation do not
    change them. Records every batch it is given.
    """

    name = "next"
    Options = NextOptions
    objective = "none"

    def __init__(self, options: NextOptions, n_items: int):
        super().__init__(options, n_items)
        self.seen: list[torch.Tensor] = []

    def predict(self, seqs: torch.Tensor) -> torch.Tensor:
        self.seen.append(seqs.clone())
        last = seqs[:, -1:]
        items = torch.arange(self.n_items + 1)[None, :]
        scores = -((items - last - 1) % self.n_items).float()
        scores[:, 0] = 123.0  # padding column: must be ignored
        return scores


@pytest.fixture
def data():
    rows = [
        ("a", 1, 1),
        ("b", 3, 1),
        ("a", 2, 2),
        ("c", 2, 1),
        ("a", 3, 3),
        ("d", 6, 1),
        ("b", 1, 2),
        ("a", 4, 4),
        ("d", 5, 2),
        ("c", 6, 2),
        ("d", 4, 3),
        ("b", 6, 3),
        ("a", 5, 5),
        ("d", 3, 4),
    ]
    # a = [1, 2, 3, 4, 5], b = [3, 1, 6], c = [2, 6] (too short), d = [6, 5, 4, 3].
    # Raw items 1..6 map to internal 1..6; users a..d to rows 0..3.
    return build_sequences("toy", pd.DataFrame(rows, columns=["user", "item", "timestamp"]))


def model(max_len=None, n_items=6) -> NextItem:
    return NextItem(NextOptions(max_len=max_len), n_items)


# Worked out from NextItem's rule. Valid: input = training part; test: all but last.
#   user  valid last→target  U rank  F (minus history)   test last→target  U  F
#   a     3 → 4              1       1                   4 → 5             1  1
#   b     3 → 1              4       4 (3 is worst)      1 → 6             5  4 ({3,1} gone)
#   d     5 → 4              5       4 ({6,5} gone)      4 → 3             5  3 ({6,5,4} gone)
EXPECTED = {
    ("valid", False): [1, 4, 5],
    ("valid", True): [1, 4, 4],
    ("test", False): [1, 5, 5],
    ("test", True): [1, 4, 3],
}


@pytest.mark.parametrize("split, filter_seen", list(EXPECTED))
def test_ranks_match_hand_computation(data, split, filter_seen):
    result = rank_split(model(), data, split, k=3, filter_seen=filter_seen)
    assert result.users.tolist() == [0, 1, 3]  # c has 2 interactions: not evaluated
    assert result.ranks.tolist() == EXPECTED[split, filter_seen]
    assert result.n_items == 6
    want_targets = {"valid": [4, 1, 4], "test": [5, 6, 3]}[split]
    assert result.targets.tolist() == want_targets


def test_top_k_lists(data):
    result = rank_split(model(), data, "test", k=3)
    # last items a: 4, b: 1, d: 4 → best L+1, L+2, L+3 (cyclic).
    assert result.topk.tolist() == [[5, 6, 1], [2, 3, 4], [5, 6, 1]]
    result = rank_split(model(), data, "test", k=3, filter_seen=True)
    # a saw 1..4 → 5, 6 only (then nothing real); d saw 6, 5, 4 → 1, 2, 3.
    assert result.topk[0, :2].tolist() == [5, 6]
    assert result.topk[1].tolist() == [2, 4, 5]  # b saw 3, 1
    assert result.topk[2].tolist() == [1, 2, 3]


def test_short_users_are_never_scored(data):
    m = model()
    rank_split(m, data, "valid", k=1, batch_size=1)
    # Three batches of one: a, b and d. c's history [2, 6] never appears.
    assert len(m.seen) == 3
    last_items = [int(s[0, -1]) for s in m.seen]
    assert last_items == [3, 3, 5]  # valid inputs a [1,2,3], b [3], d [6,5]


@pytest.mark.parametrize("filter_seen", [False, True])
@pytest.mark.parametrize("max_len", [None, 1, 2, 50])
def test_batch_size_does_not_change_results(data, filter_seen, max_len):
    for split in ("valid", "test"):
        one = rank_split(model(max_len), data, split, 3, filter_seen, batch_size=1000)
        each = rank_split(model(max_len), data, split, 3, filter_seen, batch_size=1)
        two = rank_split(model(max_len), data, split, 3, filter_seen, batch_size=2)
        for other in (each, two):
            np.testing.assert_array_equal(other.ranks, one.ranks)
            np.testing.assert_array_equal(other.topk, one.topk)
            np.testing.assert_array_equal(other.users, one.users)
        assert one.ranks.tolist() == EXPECTED[split, filter_seen]


def test_model_sees_its_max_len_most_recent_items(data):
    m = model(max_len=2)
    rank_split(m, data, "test", k=1)
    # test inputs a [1,2,3,4], b [3,1], d [6,5,4] → last two, left-padded.
    assert m.seen[0].tolist() == [[3, 4], [3, 1], [5, 4]]
    m = model(max_len=4)
    rank_split(m, data, "valid", k=1)
    assert m.seen[0].tolist() == [[0, 1, 2, 3], [0, 0, 0, 3], [0, 0, 6, 5]]


def test_filter_seen_uses_the_whole_history_not_just_max_len(data):
    # With max_len=1 the model reads only the last item, but d's test history
    # {6, 5, 4} is still removed: rank 3, not 5.
    m = model(max_len=1)
    result = rank_split(m, data, "test", k=3, filter_seen=True)
    assert [s.shape[1] for s in m.seen] == [1]
    assert result.ranks.tolist() == EXPECTED["test", True]


def test_rank_split_restores_training_mode(data):
    m = model()
    m.train()
    rank_split(m, data, "valid", k=1)
    assert m.training
    m.eval()
    rank_split(m, data, "valid", k=1)
    assert not m.training


def test_progress_reports_users_done(data):
    calls = []
    rank_split(model(), data, "valid", 1, batch_size=2, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(2, 3), (3, 3)]


def test_evaluate_returns_metrics_for_every_k(data):
    got = evaluate(
        model(), data, "test", seqrec_metrics.METRICS, ks=(1, 5), filter_seen=False, batch_size=2
    )
    ranks = EXPECTED["test", False]  # 1, 5, 5
    assert got["HR@1"] == pytest.approx(1 / 3)
    assert got["HR@5"] == pytest.approx(1.0)
    assert got["NDCG@5"] == pytest.approx((1 + 2 / math.log2(6)) / 3)
    assert got["MRR"] == pytest.approx(sum(1 / r for r in ranks) / 3)
    assert got["MRR@1"] == pytest.approx(1 / 3)
    assert got["Precision@5"] == pytest.approx(1 / 5)
    # top-1 lists: a → 5, b → 2, d → 5  ⇒ {2, 5} of 6 items; top-5 covers all 6.
    assert got["Coverage@1"] == pytest.approx(2 / 6)
    assert got["Coverage@5"] == pytest.approx(6 / 6)


def test_an_explicit_user_subset(data):
    result = rank_split(model(), data, "test", k=1, users=np.array([3]))
    assert result.users.tolist() == [3]
    assert result.ranks.tolist() == [5]


# ------------------------------------------------------------ chunked = unchunked


class TieOptions(BaseModel):
    max_len: int | None = None


class TieScorer(Recommender):
    """Scores with many ties, some NaN and -inf, from the last item ``L`` and the
    history length ``n`` (so padding never matters): item ``i`` scores
    ``(i * (L + n)) mod 5``, NaN where ``(i + L) mod 11 == 0`` and ``-inf`` where
    ``(i + n) mod 13 == 0``. Small integers: exact in any batch shape."""

    name = "ties"
    Options = TieOptions
    objective = "none"

    def __init__(self, options: TieOptions, n_items: int):
        super().__init__(options, n_items)
        self.batches: list[int] = []

    def predict(self, seqs: torch.Tensor) -> torch.Tensor:
        self.batches.append(seqs.shape[0])
        last = seqs[:, -1:]
        n = (seqs != 0).sum(1, keepdim=True)
        items = torch.arange(self.n_items + 1)[None, :]
        scores = ((items * (last + n)) % 5).float()
        scores = scores.masked_fill((items + last) % 11 == 0, torch.nan)
        return scores.masked_fill((items + n) % 13 == 0, -torch.inf)


@pytest.fixture(scope="module")
def random_data():
    rng = np.random.default_rng(7)
    rows = []
    for user in range(40):
        for t in range(int(rng.integers(1, 25))):  # some users too short to evaluate
            rows.append((user, int(rng.integers(1, 31)), t))  # repeats included
    return build_sequences("random", pd.DataFrame(rows, columns=["user", "item", "timestamp"]))


def reference_ranks(data, split, scorer, filter_seen):
    """docs/protocol.md section 7, one user at a time in numpy."""
    users = data.eval_users(split)
    start, end = data.history_bounds(split, users)
    out = []
    for s, e, target in zip(start, end, data.targets(split, users), strict=True):
        history = data.items[s:e]
        window = history if scorer.max_len is None else history[-scorer.max_len :]
        scores = scorer.predict(torch.from_numpy(window[None, :]))[0].numpy()
        scores = np.where(np.isnan(scores), -np.inf, scores)
        candidate = np.ones(data.n_items + 1, bool)
        candidate[0] = False
        if filter_seen:
            candidate[history] = False
        candidate[target] = True
        out.append((int((scores[candidate] >= scores[target]).sum()), scores, candidate))
    return out


@pytest.mark.parametrize("max_len", [None, 3])
@pytest.mark.parametrize("filter_seen", [False, True])
@pytest.mark.parametrize("split", ["valid", "test"])
def test_chunked_equals_unchunked_with_ties(random_data, split, filter_seen, max_len):
    data = random_data
    n_users = len(data.eval_users(split))
    whole = rank_split(
        TieScorer(TieOptions(max_len=max_len), data.n_items),
        data,
        split,
        8,
        filter_seen,
        batch_size=n_users,
        fast=False,
    )
    ref = reference_ranks(
        data, split, TieScorer(TieOptions(max_len=max_len), data.n_items), filter_seen
    )
    assert whole.ranks.tolist() == [r for r, _, _ in ref]
    for top, (_, scores, candidate) in zip(whole.topk, ref, strict=True):
        real = np.sort(scores[candidate & (scores > -np.inf)])[::-1][:8]
        assert np.array_equal(scores[top[: len(real)]], real)  # the k best (ties in any order)
        assert candidate[top[: len(real)]].all() and (top[len(real) :] == 0).all()
    for chunk in (1, 7, n_users, None):
        for fast in (True, False):
            m = TieScorer(TieOptions(max_len=max_len), data.n_items)
            got = rank_split(m, data, split, 8, filter_seen, batch_size=chunk, fast=fast)
            np.testing.assert_array_equal(got.ranks, whole.ranks)
            np.testing.assert_array_equal(got.topk, whole.topk)
            np.testing.assert_array_equal(got.users, whole.users)
            if chunk:
                assert m.batches == [min(chunk, n_users - i) for i in range(0, n_users, chunk)]


def test_default_chunk_keeps_scores_within_the_budget(random_data):
    data = random_data
    n_users = len(data.eval_users("test"))
    m = TieScorer(TieOptions(), data.n_items)
    budget = 6 * (data.n_items + 1) + 5
    whole = rank_split(m, data, "test", 5, True, batch_size=n_users)
    m.batches.clear()
    got = rank_split(m, data, "test", 5, True, score_budget=budget)
    assert m.batches == [min(6, n_users - i) for i in range(0, n_users, 6)]
    np.testing.assert_array_equal(got.ranks, whole.ranks)
    np.testing.assert_array_equal(got.topk, whole.topk)


def test_eval_batch_size_rule():
    from types import SimpleNamespace

    from seqrec_core.evaluate import (
        CPU_BATCH_SIZE,
        CUDA_BATCH_SIZE,
        DEFAULT_SCORE_BUDGET,
        eval_batch_size,
    )

    plain = SimpleNamespace(max_len=200)
    assert eval_batch_size(plain, 27_000, "cuda") == DEFAULT_SCORE_BUDGET // 27_001
    assert eval_batch_size(plain, 27_000, "cpu") == CPU_BATCH_SIZE
    assert eval_batch_size(plain, 27_000, "cpu", 10 * 27_001) == 10
    assert eval_batch_size(plain, 10**12, "cuda") == 1  # never zero
    assert eval_batch_size(plain, 100, "cuda") == CUDA_BATCH_SIZE  # kernel grid limits
    # A small catalogue: one [max_len, dim] activation per user bounds the chunk instead.
    emb = SimpleNamespace(max_len=200, item_emb=torch.nn.Embedding(101, 64))
    assert eval_batch_size(emb, 100, "cuda", 2**20) == 2**20 // (200 * 64)


def test_an_unsorted_user_subset_fast_and_plain(random_data):
    users = random_data.eval_users("test")[::-1][:9]
    for filter_seen in (False, True):
        a = rank_split(
            TieScorer(TieOptions(), random_data.n_items),
            random_data,
            "test",
            4,
            filter_seen,
            2,
            users=users,
        )
        b = rank_split(
            TieScorer(TieOptions(), random_data.n_items),
            random_data,
            "test",
            4,
            filter_seen,
            4,
            users=users,
            fast=False,
        )
        assert a.users.tolist() == users.tolist()
        np.testing.assert_array_equal(a.ranks, b.ranks)
        np.testing.assert_array_equal(a.topk, b.topk)


def test_amp_is_ignored_off_cuda(data):
    got = rank_split(model(), data, "test", 3, amp=True)
    assert got.ranks.tolist() == EXPECTED["test", False]


def test_recipe_speed_options_reach_evaluate(data):
    from seqrec_core.recipe import EvalSection

    section = EvalSection(fast=False, score_budget=2 * 7, amp=True)
    m = model()
    got = evaluate(m, data, "test", seqrec_metrics.METRICS, ks=(1,), **section.speed())
    assert [s.shape[0] for s in m.seen] == [2, 1]  # budget of 2 users x 7 columns
    assert got["HR@1"] == pytest.approx(1 / 3)
    assert EvalSection().speed() == {"fast": True, "score_budget": 2**28, "amp": False}


def test_scores_stay_fp32_under_autocast():
    # bf16 scores would round many distinct fp32 scores onto one (ties count
    # against the model); predict scores outside autocast.
    import seqrec_sasrec

    torch.manual_seed(0)
    net = seqrec_sasrec.SASRec(seqrec_sasrec.SASRecOptions(dim=16, max_len=4), 500).eval()
    hidden = torch.randn(3, 4, 16)
    net.encode = lambda seqs: hidden
    seqs = torch.ones(3, 4, dtype=torch.long)
    with torch.no_grad():
        plain = net.predict(seqs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = net.predict(seqs)
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, plain, rtol=0, atol=0)
    assert torch.isneginf(auto[:, 0]).all()
