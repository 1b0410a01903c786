"""The example third-party plugin in ``examples/seqrec-markov``: it registers, runs
through a recipe like a built-in model, declares its entry point correctly and
computes the transition probabilities it documents."""

from __future__ import annotations

import importlib
import io
import tomllib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import BaseModel, ConfigDict
from rich.console import Console

import seqrec_metrics
import seqrec_pop
from seqrec_core import hookimpl
from seqrec_core.data import RawData, build_sequences
from seqrec_core.errors import RecipeError, SeqrecError
from seqrec_core.plugins import load_plugins
from seqrec_core.recipe import load_recipe
from seqrec_core.run import run_recipe

EXAMPLE_DIR = Path(__file__).resolve().parents[1] / "examples" / "seqrec-markov"


@pytest.fixture
def markov(monkeypatch):
    """The example's plugin module, imported from its source tree (not installed)."""
    monkeypatch.syspath_prepend(str(EXAMPLE_DIR))
    return importlib.import_module("seqrec_markov")


class CyclesOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_users: int = 300
    n_items: int = 40
    length: int = 12
    seed: int = 0


class Cycles:
    """Every user walks 1 → 2 → … → n_items → 1 … from a random start: the next
    item is fully determined by the last one, while popularity is nearly flat."""

    name = "cycles"
    Options = CyclesOptions

    def load(self, options: CyclesOptions) -> RawData:
        rng = np.random.default_rng(options.seed)
        starts = rng.integers(0, options.n_items, size=options.n_users)
        steps = np.arange(options.length)
        items = (starts[:, None] + steps[None, :]) % options.n_items + 1
        users = np.repeat(np.arange(options.n_users), options.length)
        return RawData(pd.DataFrame({"user": users, "item": items.ravel()}))

    def fingerprint(self, options: CyclesOptions) -> str:
        return "generated-in-test-v1"


class CyclesPlugin:
    name = "test_cycles"

    @hookimpl
    def register_datasets(self, register):
        register(Cycles)


def _registry(markov_module):
    return load_plugins(
        extra=[markov_module, seqrec_pop, seqrec_metrics, CyclesPlugin()],
        use_entry_points=False,
    )


def _write_recipe(tmp_path: Path, model: str) -> Path:
    path = tmp_path / "cycles_markov.yaml"
    path.write_text(
        f"""\
dataset: {{name: cycles}}
model: {model}
train: {{device: cpu, monitor: NDCG@10}}
eval: {{ks: [10], metrics: [ndcg, hr]}}
callbacks: []
output: {{runs_dir: {tmp_path / "runs"}, checkpoints_dir: {tmp_path / "checkpoints"}}}
""",
        encoding="utf-8",
    )
    return path


def test_markov_runs_through_a_recipe_and_beats_pop(markov, tmp_path, monkeypatch):
    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))
    registry = _registry(markov)
    assert registry.plugin_of("models", "markov") == "seqrec_markov"
    quiet = Console(file=io.StringIO())
    path = _write_recipe(tmp_path, "{name: markov, smoothing: 0.5}")

    recipe = load_recipe(path, registry)
    assert recipe.model_options.smoothing == 0.5
    assert recipe.model_options.pop_weight == 0.1  # the declared default
    markov_run = run_recipe(recipe, registry, quiet)

    # Same file, model swapped on the "command line"; smoothing is dropped with it.
    pop_recipe = load_recipe(path, registry, ["model.name=pop", "name=cycles_pop"])
    pop_run = run_recipe(pop_recipe, registry, quiet)

    markov_ndcg = markov_run.metrics["test"]["NDCG@10"]
    pop_ndcg = pop_run.metrics["test"]["NDCG@10"]
    assert markov_ndcg > 0.99  # the next item is deterministic
    assert pop_ndcg < 0.5
    assert markov_ndcg > pop_ndcg + 0.5
    assert (tmp_path / "runs" / "cycles_markov" / "metrics.json").is_file()


def test_pyproject_declares_an_importable_entry_point(markov):
    project = tomllib.loads((EXAMPLE_DIR / "pyproject.toml").read_text("utf-8"))["project"]
    assert project["name"] == "seqrec-markov"
    assert "seqrec" in project["dependencies"]
    entry_points = project["entry-points"]["seqrec"]
    assert entry_points == {"markov": "seqrec_markov"}
    module = importlib.import_module(entry_points["markov"])
    assert module is markov
    # What pluggy would load from that entry point registers the model "markov".
    registry = load_plugins(extra=[module], use_entry_points=False)
    assert registry.names("models") == ["markov"]
    assert registry.get("models", "markov").Options is module.MarkovOptions
    assert (EXAMPLE_DIR / "README.md").is_file()


def test_unknown_model_option_suggests_the_right_one(markov, tmp_path):
    registry = _registry(markov)
    path = _write_recipe(tmp_path, "{name: markov, smoothin: 0.5}")
    with pytest.raises(RecipeError, match="did you mean 'smoothing'") as err:
        load_recipe(path, registry)
    assert f"{path}:2" in str(err.value)  # file and line of the bad key


