"""Splits are plugins (``register_splits``): the built-ins, the core's
leave-one-out default when no split plugin is loaded, a third-party split
through recipe, pipeline and cache, and the recipe's ``split:`` errors."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, Field

import seqrec_splits
from seqrec_core import hookimpl
from seqrec_core.data.pipeline import cache_root, load_dataset
from seqrec_core.data.splits import SplitArrays, leave_one_out
from seqrec_core.errors import DataError, RecipeError
from seqrec_core.plugins import load_plugins
from seqrec_core.recipe import DatasetSection, SplitSection, load_recipe


class LastOutOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gap: int = Field(1, ge=1, description="items between the validation and the test target")


class LastOut:
    """Test target: the last item; validation target: ``gap`` items before it."""

    name = "last_out"
    Options = LastOutOptions

    def split(self, offsets, timestamps, options: LastOutOptions) -> SplitArrays:
        start, stop = offsets[:-1], offsets[1:]
        ok = stop - start >= options.gap + 2
        valid = stop - 1 - options.gap
        return SplitArrays(
            train_end=np.where(ok, valid, stop),
            valid_pos=np.where(ok, valid, -1),
            test_pos=np.where(ok, stop - 1, -1),
            info={"gap": options.gap},
        )


class LastOutPlugin:
    name = "last_out_plugin"

    @hookimpl
    def register_splits(self, register):
        register(LastOut)


def recipe_data(split: dict | None = None) -> dict:
    data = {"name": "r", "dataset": {"name": "inline"}, "model": {"name": "pop"}, "callbacks": []}
    if split is not None:
        data["split"] = split
    return data


def test_the_builtin_split_plugin_registers_both_splits():
    registry = load_plugins(extra=[seqrec_splits], use_entry_points=False)
    assert registry.names("splits") == ["leave_one_out", "temporal"]
    assert registry.plugin_of("splits", "leave_one_out") == "seqrec_splits"
    assert registry.plugins["seqrec_splits"].registered["splits"] == ["leave_one_out", "temporal"]


def test_leave_one_out_works_without_any_split_plugin(core_registry):
    # core_registry has no split plugin: the protocol default stands in.
    assert core_registry.names("splits") == ["leave_one_out"]
    recipe = load_recipe(None, core_registry, data=recipe_data())
    assert recipe.split.name == "leave_one_out"
    assert recipe.to_dict()["split"] == {"name": "leave_one_out"}
    data = load_dataset(recipe, core_registry)
    np.testing.assert_array_equal(data.split.test_pos, leave_one_out(data.offsets).test_pos)
    with pytest.raises(RecipeError, match="unknown split 'temporal'; available: leave_one_out"):
        load_recipe(None, core_registry, data=recipe_data({"name": "temporal"}))


def test_a_third_party_split_runs_through_recipe_pipeline_and_cache(
    inline_plugin, monkeypatch, tmp_path
):
    import seqrec_metrics
    import seqrec_pop

    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))
    registry = load_plugins(
        extra=[inline_plugin, seqrec_metrics, seqrec_pop, LastOutPlugin()], use_entry_points=False
    )
    assert registry.names("splits") == ["last_out", "leave_one_out"]
    recipe = load_recipe(None, registry, data=recipe_data({"name": "last_out", "gap": 1}))
    assert recipe.to_dict()["split"] == {"name": "last_out", "gap": 1}
    data = load_dataset(recipe, registry)
    # by time: alice 10 30 20 40, bob 20 10 30, carol 20 40
    assert data.split.spec == {"name": "last_out", "gap": 1} and data.split.info == {"gap": 1}
    assert data.eval_users("test").tolist() == [0, 1]  # at least gap + 2 = 3 items
    assert data.item_map.to_raw(data.targets("valid")).tolist() == [20, 10]
    (directory,) = list(cache_root().iterdir())
    assert len(list(directory.glob("split-*.npz"))) == 2  # leave-one-out + last_out(gap=1)
    gap2 = load_recipe(None, registry, data=recipe_data({"name": "last_out", "gap": 2}))
    data = load_dataset(gap2, registry)
    assert data.eval_users("test").tolist() == [0]  # 4 items needed: alice only
    assert data.item_map.to_raw(data.targets("valid")).tolist() == [30]
    assert len(list(directory.glob("split-*.npz"))) == 3  # options are part of the key
    again = load_dataset(gap2, registry)  # read back from the cache
    assert again.split.info == {"gap": 2} and again.split.valid_pos.tolist() == [1, -1, -1]


@pytest.mark.parametrize(
    "split, message",
    [
        ({"name": "last_out", "gapp": 2}, "split.gapp: unknown key 'gapp' for split 'last_out' "
         "(did you mean 'gap'?); allowed: name, gap"),
        ({"name": "last_out", "gap": 0}, "split.gap: expected greater than or equal to 1, got 0"),
        ({"gap": 2}, "split.gap: only for split.name: last_out (unknown key 'gap' for split "
         "'leave_one_out'); remove it or change the name"),
        ({"name": "last_ot"}, "split.name: unknown split 'last_ot' (did you mean 'last_out'?); "
         "available: last_out, leave_one_out"),
    ],
)  # fmt: skip
def test_split_options_are_validated_with_file_and_line(tmp_path, core_registry, split, message):
    core_registry.add("splits", LastOut, "last_out_plugin")
    lines = [f"  {k}: {v}" for k, v in split.items()]
    path = tmp_path / "r.yaml"
    path.write_text("name: r\ndataset: {name: inline}\nmodel: {name: pop}\nsplit:\n")
    path.write_text(path.read_text() + "\n".join(lines) + "\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path, core_registry)
    assert str(err.value) == f"{path}:{4 + len(split)}: {message}"  # the last key's line


def test_a_check_across_options_names_the_keys_without_the_whole_section(core_registry):
    core_registry.add("splits", seqrec_splits.Temporal, "splits")
    with pytest.raises(RecipeError) as err:
        load_recipe(
            None, core_registry, data=recipe_data({"name": "temporal", "valid_cutoff": 0.95})
        )
    assert str(err.value) == (
        "<recipe>: split: split.valid_cutoff (0.95) must be before split.test_cutoff (0.9)"
    )


def test_an_unresolved_recipe_gets_its_split_options_validated(core_registry, inline_plugin):
    core_registry.add("splits", seqrec_splits.Temporal, "splits")
    dataset = core_registry.get("datasets", "inline")
    recipe = SimpleNamespace(
        dataset=DatasetSection(name="inline"),
        dataset_options=dataset.Options(),
        split=SplitSection(name="temporal", test_cutoff=1.5),
    )
    with pytest.raises(
        DataError, match=r"split: split\.test_cutoff is 1\.5; .* \(split 'temporal'\)"
    ):
        load_dataset(recipe, core_registry)
    recipe.split = SplitSection(name="temporal")
    assert load_dataset(recipe, core_registry).split.info["cutoff_by"] == "quantile"
