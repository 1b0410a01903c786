"""Recommendations from a checkpoint (API and `seqrec recommend`), and the
shipped recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import seqrec_core.cli
from seqrec_core.errors import SeqrecError
from seqrec_core.plugins import load_plugins
from seqrec_core.recipe import load_recipe
from seqrec_core.recommend import Catalogue, load_for_inference, top_k
from seqrec_core.run import run_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_is_valid(path):
    recipe = load_recipe(path, load_plugins())
    assert recipe.name == path.stem


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rec")
    mp = pytest.MonkeyPatch()
    mp.setenv("SEQREC_CACHE", str(tmp / "cache"))
    registry = load_plugins()
    recipe = load_recipe(
        None,
        registry,
        data={
            "name": "r",
            "dataset": {"name": "synthetic", "n_users": 120, "n_items": 40, "mean_length": 12},
            "model": {"name": "sasrec", "max_len": 12, "dim": 16, "blocks": 1},
            "train": {"epochs": 2, "device": "cpu"},
            "callbacks": [],
            "output": {"runs_dir": str(tmp / "runs"), "checkpoints_dir": str(tmp / "ckpt")},
        },
    )
    run_recipe(recipe, registry, samples=0)
    yield tmp / "ckpt/r/best.safetensors", registry
    mp.undo()


def test_top_k_ranks_titles_scores_and_probabilities(trained):
    path, registry = trained
    model, catalogue, histories, _ = load_for_inference(path, registry)
    history = histories.of(histories.user_ids[0])
    recs = top_k(model, history, 10, catalogue=catalogue)
    assert [r.rank for r in recs] == list(range(1, 11))
    scores = [r.score for r in recs]
    assert scores == sorted(scores, reverse=True)
    full = model.predict(torch.tensor([history[-12:]]))[0]
    probs = torch.softmax(full, 0)
    assert recs[0].item == int(full.argmax())
    assert recs[0].probability == pytest.approx(float(probs[recs[0].item]), rel=1e-5)
    assert recs[0].title == catalogue.titles[recs[0].item]
    hidden = top_k(model, history, 10, exclude_seen=True, catalogue=catalogue)
    assert not {r.item for r in hidden} & set(history)


def test_catalogue_resolves_titles_and_ids_and_suggests():
    cat = Catalogue([10, 20, 30], ["Toy Story (1995)", "Heat (1995)", "Casino (1995)"])
    assert cat.resolve("toy story (1995)") == 1
    assert cat.resolve("30") == 3
    with pytest.raises(SeqrecError, match="did you mean 'Toy Story \\(1995\\)'"):
        cat.resolve("Toy Stor (1995)")
    assert cat.search("heat")[0] == (2, "Heat (1995)")


def test_a_title_shared_by_two_items_asks_for_the_id():
    cat = Catalogue([10, 20, 30], ["Hamlet (1996)", "Heat (1995)", "Hamlet (1996)"])
    with pytest.raises(SeqrecError, match=r"belongs to 2 items \(ids 10, 30\); give the item id"):
        cat.resolve("hamlet (1996)")
    assert cat.resolve("30") == 3 and cat.resolve("Heat (1995)") == 2
    assert cat.search("hamlet") == [(1, "Hamlet (1996)"), (3, "Hamlet (1996)")]
    assert {(1, "Hamlet (1996)"), (3, "Hamlet (1996)")} <= set(cat.search("Hamlet (1997)"))


def test_cli_recommend_by_user_and_by_history(trained, capsys):
    path, registry = trained
    _, catalogue, histories, _ = load_for_inference(path, registry)
    user = histories.user_ids[3]
    assert seqrec_core.cli.main(["recommend", str(path), "--user", str(user)]) == 0
    out = capsys.readouterr().out
    assert f"top-10 for user {user}" in out and out.count("\n│") >= 10
    title = catalogue.titles[5]
    assert seqrec_core.cli.main(["recommend", str(path), "--history", title, "7", "-k", "3"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # undo rich's line wrapping
    assert "top-3 for the given history" in out and f"last watched: {catalogue.titles[7]}" in out
    assert seqrec_core.cli.main(["recommend", str(path), "--user", "no-such-user"]) == 2
    assert "unknown user" in capsys.readouterr().err
    assert (
        seqrec_core.cli.main(["recommend", str(path.parent / "missing.safetensors"), "--user", "1"])
        == 2
    )
