"""The temporal split (docs/protocol.md, section 5.2): global cutoffs by
timestamp or quantile, its boundaries, its use by evaluation and training,
its recipe validation and its cache, and leave-one-out staying as it was."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console

import seqrec_sasrec
from seqrec_core.data import build_sequences
from seqrec_core.data.pipeline import apply_split, cache_root, load_dataset
from seqrec_core.data.splits import leave_one_out, split_spec
from seqrec_core.errors import DataError, RecipeError
from seqrec_core.evaluate import rank_split
from seqrec_core.recipe import load_recipe
from seqrec_core.run import run_recipe
from seqrec_core.train import Trainer, window_bounds
from seqrec_pop import Pop, PopOptions
from seqrec_splits import Temporal, quantile_cutoff, to_epoch_seconds

# (user, item, timestamp) in file order; cutoffs valid = 10, test = 20.
ROWS = [
    ("u1", "a", 1), ("u1", "b", 5), ("u1", "c", 10), ("u1", "d", 12), ("u1", "e", 20),
    ("u1", "f", 25),
    ("u2", "a", 3), ("u2", "b", 21),
    ("u3", "a", 11), ("u3", "c", 15),
    ("u4", "d", 2), ("u4", "e", 4),
    ("u5", "a", 25), ("u5", "b", 30),
    ("u6", "a", 5), ("u6", "c", 10), ("u6", "b", 10),
]  # fmt: skip
TEMPORAL = {"name": "temporal", "cutoff_by": "timestamp", "valid_cutoff": 10, "test_cutoff": 20}


def temporal(**options) -> Temporal.Options:
    """Temporal options; by default those of ``TEMPORAL``."""
    if not options:
        options = {k: v for k, v in TEMPORAL.items() if k != "name"}
    return Temporal.Options(**options)


@pytest.fixture
def core_registry(core_registry):
    """The core test registry plus the temporal split plugin."""
    core_registry.add("splits", Temporal, "splits")
    return core_registry


@pytest.fixture
def data():
    base = build_sequences("t", pd.DataFrame(ROWS, columns=["user", "item", "timestamp"]))
    return apply_split(base, Temporal, temporal())


def raw_items(data, start, end):
    return data.item_map.to_raw(data.items[start:end]).tolist()


def history(data, split, user):
    start, end = data.history_bounds(split, np.array([user]))
    return raw_items(data, start[0], end[0])


def row(data, user):
    return int(data.user_map.to_internal([user])[0])


# ------------------------------------------------------------------ boundaries


def test_training_is_everything_before_the_valid_cutoff(data):
    expected = {"u1": ["a", "b"], "u2": ["a"], "u3": [], "u4": ["d", "e"], "u5": [], "u6": ["a"]}
    assert {u: history(data, "train", row(data, u)) for u in expected} == expected
    assert data.train_lengths.tolist() == [2, 1, 0, 2, 0, 1]


def test_validation_target_is_the_first_item_in_the_validation_period(data):
    users = data.user_map.to_raw(data.eval_users("valid")).tolist()
    # u1: t=10 sits exactly on the cutoff, so it belongs to validation (at/after).
    # u2: its first item after 10 is at 21, in the test period → no validation target.
    # u3: nothing before the cutoff → no history → no target.
    # u6: the two items at t=10 tie; file order decides (c before b).
    assert users == ["u1", "u6"]
    assert data.item_map.to_raw(data.targets("valid")).tolist() == ["c", "c"]
    assert history(data, "valid", row(data, "u1")) == ["a", "b"]  # = its training part
    assert history(data, "valid", row(data, "u6")) == ["a"]


def test_test_target_is_the_first_item_at_or_after_the_test_cutoff(data):
    users = data.user_map.to_raw(data.eval_users("test")).tolist()
    # u1: t=20 is on the cutoff; its input includes the validation period (c, d).
    # u2: target b (t=21) after a training-only history.
    # u5: its first item is after the cutoff, so there is no history → no target.
    assert users == ["u1", "u2"]
    assert data.item_map.to_raw(data.targets("test")).tolist() == ["e", "b"]
    assert history(data, "test", row(data, "u1")) == ["a", "b", "c", "d"]
    assert history(data, "test", row(data, "u2")) == ["a"]


def test_padded_and_counts_follow_the_split(data):
    u1, u2 = row(data, "u1"), row(data, "u2")
    padded = data.padded("test", np.array([u1, u2]), 3)
    assert [data.item_map.to_raw(r[r > 0]).tolist() for r in padded] == [["b", "c", "d"], ["a"]]
    # POP counts only the training parts: a ×3 (u1, u2, u6), b, d, e ×1.
    counts = dict(
        zip(data.item_map.raw.tolist(), data.train_item_counts()[1:].tolist(), strict=True)
    )
    assert counts == {"a": 3, "b": 1, "c": 0, "d": 1, "e": 1, "f": 0}
    stats = data.stats()
    assert (stats["valid_users"], stats["test_users"], stats["train_interactions"]) == (2, 2, 6)


def test_users_without_a_target_are_refused_by_targets(data):
    with pytest.raises(ValueError, match="no test target"):
        data.targets("test", np.array([row(data, "u5")]))


def test_quantile_cutoffs():
    t = np.arange(1, 11)  # ten interactions at t = 1..10
    assert quantile_cutoff(t, 0.8) == 9  # k = floor(0.8 * 10) = 8 → 9: 8 of 10 before it
    assert quantile_cutoff(t, 0.9) == 10
    assert quantile_cutoff(np.array([5, 5, 5, 7]), 0.5) == 5  # ties go to the later period
    offsets = np.array([0, 10])
    split = Temporal().split(offsets, t, Temporal.Options())  # defaults 0.8 / 0.9
    assert split.info["valid_cutoff"] == 9 and split.info["test_cutoff"] == 10
    assert split.train_end.tolist() == [8]
    assert split.valid_pos.tolist() == [8] and split.test_pos.tolist() == [9]


def test_equal_quantile_cutoffs_are_an_error():
    with pytest.raises(DataError, match="both fall on timestamp 5"):
        Temporal().split(np.array([0, 4]), np.array([5, 5, 5, 5]), Temporal.Options())


def test_iso_dates_are_utc_seconds():
    assert to_epoch_seconds("2001-01-01", "x") == 978307200
    assert to_epoch_seconds("2001-01-01T01:00:00+01:00", "x") == 978307200
    options = temporal(
        cutoff_by="timestamp", valid_cutoff="1970-01-01T00:00:10",
        test_cutoff="1970-01-01T00:00:20",
    )  # fmt: skip
    base = build_sequences("t", pd.DataFrame(ROWS, columns=["user", "item", "timestamp"]))
    by_date = apply_split(base, Temporal, options)
    assert by_date.split.spec["valid_cutoff"] == "1970-01-01T00:00:10"
    np.testing.assert_array_equal(
        by_date.split.test_pos, apply_split(base, Temporal, temporal()).split.test_pos
    )


def test_a_dataset_without_timestamps_cannot_be_split_in_time():
    base = build_sequences("t", pd.DataFrame([("u", 1), ("u", 2)], columns=["user", "item"]))
    with pytest.raises(DataError, match="has no timestamps"):
        apply_split(base, Temporal, temporal())


# ------------------------------------------------------------------ leave-one-out unchanged


def test_leave_one_out_arrays_reproduce_the_protocol(worked_example_rows):
    data = build_sequences(
        "e", pd.DataFrame(worked_example_rows, columns=["user", "item", "timestamp"])
    )
    split = leave_one_out(data.offsets)
    # alice [0..4), bob [4..7), carol [7..9)
    assert split.train_end.tolist() == [2, 5, 9]
    assert split.valid_pos.tolist() == [2, 5, -1]
    assert split.test_pos.tolist() == [3, 6, -1]
    assert data.split.spec == {"name": "leave_one_out"}
    assert apply_split(data, None) is data  # the default split needs no work


# ------------------------------------------------------------------ recipes


def recipe_data(tmp_path, split: dict | None = None, model: dict | None = None) -> dict:
    data = {
        "name": "temporal",
        "dataset": {"name": "inline", "rows": [list(r) for r in ROWS]},
        "model": model or {"name": "pop"},
        "train": {"device": "cpu", "monitor": "HR@2"},
        "eval": {"ks": [2], "metrics": ["hr", "mrr"]},
        "callbacks": [],
        "output": {
            "runs_dir": str(tmp_path / "runs"),
            "checkpoints_dir": str(tmp_path / "checkpoints"),
        },
    }
    if split is not None:
        data["split"] = split
    return data


@pytest.mark.parametrize(
    "split, message",
    [
        ({"valid_cutoff": 0.5}, "split.valid_cutoff: only for split.name: temporal"),
        ({"name": "temporal", "valid_cutoff": 0.95}, "must be before split.test_cutoff (0.9)"),
        ({"name": "temporal", "test_cutoff": 1.5}, "must be a fraction between 0 and 1"),
        ({"name": "temporal", "valid_cutoff": "2001-01-01"}, "or set cutoff_by: timestamp"),
        ({"name": "temporal", "cutoff_by": "timestamp", "test_cutoff": 5}, "set both"),
        (
            {
                "name": "temporal",
                "cutoff_by": "timestamp",
                "valid_cutoff": "soon",
                "test_cutoff": 5,
            },
            "neither a number nor an ISO date",
        ),  # fmt: skip
        ({"name": "temporl"}, "did you mean 'temporal'"),
    ],
)
def test_recipe_split_section_is_validated(tmp_path, core_registry, split, message):
    with pytest.raises(RecipeError) as err:
        load_recipe(None, core_registry, data=recipe_data(tmp_path, split))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_yaml_dates_and_overrides(tmp_path, core_registry):
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: r\ndataset: {name: inline}\nmodel: {name: pop}\n"
        "split: {name: temporal, cutoff_by: timestamp, valid_cutoff: 2001-01-01, "
        "test_cutoff: 2002-01-01}\n"
    )
    recipe = load_recipe(path, core_registry)
    assert split_spec(recipe.split.name, recipe.split_options)["valid_cutoff"] == "2001-01-01"
    assert load_recipe(path, core_registry).to_dict()["split"]["test_cutoff"] == "2002-01-01"
    # switching the split name by override drops the other split's keys
    recipe = load_recipe(path, core_registry, ["split.name=leave_one_out"])
    assert split_spec(recipe.split.name, recipe.split_options) == {"name": "leave_one_out"}
    assert recipe.to_dict()["split"] == {"name": "leave_one_out"}


# ------------------------------------------------------------------ cache, evaluation, training


def test_split_is_cached_beside_the_sequences(tmp_path, core_registry):
    recipe = load_recipe(None, core_registry, data=recipe_data(tmp_path, TEMPORAL))
    first = load_dataset(recipe, core_registry)
    (directory,) = list(cache_root().iterdir())
    assert len(list(directory.glob("split-*.npz"))) == 2  # leave-one-out + temporal
    again = load_dataset(recipe, core_registry)  # from the cache, split file included
    for name in ("train_end", "valid_pos", "test_pos"):
        np.testing.assert_array_equal(getattr(again.split, name), getattr(first.split, name))
    assert again.split.info["test_cutoff"] == 20
    loo = load_dataset(load_recipe(None, core_registry, data=recipe_data(tmp_path)), core_registry)
    assert list(cache_root().iterdir()) == [directory]  # another split, same sequences
    np.testing.assert_array_equal(loo.split.test_pos, leave_one_out(loo.offsets).test_pos)


def test_pop_evaluates_on_the_temporal_split(data):
    pop = Pop(PopOptions(), data.n_items)
    pop.prepare(data)
    # test targets: u1 → e (count 1, ties with b and d; a beats it) → rank 4; u2 → b → 4.
    assert rank_split(pop, data, "test", k=2).ranks.tolist() == [4, 4]
    # valid targets: c for u1 and u6 (count 0, ties with f) → rank 6 of 6.
    assert rank_split(pop, data, "valid", k=2).ranks.tolist() == [6, 6]


def test_run_recipe_with_a_temporal_split(tmp_path, core_registry):
    recipe = load_recipe(None, core_registry, data=recipe_data(tmp_path, TEMPORAL))
    result = run_recipe(recipe, core_registry, Console(file=io.StringIO()), samples=0)
    assert result.stats["test_users"] == 2 and result.stats["valid_users"] == 2
    assert result.metrics["test"]["HR@2"] == 0.0 and result.metrics["test"]["MRR"] == 0.25


def test_training_windows_stay_before_the_valid_cutoff(tmp_path, core_registry):
    core_registry.add("models", seqrec_sasrec.SASRec, "sasrec_test")
    model = {"name": "sasrec", "dim": 8, "blocks": 1, "heads": 1, "max_len": 4}
    data_ = recipe_data(tmp_path, TEMPORAL, model=model)
    data_["train"].update(epochs=1, batch_size=4)
    recipe = load_recipe(None, core_registry, data=data_)
    data = load_dataset(recipe, core_registry)
    starts, ends = window_bounds(data, 5, "sliding")
    cut = data.split.train_end
    assert all(
        e <= cut[np.searchsorted(data.offsets, s, side="right") - 1]
        for s, e in zip(starts, ends, strict=True)
    )
    assert np.all(
        data.timestamps[
            np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
        ]
        < 10
    )
    result = Trainer(recipe, core_registry, data, 0, "t", torch.device("cpu")).fit()
    assert set(result.test) >= {"HR@2", "MRR"}