def _toy(markov, smoothing: float, pop_weight: float):
    # Leave-one-out keeps all but the last two items of a user with >= 3 for training.
    sequences = {
        "a": [1, 2, 3, 1, 2],  # train 1 2 3   → 1→2, 2→3
        "b": [1, 2, 1, 3],  # train 1 2     → 1→2
        "c": [2, 1],  # train 2 1 (too short to evaluate) → 2→1
        "d": [3, 1, 1, 2, 3],  # train 3 1 1   → 3→1, 1→1
    }
    df = pd.DataFrame(
        [(user, item) for user, seq in sequences.items() for item in seq], columns=["user", "item"]
    )
    data = build_sequences("toy", df)
    model = markov.Markov(markov.MarkovOptions(smoothing=smoothing, pop_weight=pop_weight), 3)
    model.prepare(data)
    return model, data


def test_predict_matches_hand_computed_probabilities(markov):
    model, data = _toy(markov, smoothing=0.5, pop_weight=0.2)
    # Training counts: 1→1 ×1, 1→2 ×2, 2→1 ×1, 2→3 ×1, 3→1 ×1.
    # Popularity of items 1, 2, 3 in the training parts: 5, 3, 2 of 10.
    # P(j | i) = (C[i, j] + 0.5) / (row total + 0.5 · 3 items)
    F = Fraction
    p_next = {
        1: [F(3, 2) / F(9, 2), F(5, 2) / F(9, 2), F(1, 2) / F(9, 2)],  # 1/3, 5/9, 1/9
        2: [F(3, 2) / F(7, 2), F(1, 2) / F(7, 2), F(3, 2) / F(7, 2)],  # 3/7, 1/7, 3/7
        3: [F(3, 2) / F(5, 2), F(1, 2) / F(5, 2), F(1, 2) / F(5, 2)],  # 3/5, 1/5, 1/5
    }
    pop = [F(5, 10), F(3, 10), F(2, 10)]
    expected = [
        [0.8 * float(p) + 0.2 * float(q) for p, q in zip(p_next[i], pop, strict=True)]
        for i in (1, 2, 3)
    ]

    # Left-padded histories ending in items 1, 2, 3: only the last column counts.
    seqs = torch.tensor([[0, 0, 1], [3, 3, 2], [2, 1, 3]])
    scores = model.predict(seqs)
    assert scores.shape == (3, 4)
    assert torch.isneginf(scores[:, 0]).all()  # padding is never recommended
    # Scores are log-probabilities; the probabilities sum to 1 over the items.
    torch.testing.assert_close(scores[:, 1:].exp(), torch.tensor(expected))
    torch.testing.assert_close(scores[:, 1:].exp().sum(dim=1), torch.ones(3))
    assert expected[0][0] == pytest.approx(0.8 / 3 + 0.1)

    # Through the data path the engine uses: user "a"'s test history ends in 1.
    user_a = np.array([0])
    history = torch.from_numpy(data.padded("test", user_a, model.max_len))
    assert history.tolist() == [[1]]
    torch.testing.assert_close(model.predict(history)[0, 1:].exp(), torch.tensor(expected[0]))


def test_no_smoothing_and_empty_history_fall_back_to_popularity(markov):
    model, _ = _toy(markov, smoothing=0.0, pop_weight=0.2)
    scores = model.predict(torch.tensor([[0, 0]]))  # nothing seen: a zero counts row
    assert not torch.isnan(scores).any()
    torch.testing.assert_close(scores[0, 1:].exp(), 0.2 * torch.tensor([0.5, 0.3, 0.2]))


def test_too_many_items_is_a_clear_error(markov):
    with pytest.raises(SeqrecError, match="at most 20,000 items"):
        markov.Markov(markov.MarkovOptions(), markov.MAX_ITEMS + 1)


def test_minimal_plugin_in_docs_works(tmp_path, monkeypatch):
    """The one-file plugin in docs/plugins.md is real code: it registers, its
    options validate through a recipe, and it ranks as its docstring says."""
    docs = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text("utf-8")
    block = docs.split("<!-- tested:", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "seqrec_recent_doc.py").write_text(block, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    recent = importlib.import_module("seqrec_recent_doc")

    registry = load_plugins(
        extra=[recent, seqrec_pop, seqrec_metrics, CyclesPlugin()], use_entry_points=False
    )
    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))
    recipe = load_recipe(
        None,
        registry,
        data={
            "name": "recent",
            "dataset": {"name": "cycles"},
            "model": {"name": "recent", "max_len": 5},
            "train": {"device": "cpu", "monitor": "NDCG@10"},
            "eval": {"ks": [10], "metrics": ["ndcg"]},
            "callbacks": [],
            "output": {
                "runs_dir": str(tmp_path / "runs"),
                "checkpoints_dir": str(tmp_path / "checkpoints"),
            },
        },
    )
    result = run_recipe(recipe, registry, Console(file=io.StringIO()))
    assert 0.0 <= result.metrics["test"]["NDCG@10"] <= 1.0

    model = registry.get("models", "recent")(recipe.model_options, 5)
    assert model.max_len == 5
    model.share.copy_(torch.tensor([0.0, 0.1, 0.3, 0.2, 0.15, 0.25]))
    order = model.predict(torch.tensor([[0, 0, 5, 1, 4]])).argsort(descending=True)[0]
    assert order.tolist()[:5] == [4, 1, 5, 2, 3]  # recent first, then popular; pad last
