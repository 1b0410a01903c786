"""POP end to end on the worked example of docs/protocol.md (section 11): counts
from the training part only, ranks with ties against the model, metrics, and
the files a run writes."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from rich.console import Console

import seqrec_core.cli
from seqrec_core.data import build_sequences
from seqrec_core.evaluate import rank_split
from seqrec_core.recipe import load_recipe
from seqrec_core.run import run_recipe
from seqrec_pop import Pop, PopOptions

ALL_METRICS = ["hr", "recall", "ndcg", "mrr_at_k", "mrr", "precision", "coverage"]
KS = [1, 2, 4]

# Worked example: items 10→1, 20→2, 30→3, 40→4; training parts alice [1, 3],
# bob [2], carol [2, 4] ⇒ POP counts 1: 1, 2: 2, 3: 1, 4: 1.
# Targets: valid alice 2, bob 1; test alice 4, bob 3.
#   U (all items):   valid ranks alice 1 ({2}), bob 4 (ties 1, 3, 4 + item 2)
#                    test  ranks alice 4, bob 4 (score 1 ties with 1, 3, 4; 2 beats it)
#   F (filter seen): valid alice 1 (candidates {2, 4}), bob 3 ({1, 3, 4} all tie)
#                    test  alice 1 ({4}), bob 2 ({3, 4} tie)
RANKS = {
    ("valid", False): [1, 4],
    ("test", False): [4, 4],
    ("valid", True): [1, 3],
    ("test", True): [1, 2],
}


def expected_metrics(ranks: list[int]) -> dict[str, float]:
    """Every rank-based metric from the definitions in docs/protocol.md."""
    n = len(ranks)
    out = {}
    for k in KS:
        hits = [r <= k for r in ranks]
        out[f"HR@{k}"] = out[f"Recall@{k}"] = sum(hits) / n
        out[f"NDCG@{k}"] = (
            sum(1 / math.log2(r + 1) for r, h in zip(ranks, hits, strict=True) if h) / n
        )
        out[f"MRR@{k}"] = sum(1 / r for r, h in zip(ranks, hits, strict=True) if h) / n
        out[f"Precision@{k}"] = sum(hits) / n / k
    out["MRR"] = sum(1 / r for r in ranks) / n
    return out


def recipe_data(tmp_path: Path, name: str, filter_seen: bool = False, **dataset) -> dict:
    return {
        "name": name,
        "dataset": {"name": "inline", **dataset},
        "model": {"name": "pop"},
        "train": {"device": "cpu", "monitor": "NDCG@4"},
        "eval": {"ks": KS, "metrics": ALL_METRICS, "filter_seen": filter_seen},
        "callbacks": [],
        "output": {
            "runs_dir": str(tmp_path / "runs"),
            "checkpoints_dir": str(tmp_path / "checkpoints"),
        },
    }


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


@pytest.fixture
def example(worked_example_rows):
    df = pd.DataFrame(worked_example_rows, columns=["user", "item", "timestamp"])
    return build_sequences("example", df)


def fitted_pop(data) -> Pop:
    pop = Pop(PopOptions(), data.n_items)
    pop.prepare(data)
    return pop


# ------------------------------------------------------------------ the model


def test_pop_counts_training_parts_only(example):
    pop = fitted_pop(example)
    # Counted in all interactions, item 2 would have 3, items 3 and 4 two each.
    assert pop.counts.tolist() == [0, 1, 2, 1, 1]
    scores = pop.predict(torch.zeros(2, 1, dtype=torch.long))
    assert scores.shape == (2, 5)
    # Same order and ties as the counts; padding never wins; identical rows.
    assert scores[0, 0] == -math.inf
    assert scores[0, 2] > scores[0, 1] == scores[0, 3] == scores[0, 4]
    assert torch.equal(scores[0], scores[1])


@pytest.mark.parametrize("split, filter_seen", list(RANKS))
def test_pop_ranks_by_hand(example, split, filter_seen):
    result = rank_split(fitted_pop(example), example, split, k=1, filter_seen=filter_seen)
    assert result.ranks.tolist() == RANKS[split, filter_seen]


def test_items_never_trained_on_rank_last_with_ties():
    # u1 = [1, 2, 3, 9], u2 = [1, 2, 3]: training parts u1 [1, 2], u2 [1].
    # Counts: item 1 → 2, item 2 → 1, items 3 and 9 → 0 (internal 3, 4).
    rows = [("u1", i, t) for t, i in enumerate([1, 2, 3, 9])]
    rows += [("u2", i, t) for t, i in enumerate([1, 2, 3])]
    data = build_sequences("t", pd.DataFrame(rows, columns=["user", "item", "timestamp"]))
    pop = fitted_pop(data)
    assert pop.counts.tolist() == [0, 2, 1, 0, 0]
    # valid: u1 target 3 (count 0) ties with 4 → rank 4; u2 target 2 → behind 1 → rank 2.
    assert rank_split(pop, data, "valid", k=1).ranks.tolist() == [4, 2]
    # test: u1 target 4, u2 target 3: both count 0 → rank 4.
    assert rank_split(pop, data, "test", k=1).ranks.tolist() == [4, 4]
    # F, test: u1 saw 1, 2, 3 → only 4 left → 1; u2 saw 1, 2 → {3, 4} tie → 2.
    assert rank_split(pop, data, "test", k=1, filter_seen=True).ranks.tolist() == [1, 2]


# ------------------------------------------------------------------ through a run


@pytest.mark.parametrize("filter_seen", [False, True], ids=["U", "F"])
def test_run_recipe_writes_hand_computed_metrics(tmp_path, core_registry, filter_seen):
    name = f"pop_{'f' if filter_seen else 'u'}"
    recipe = load_recipe(
        None, core_registry, data=recipe_data(tmp_path, name, filter_seen=filter_seen)
    )
    result = run_recipe(recipe, core_registry, quiet(), samples=0)

    run_dir = tmp_path / "runs" / name
    assert result.run_dir == run_dir
    payload = json.loads((run_dir / "metrics.json").read_text())
    assert payload["model"] == "pop" and payload["dataset"] == "inline"
    assert payload["protocol"] == ("F (seen items filtered)" if filter_seen else "U (all items)")
    assert payload["stats"]["users"] == 3 and payload["stats"]["items"] == 4
    assert payload["stats"]["valid_users"] == 2 and payload["stats"]["train_interactions"] == 5
    for split in ("valid", "test"):
        got = payload["metrics"][split]
        want = expected_metrics(RANKS[split, filter_seen])
        for key, value in want.items():
            assert got[key] == pytest.approx(value), (split, key)
        plain = {k for k in got if "/" not in k}
        assert plain == set(want) | {f"Coverage@{k}" for k in KS}
        assert result.metrics[split]["MRR"] == pytest.approx(want["MRR"])
        # Both protocols again, tagged, whichever the recipe uses.
        for tag, seen in (("U", False), ("F", True)):
            for key, value in expected_metrics(RANKS[split, seen]).items():
                assert got[f"{key}/{tag}"] == pytest.approx(value), (split, key, tag)

    u = payload["metrics"]
    if not filter_seen:
        # Every user's top-1 is item 2; top-4 is all four items.
        assert u["test"]["Coverage@1"] == pytest.approx(1 / 4)
        assert u["test"]["Coverage@4"] == pytest.approx(4 / 4)
    else:
        # valid top-1: alice 2 (of {2, 4}), bob one of {1, 3, 4} ⇒ two items.
        assert u["valid"]["Coverage@1"] == pytest.approx(2 / 4)

    # recipe.yaml is the fully resolved recipe and loads back to the same recipe.
    written = (run_dir / "recipe.yaml").read_text()
    assert yaml.safe_load(written) == recipe.to_dict()
    again = load_recipe(run_dir / "recipe.yaml", core_registry)
    assert again.to_dict() == recipe.to_dict()


def test_run_uses_the_data_cache(tmp_path, core_registry):
    cache = Path(tmp_path / "cache")  # SEQREC_CACHE, set by core_registry
    first = run_recipe(
        load_recipe(None, core_registry, data=recipe_data(tmp_path, "first")),
        core_registry,
        quiet(),
        samples=0,
    )
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) == 1 and entries[0].startswith("inline-")
    assert (cache / entries[0] / "meta.json").is_file()

    console = quiet()
    second = run_recipe(
        load_recipe(None, core_registry, data=recipe_data(tmp_path, "second")),
        core_registry,
        console,
        samples=0,
    )
    assert "using cached processed data" in console.file.getvalue()
    assert second.metrics == first.metrics
    assert sorted(p.name for p in cache.iterdir()) == entries  # no new entry

    # Different rows are a different dataset: a new cache entry, other numbers.
    rows = [["x", 1, 1], ["x", 2, 2], ["x", 1, 3], ["y", 1, 1]]
    third = run_recipe(
        load_recipe(None, core_registry, data=recipe_data(tmp_path, "third", rows=rows)),
        core_registry,
        quiet(),
        samples=0,
    )
    assert len(list(cache.iterdir())) == 2
    # x = [1, 2, 1]: training [1], plus y's [1] ⇒ counts 1: 2, 2: 0. Test target 1
    # is the most popular → rank 1; valid target 2 (count 0) is behind 1 → rank 2.
    assert third.metrics["test"]["HR@1"] == pytest.approx(1.0)
    assert third.metrics["valid"]["MRR"] == pytest.approx(1 / 2)


def test_seqrec_run_cli_end_to_end(tmp_path, cli_registry, capsys):
    data = recipe_data(tmp_path, "ignored")
    del data["name"]
    path = tmp_path / "pop_cli.yaml"
    path.write_text(yaml.safe_dump(data))
    rc = seqrec_core.cli.main(["run", str(path), "-o", "eval.filter_seen=true"])
    err = capsys.readouterr().err
    assert rc == 0, err
    payload = json.loads((tmp_path / "runs" / "pop_cli" / "metrics.json").read_text())
    assert payload["protocol"] == "F (seen items filtered)"
    want = expected_metrics(RANKS["test", True])
    for key in ("HR@1", "NDCG@2", "MRR"):
        assert payload["metrics"]["test"][key] == pytest.approx(want[key])
    # The override is part of the recipe written next to the metrics.
    written = yaml.safe_load((tmp_path / "runs" / "pop_cli" / "recipe.yaml").read_text())
    assert written["eval"]["filter_seen"] is True


def test_hand_computed_expectations_match_the_doc():
    # docs/protocol.md, section 11, test table: U ranks 4, 4 and F ranks 1, 2.
    u, f = expected_metrics(RANKS["test", False]), expected_metrics(RANKS["test", True])
    assert (u["HR@1"], u["HR@2"], u["NDCG@2"], u["MRR"]) == (0, 0, 0, 0.25)
    assert (f["HR@1"], f["HR@2"], f["MRR"]) == (0.5, 1.0, 0.75)
    assert f["NDCG@2"] == pytest.approx(0.8155, abs=1e-4)
    assert np.isclose(f["Precision@2"], 0.5)
