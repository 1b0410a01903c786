"""The ``synthetic`` dataset plugin: deterministic, sized as asked, and with
structure (item transitions, popularity skew) that models can learn."""

from __future__ import annotations

import re
import time

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

import seqrec_synthetic
from seqrec_synthetic import Synthetic


def load(**options):
    source = Synthetic()
    return source.load(source.Options(**options))


def next_item_accuracy(interactions: pd.DataFrame) -> tuple[float, float]:
    """Top-1 next-item accuracy on odd users of (a) the most frequent follower of
    the previous item and (b) the most popular item, both fit on even users."""
    user = interactions["user"].to_numpy()
    item = interactions["item"].to_numpy()
    same = user[1:] == user[:-1]
    prev, nxt, owner = item[:-1][same], item[1:][same], user[1:][same]
    fit = owner % 2 == 0
    pairs = pd.DataFrame({"prev": prev[fit], "next": nxt[fit]}).value_counts().reset_index()
    best = pairs.drop_duplicates("prev").set_index("prev")["next"]  # value_counts sorts desc
    bigram = float(np.mean(best.reindex(prev[~fit]).to_numpy() == nxt[~fit]))
    most_popular = pd.Series(nxt[fit]).value_counts().index[0]
    popularity = float(np.mean(nxt[~fit] == most_popular))
    return bigram, popularity


def top_decile_share(interactions: pd.DataFrame, n_items: int) -> float:
    counts = np.sort(np.bincount(interactions["item"], minlength=n_items + 1)[1:])[::-1]
    return counts[: n_items // 10].sum() / counts.sum()


def test_same_options_give_identical_data():
    a, b = load(n_users=200, seed=3), load(n_users=200, seed=3)
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    pd.testing.assert_frame_equal(a.items, b.items)
    pd.testing.assert_frame_equal(a.users, b.users)


def test_seed_changes_data():
    a, b = load(n_users=200, seed=0), load(n_users=200, seed=1)
    assert not a.interactions.equals(b.interactions)
    assert a.items["title"].tolist() != b.items["title"].tolist()


def test_fingerprint_follows_options():
    source = Synthetic()
    opts = source.Options(seed=1)
    assert source.fingerprint(opts) == source.fingerprint(source.Options(seed=1))
    assert source.fingerprint(opts) != source.fingerprint(source.Options(seed=2))
    assert source.fingerprint(opts) != source.fingerprint(source.Options(seed=1, n_items=600))


def test_sizes_are_honoured():
    raw = load(n_users=300, n_items=120, n_clusters=6, mean_length=25, min_length=4)
    df = raw.interactions
    assert list(df.columns) == ["user", "item", "timestamp", "rating"]
    assert sorted(df["user"].unique()) == list(range(1, 301))
    assert df["item"].between(1, 120).all()
    assert df["item"].nunique() > 100  # nearly the whole catalogue is used
    lengths = df.groupby("user").size()
    assert lengths.min() >= 4
    assert 25 * 0.85 < lengths.mean() < 25 * 1.15
    assert lengths.max() > 2 * lengths.median()  # skewed, not constant
    assert list(raw.items.index) == list(range(1, 121))
    assert raw.items["genres"].nunique() == 6
    assert list(raw.users.index) == list(range(1, 301))


def test_min_length_equal_to_mean_gives_fixed_lengths():
    df = load(n_users=50, mean_length=7, min_length=7).interactions
    assert set(df.groupby("user").size()) == {7}


def test_ids_are_ints_and_timestamps_increase_per_user():
    df = load(n_users=100).interactions
    assert df["user"].dtype.kind == "i" and df["item"].dtype.kind == "i"
    ts = df["timestamp"].to_numpy()
    same_user = df["user"].to_numpy()[1:] == df["user"].to_numpy()[:-1]
    assert (np.diff(ts)[same_user] > 0).all()
    assert df["rating"].between(1, 5).all() and df["rating"].nunique() >= 4


def test_titles_years_and_genres():
    items = load(n_items=300).items
    assert items["title"].is_unique
    for title, year in zip(items["title"], items["year"], strict=True):
        match = re.fullmatch(r"[A-Z][A-Za-z ]+ \((\d{4})\)", title)
        assert match, title
        assert int(match.group(1)) == year
    assert (items["title"].str.startswith("The ")).any()
    assert str(items["year"].dtype) == "Int64"
    assert items["genres"].str.len().gt(0).all()


def test_transitions_are_learnable():
    bigram, popularity = next_item_accuracy(load(n_users=1000).interactions)
    assert bigram > 0.25
    assert bigram > 4 * popularity


def test_transition_prob_controls_the_sequential_signal():
    with_transitions, _ = next_item_accuracy(load(n_users=600, transition_prob=0.8).interactions)
    without, _ = next_item_accuracy(load(n_users=600, transition_prob=0.0).interactions)
    # Without transitions the previous item still reveals the user's cluster,
    # whose most popular item is a fair guess; transitions add far more.
    assert with_transitions > without + 0.25


def test_popularity_is_skewed():
    skewed = top_decile_share(load(n_users=1000).interactions, 500)
    flat = top_decile_share(load(n_users=1000, popularity_exponent=0.0).interactions, 500)
    assert skewed > 0.4  # a uniform catalogue would give 0.1
    assert flat < skewed - 0.15


def test_large_dataset_is_fast():
    start = time.perf_counter()
    raw = load(n_users=6000, n_items=3000, mean_length=200)
    elapsed = time.perf_counter() - start
    assert len(raw.interactions) > 1_000_000
    assert elapsed < 5.0, f"generation took {elapsed:.1f}s"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"n_clusters": 50, "n_items": 20}, "n_clusters"),
        ({"mean_length": 3, "min_length": 5}, "mean_length"),
        ({"transition_prob": 1.5}, "transition_prob"),
        ({"n_user": 10}, "n_user"),
    ],
)
def test_invalid_options_are_rejected(options, message):
    with pytest.raises(ValidationError, match=message):
        Synthetic.Options(**options)


def test_build_sequences_orders_by_time_and_keeps_titles(raw_to_sequences):
    raw = load(n_users=100, n_items=80)
    data = raw_to_sequences("synthetic", raw)
    assert data.n_users == 100
    assert data.n_items == raw.interactions["item"].nunique()
    first_user = raw.interactions[raw.interactions["user"] == 1]
    seq = data.items[data.offsets[0] : data.offsets[1]]
    assert data.item_map.to_raw(seq).tolist() == first_user["item"].tolist()
    raw_id = int(data.item_map.to_raw(1))
    assert data.titles([1]) == [raw.items.loc[raw_id, "title"]]


def test_registered_and_cached_through_the_pipeline(load_via_pipeline):
    options = Synthetic.Options(n_users=50, n_items=40, n_clusters=4)
    first = load_via_pipeline(seqrec_synthetic, "synthetic", options)
    again = load_via_pipeline(seqrec_synthetic, "synthetic", options)  # from the cache
    np.testing.assert_array_equal(first.items, again.items)
    assert first.titles([1, 2]) == again.titles([1, 2])
    assert first.stats()["users"] == 50
