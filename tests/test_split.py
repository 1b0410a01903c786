"""Filtering, id remapping, chronological order, leave-one-out split, padding and
the processed-data cache (docs/protocol.md, sections 1–6 and 11)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seqrec_core.data import IdMap, SequenceData, build_sequences, filter_interactions, kcore
from seqrec_core.data.core import validate_interactions
from seqrec_core.data.pipeline import load_sequences, save_sequences
from seqrec_core.errors import DataError


def table(rows, columns=("user", "item", "timestamp")) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(columns))


def sequences(data: SequenceData) -> dict:
    """Raw user id → list of internal item ids, in the stored order."""
    return {
        data.user_map.to_raw([u])[0].item(): data.items[
            data.offsets[u] : data.offsets[u + 1]
        ].tolist()
        for u in range(data.n_users)
    }


@pytest.fixture
def example(worked_example_rows) -> SequenceData:
    """docs/protocol.md, section 11."""
    return build_sequences("example", table(worked_example_rows))


# ------------------------------------------------------------ ids and ordering


def test_ids_follow_sorted_raw_ids_and_order_is_chronological(example):
    assert example.user_map.raw.tolist() == ["alice", "bob", "carol"]
    assert example.item_map.raw.tolist() == [10, 20, 30, 40]
    assert example.n_users == 3 and example.n_items == 4
    # alice's 30 and 20 share t=5; 30 is earlier in the file so it comes first.
    assert sequences(example) == {"alice": [1, 3, 2, 4], "bob": [2, 1, 3], "carol": [2, 4]}
    assert example.offsets.tolist() == [0, 4, 7, 9]


def test_ties_keep_file_order_whatever_the_file_order_is():
    rows = [("u", "x", 1), ("u", "z", 7), ("u", "y", 7), ("u", "w", 7)]
    data = build_sequences("t", table(rows))
    # items: w→1, x→2, y→3, z→4; at t=7 the file says z, y, w.
    assert sequences(data) == {"u": [2, 4, 3, 1]}
    data = build_sequences("t", table(reversed(rows)))
    assert sequences(data) == {"u": [2, 1, 3, 4]}  # file now says w, y, z


def test_without_timestamps_file_order_is_time_order():
    df = table([("b", 5), ("a", 9), ("b", 1), ("a", 9), ("b", 3)], ("user", "item"))
    data = build_sequences("t", df)
    # items 1→1, 3→2, 5→3, 9→4; repeats are kept.
    assert sequences(data) == {"a": [4, 4], "b": [3, 1, 2]}


def test_filtered_table_keeps_file_order_for_ties():
    df = table([("u", 1, 2), ("u", 2, 1), ("u", 3, 2), ("v", 4, 0)])
    df = df[df["item"] != 4]  # a filtered frame has a gappy index
    assert sequences(build_sequences("t", df)) == {"u": [2, 1, 3]}


def test_string_ids_sort_as_strings_and_whole_floats_become_ints():
    data = build_sequences("t", table([("u", "9", 1), ("u", "10", 2), ("u", "b", 3)]))
    assert data.item_map.raw.tolist() == ["10", "9", "b"]
    assert sequences(data) == {"u": [2, 1, 3]}
    data = build_sequences("t", table([(7.0, 3.0, 1), (7.0, 1.0, 2)]))
    assert data.item_map.raw.tolist() == [1, 3]
    assert data.user_map.raw.tolist() == [7]
    assert data.item_map.raw.dtype.kind == "i"


# ------------------------------------------------------------ leave-one-out


def test_leave_one_out_targets_and_histories(example):
    # Users with >= 3 interactions are evaluated: alice (0) and bob (1), not carol.
    for split in ("valid", "test"):
        assert example.eval_users(split).tolist() == [0, 1]
    assert example.targets("valid").tolist() == [2, 1]
    assert example.targets("test").tolist() == [4, 3]

    def history(split, user):
        start, end = example.history_bounds(split, np.array([user]))
        return example.items[start[0] : end[0]].tolist()

    assert [history("train", u) for u in range(3)] == [[1, 3], [2], [2, 4]]
    assert [history("valid", u) for u in range(2)] == [[1, 3], [2]]
    # The test input includes the validation target.
    assert [history("test", u) for u in range(2)] == [[1, 3, 2], [2, 1]]
    assert example.train_lengths.tolist() == [2, 1, 2]


def test_short_users_are_training_only():
    df = table([("one", 1, 1), ("two", 1, 1), ("two", 2, 2), ("three", 3, 1)])
    df = pd.concat([df, table([("three", 2, 2), ("three", 1, 3)])], ignore_index=True)
    data = build_sequences("t", df)
    # users sorted: one, three, two → only 'three' (row 1) has >= 3.
    assert data.eval_users("valid").tolist() == [1]
    assert data.train_lengths.tolist() == [1, 1, 2]
    with pytest.raises(ValueError):
        data.eval_users("train")


def test_train_item_counts_exclude_valid_and_test_targets(example):
    # Training parts: alice [1, 3], bob [2], carol [2, 4] (carol whole: 2 items).
    assert example.train_item_counts().tolist() == [0, 1, 2, 1, 1]


def test_train_item_counts_with_repeats_and_only_short_users():
    df = table([("a", 1, 1), ("a", 1, 2), ("b", 2, 1)])
    assert build_sequences("t", df).train_item_counts().tolist() == [0, 2, 1]


def test_stats(example):
    stats = example.stats()
    assert stats["users"] == 3 and stats["items"] == 4 and stats["interactions"] == 9
    assert stats["train_interactions"] == 5  # 2 + 1 + 2
    assert stats["valid_users"] == 2 and stats["test_users"] == 2
    assert stats["density"] == pytest.approx(9 / 12)
    assert stats["avg_length"] == pytest.approx(3.0)


# ------------------------------------------------------------ padding


def test_padded_left_pads_and_keeps_most_recent(example):
    users = np.array([0, 1])
    assert example.padded("test", users, 5).tolist() == [[0, 0, 1, 3, 2], [0, 0, 0, 2, 1]]
    assert example.padded("test", users, 2).tolist() == [[3, 2], [2, 1]]
    assert example.padded("test", users, 1).tolist() == [[2], [1]]
    assert example.padded("valid", users, 3).tolist() == [[0, 1, 3], [0, 0, 2]]
    # max_len=None fits the longest history in the batch.
    assert example.padded("test", users).tolist() == [[1, 3, 2], [0, 2, 1]]
    assert example.padded("train", np.array([2])).tolist() == [[2, 4]]
    assert example.padded("test", users, 4).dtype == np.int64


# ------------------------------------------------------------ filters


def test_kcore_cascades_to_a_fixed_point():
    rows = [
        ("u1", "A"),
        ("u1", "B"),
        ("u1", "C"),
        ("u2", "A"),
        ("u2", "B"),
        ("u2", "C"),
        ("u3", "A"),
        ("u3", "B"),
        ("u3", "D"),
        ("u4", "D"),
        ("u4", "E"),
    ]
    df = table(rows, ("user", "item"))
    # user_core=3, item_core=2. Pass 1: u4 (2 rows) and E (1 row) go. Then D has
    # one row left (u3) and goes; then u3 has 2 rows and goes. A single pass
    # would have kept u3 and its lone D.
    out = kcore(df, user_core=3, item_core=2)
    expected = [r for r in rows if r[0] in ("u1", "u2")]
    assert list(out.itertuples(index=False, name=None)) == expected
    assert out["user"].value_counts().min() >= 3
    assert out["item"].value_counts().min() >= 2
    # Idempotent: the fixed point is stable.
    assert kcore(out, 3, 2).equals(out)


def test_kcore_off_and_only_one_side():
    df = table([("a", 1), ("a", 2), ("b", 1)], ("user", "item"))
    assert kcore(df, 0, 0).equals(df)
    assert kcore(df, 1, 1).equals(df)
    assert list(kcore(df, 0, 2)["item"]) == [1, 1]
    assert list(kcore(df, 2, 0)["user"]) == ["a", "a"]


def test_min_rating_keeps_ratings_at_or_above_the_threshold():
    df = table(
        [("u", 1, 1, 5.0), ("u", 2, 2, 3.5), ("u", 3, 3, 4.0), ("v", 1, 1, 3.9)],
        ("user", "item", "timestamp", "rating"),
    )
    out = filter_interactions(df, min_rating=4.0)
    assert list(zip(out["user"], out["item"], strict=True)) == [("u", 1), ("u", 3)]
    assert filter_interactions(df).equals(df)


def test_min_rating_then_kcore():
    df = table(
        [("u", 1, 1, 5), ("u", 2, 2, 1), ("v", 1, 1, 5), ("v", 2, 2, 5)],
        ("user", "item", "timestamp", "rating"),
    )
    # Rating first drops (u, 2); then item 2 has one row and item_core=2 drops it.
    out = filter_interactions(df, min_rating=3, item_core=2)
    assert list(zip(out["user"], out["item"], strict=True)) == [("u", 1), ("v", 1)]


def test_min_rating_without_ratings_is_an_error():
    with pytest.raises(DataError, match="min_rating"):
        filter_interactions(table([("u", 1, 1)]), min_rating=3)


def test_empty_after_filtering_is_an_error():
    df = table([("u", 1, 1), ("u", 2, 2)])
    with pytest.raises(DataError, match="empty after filtering"):
        build_sequences("tiny", filter_interactions(df, user_core=5))


@pytest.mark.parametrize(
    "df, match",
    [
        (pd.DataFrame({"user": [1], "itm": [2]}), "lacks column"),
        (pd.DataFrame({"user": [1, None], "item": [2, 3]}), "row 2: empty user"),
        (pd.DataFrame({"user": [1], "item": [2], "timestamp": ["x"]}), "timestamp"),
    ],
)
def test_malformed_tables_are_rejected(df, match):
    with pytest.raises(DataError, match=match):
        validate_interactions(df, "dataset 't'")


# ------------------------------------------------------------ id maps


def test_id_map_round_trip_with_string_ids(example):
    users, items = example.user_map, example.item_map
    assert users.to_internal(["carol", "alice"]).tolist() == [2, 0]
    assert users.to_raw([2, 0]).tolist() == ["carol", "alice"]
    assert items.to_internal([40, 10]).tolist() == [4, 1]
    assert items.to_raw(items.to_internal([30, 20, 30])).tolist() == [30, 20, 30]
    assert items.to_internal(10).tolist() == [1]


def test_id_map_accepts_either_spelling_of_an_id():
    ints = IdMap(np.array([10, 20, 30]), offset=1)
    assert ints.to_internal(["20", 30]).tolist() == [2, 3]
    strs = IdMap(np.array(["7", "x"]), offset=0)
    assert strs.to_internal([7, "x"]).tolist() == [0, 1]


@pytest.mark.parametrize("raw", [[10, 20], ["a", "b"]])
def test_unknown_raw_id_raises_key_error(raw):
    with pytest.raises(KeyError):
        IdMap(np.array(raw), offset=1).to_internal([raw[0], "nope"])


def test_a_non_integer_lookup_in_an_integer_map_is_unknown():
    # 20.5 is not the id 20; int(20.5) silently truncating would return item 2.
    with pytest.raises(KeyError):
        IdMap(np.array([10, 20, 30]), offset=1).to_internal([20.5])


def test_padding_id_has_no_raw_id():
    # Item 0 is padding; it must not wrap around to the last item.
    items = IdMap(np.array([10, 20, 30]), offset=1)
    with pytest.raises(KeyError):
        items.to_raw([0])
    with pytest.raises(KeyError):
        items.to_raw([4])


def test_digest_identifies_the_mapping():
    base = IdMap(np.array([10, 20, 30]), offset=1).digest()
    assert IdMap(np.array([10, 20, 30]), offset=1).digest() == base
    assert IdMap(np.array([10, 20, 31]), offset=1).digest() != base
    assert IdMap(np.array([10, 20, 30, 40]), offset=1).digest() != base
    assert IdMap(np.array([20, 10, 30]), offset=1).digest() != base
    assert IdMap(np.array(["10", "20", "30"]), offset=1).digest() != base


def test_metadata_is_reindexed_to_internal_ids():
    items = pd.DataFrame({"title": ["Ten", "Thirty", "Unused"]}, index=[10, 30, 99])
    users = pd.DataFrame({"age": [30, 40]}, index=["bob", "alice"])
    df = table([("alice", 30, 1), ("bob", 10, 1), ("alice", 20, 2)])
    data = build_sequences("t", df, items, users)
    assert data.item_meta.index.tolist() == [1, 2, 3]
    assert data.item_meta["title"].tolist()[0::2] == ["Ten", "Thirty"]
    assert pd.isna(data.item_meta["title"].iloc[1])  # item 20 has no metadata
    assert data.user_meta["age"].tolist() == [40, 30]  # alice (0), bob (1)
    assert data.titles([1, 3]) == ["Ten", "Thirty"]


# ------------------------------------------------------------ cache


def test_cache_round_trip_keeps_arrays_and_maps(tmp_path):
    df = table([("u2", 20, 1), ("u1", 10, 3), ("u1", 20, 2), ("u1", 10, 4), ("u2", 10, 0)])
    data = build_sequences("cached", df)
    save_sequences(data, tmp_path / "cache" / "cached-key")
    back = load_sequences(tmp_path / "cache" / "cached-key")
    assert back.name == "cached"
    for name in ("offsets", "items"):
        np.testing.assert_array_equal(getattr(back, name), getattr(data, name))
        assert getattr(back, name).dtype == np.int64
    for name in ("user_map", "item_map"):
        np.testing.assert_array_equal(getattr(back, name).raw, getattr(data, name).raw)
        assert getattr(back, name).digest() == getattr(data, name).digest()
    assert back.user_map.to_internal(["u2"]).tolist() == [1]
    assert back.stats() == data.stats()
    # u1 by time: 20 (t=2), 10 (t=3), 10 (t=4) → test input [2, 1]
    assert back.padded("test", np.array([0]), 4).tolist() == [[0, 0, 2, 1]]
    # No temporary directories are left behind.
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["cached-key"]


@pytest.mark.parametrize("with_meta", [True, False], ids=["metadata", "no-metadata"])
def test_cache_round_trip_keeps_metadata_frames(tmp_path, with_meta):
    items = pd.DataFrame({"title": ["Ten", "Twenty"], "year": [1999, 2001]}, index=[10, 20])
    users = pd.DataFrame({"age": [31, 32]}, index=["u1", "u2"])
    df = table([("u2", 20, 1), ("u1", 10, 3), ("u1", 20, 2)])
    data = build_sequences("cached", df, *((items, users) if with_meta else ()))
    save_sequences(data, tmp_path / "d")
    back = load_sequences(tmp_path / "d")
    # Without metadata the frames still have one (column-less) row per item/user.
    pd.testing.assert_frame_equal(back.item_meta, data.item_meta)
    pd.testing.assert_frame_equal(back.user_meta, data.user_meta)
    assert back.titles([1, 2]) == data.titles([1, 2])


def test_user_subsample_is_seeded_nested_and_keeps_whole_users():
    import pandas as pd

    from seqrec_core.data.core import filter_interactions, subsample_users

    df = pd.DataFrame({"user": [u for u in range(40) for _ in range(3)], "item": list(range(120))})
    quarter = subsample_users(df, 0.25, seed=7)
    half = subsample_users(df, 0.5, seed=7)
    assert quarter["user"].nunique() == 10 and half["user"].nunique() == 20
    assert set(quarter["user"]) <= set(half["user"])  # nested
    assert quarter.groupby("user").size().eq(3).all()  # whole histories
    assert quarter.equals(subsample_users(df, 0.25, seed=7))  # deterministic
    assert set(subsample_users(df, 0.25, seed=8)["user"]) != set(quarter["user"])
    assert list(quarter.index) == sorted(quarter.index)  # file order kept
    assert filter_interactions(df, user_fraction=1.0).equals(df)


def test_user_fraction_is_a_recipe_key_and_changes_the_cache(core_registry, tmp_path):
    from seqrec_core.data import load_dataset
    from seqrec_core.errors import RecipeError
    from seqrec_core.recipe import load_recipe

    base = {"dataset": {"name": "inline"}, "model": {"name": "pop"}, "callbacks": []}
    full = load_dataset(load_recipe(None, core_registry, data=base), core_registry)
    part = load_recipe(None, core_registry, data=base, overrides=["dataset.user_fraction=0.5"])
    half = load_dataset(part, core_registry)
    assert half.n_users < full.n_users
    with pytest.raises(RecipeError, match="dataset.user_fraction"):
        load_recipe(None, core_registry, data=base, overrides=["dataset.user_fraction=0"])
