"""The recipes shipped in ``recipes/``: every file validates against the real
plugins, the dataset × model grid is complete, recipes for data not at hand say
so, and a short CPU run of each ML-100K recipe beats POP.

(``test_recipe.py`` tests the loader itself on an in-test plugin.)

The ML-100K runs read a small fixture written in the official ``u.data`` /
``u.item`` format, with structure a next-item model can learn and POP cannot:
each user stays in one taste cluster of items and mostly walks that cluster's
item chain. The recipes are shrunk for speed only through ``-o``-style
overrides (epochs, batch size, max_len); everything else is the recipe's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

import seqrec_bert4rec
import seqrec_console
import seqrec_files
import seqrec_gpu
import seqrec_lstm
import seqrec_metrics
import seqrec_movielens
import seqrec_pop
import seqrec_sasrec
import seqrec_splits
import seqrec_steam
import seqrec_synthetic
import seqrec_tensorboard
import seqrec_xlstm
from seqrec_core.plugins import load_plugins
from seqrec_core.recipe import load_recipe
from seqrec_core.run import run_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
DATASETS = ("ml100k", "ml1m", "ml10m", "ml20m", "steam")
MODELS = ("sasrec", "bert4rec", "lstm", "xlstm")
#: Datasets whose recipes carry paper settings that were not run here.
NOT_AT_HAND = ("ml10m", "ml20m", "steam")
NOT_RUN_NOTE = "not run here: dataset not available offline"
#: (dataset plugin, MovieLens variant or None, max_len) the recipes of each dataset use.
EXPECTED_DATA = {
    "ml100k": ("movielens", "ml-100k", 200),
    "ml1m": ("files", None, 200),
    "ml10m": ("movielens", "ml-10m", 200),
    "ml20m": ("movielens", "ml-20m", 200),
    "steam": ("steam", None, 50),
}
#: Recipes whose max_len was tuned away from their dataset's default (on validation).
TUNED_MAX_LEN = {"ml100k_bert4rec": 50}
ALL_RECIPES = sorted(RECIPES.glob("*.yaml"))


@pytest.fixture(scope="module")
def registry():
    """The built-in plugins (no entry points, so nothing installed next to seqrec
    can change what these recipes resolve to)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SEQREC_DISABLE_PLUGINS", raising=False)
        return load_plugins(
            extra=[
                seqrec_synthetic,
                seqrec_movielens,
                seqrec_files,
                seqrec_steam,
                seqrec_splits,
                seqrec_pop,
                seqrec_sasrec,
                seqrec_bert4rec,
                seqrec_lstm,
                seqrec_xlstm,
                seqrec_metrics,
                seqrec_console,
                seqrec_tensorboard,
                seqrec_gpu,
            ],
            use_entry_points=False,
        )


# ------------------------------------------------------------------ every recipe validates

SWEEPS = sorted((RECIPES / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_every_cell_of_every_shipped_sweep_validates(registry, path):
    from seqrec_core.research.sweep import cell_recipe, expand, load_sweep

    sweep = load_sweep(path)
    cells = expand(sweep)
    assert cells and len({c.name for c in cells}) == len(cells)
    for cell in cells:
        recipe = cell_recipe(sweep, cell, registry)
        assert recipe.name == cell.name and recipe.train.seeds == [cell.seed]


def test_rq1_trains_each_model_with_its_own_recipe(registry):
    from seqrec_core.research.sweep import cell_recipe, expand, load_sweep

    sweep = load_sweep(RECIPES / "sweeps" / "rq1_fractions.yaml")
    full = {
        cell.labels["base"]: cell_recipe(sweep, cell, registry)
        for cell in expand(sweep)
        if cell.labels["user_fraction"] == "1.0" and cell.seed == 42
    }
    assert sorted(full) == [f"ml1m_{m}" for m in sorted(MODELS)]
    for label, recipe in full.items():
        own = load_recipe(RECIPES / f"{label}.yaml", registry)
        assert recipe.model_options == own.model_options
        assert recipe.train.epochs == own.train.epochs and recipe.train.lr == own.train.lr
        assert recipe.train.eval_every == 5


@pytest.mark.parametrize("path", ALL_RECIPES, ids=[p.stem for p in ALL_RECIPES])
def test_recipe_validates(registry, path):
    recipe = load_recipe(path, registry)
    assert recipe.name == path.stem
    assert recipe.train.monitor.split("@")[0] in {"NDCG", "Recall", "HR", "MRR"}
    if path.stem != "quickstart":
        dataset, model = path.stem.split("_")
        assert recipe.model.name == model
        plugin, variant, max_len = EXPECTED_DATA[dataset]
        assert recipe.dataset.name == plugin
        assert getattr(recipe.dataset_options, "variant", None) == variant
        assert recipe.model_options.max_len == TUNED_MAX_LEN.get(path.stem, max_len)
        assert recipe.loss.name == "ce"


def test_the_dataset_by_model_grid_is_complete():
    found = {p.stem for p in ALL_RECIPES}
    grid = {f"{d}_{m}" for d in DATASETS for m in MODELS}
    assert grid - found == set(), "missing recipes"
    assert found - grid == {"quickstart"}, "recipes outside the grid; add them to DATASETS/MODELS"


@pytest.mark.parametrize("dataset", NOT_AT_HAND)
@pytest.mark.parametrize("model", MODELS)
def test_recipes_not_run_here_say_so_and_cite_their_source(dataset, model):
    header = (RECIPES / f"{dataset}_{model}.yaml").read_text().split("\nname:")[0]
    assert NOT_RUN_NOTE in header
    assert "Sources:" in header


# ------------------------------------------------------------------ ML-100K beats POP

N_USERS, N_CLUSTERS, CLUSTER_SIZE = 300, 10, 20
FOLLOW, STAY = 0.6, 0.3  # next in the chain; any item of the cluster; else a popular item
SHORT_RUN = ["train.epochs=10", "train.batch_size=16", "model.max_len=50"]


def write_ml100k_fixture(directory: Path, seed: int = 0) -> Path:
    """``u.data`` (tab-separated user, item, rating, timestamp; rows not in time
    order, like the real file) and ``u.item`` (pipe-separated, Latin-1, 19 genre
    flags) for ``N_USERS`` users of 20-40 ratings over 200 movies."""
    rng = np.random.default_rng(seed)
    n_items = N_CLUSTERS * CLUSTER_SIZE
    chains = rng.permutation(np.arange(1, n_items + 1)).reshape(N_CLUSTERS, CLUSTER_SIZE)
    where = {int(item): (c, k) for c, chain in enumerate(chains) for k, item in enumerate(chain)}
    by_popularity = rng.permutation(np.arange(1, n_items + 1))
    zipf = 1.0 / np.arange(1, n_items + 1)
    zipf /= zipf.sum()
    rows = []
    for user in range(1, N_USERS + 1):
        cluster = int(rng.integers(N_CLUSTERS))
        item = int(rng.choice(chains[cluster]))
        t = 874_724_710 + int(rng.integers(10**7))
        for _ in range(int(rng.integers(20, 41))):
            rows.append(f"{user}\t{item}\t{rng.integers(1, 6)}\t{t}\n")
            t += int(rng.integers(1, 3600))
            u = rng.random()
            if u < FOLLOW:
                c, k = where[item]
                item = int(chains[c][(k + 1) % CLUSTER_SIZE])
            elif u < FOLLOW + STAY:
                item = int(rng.choice(chains[cluster]))
            else:
                item = int(rng.choice(by_popularity, p=zipf))
    directory.mkdir(parents=True)
    (directory / "u.data").write_text("".join(rows[i] for i in rng.permutation(len(rows))))
    flags = "|".join("0" * 19)
    movies = (
        f"{i}|Movie {i} (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Movie%20{i}|{flags}\n"
        for i in range(1, n_items + 1)
    )
    (directory / "u.item").write_bytes("".join(movies).encode("latin-1"))
    return directory


@pytest.fixture(scope="module")
def ml100k_run(registry, tmp_path_factory):
    """``run(recipe_path, *overrides) -> test metrics``: the run entry point on
    the fixture, with outputs and nothing else under a temporary folder."""
    root = tmp_path_factory.mktemp("ml100k_recipes")
    data = write_ml100k_fixture(root / "ml-100k")
    common = [
        f"dataset.path={data}",
        "dataset.cache=false",
        "train.device=cpu",
        "callbacks=[]",
        f"output.runs_dir={root / 'runs'}",
        f"output.checkpoints_dir={root / 'checkpoints'}",
    ]

    def run(path: Path, *overrides: str) -> dict[str, float]:
        recipe = load_recipe(path, registry, [*common, *overrides])
        result = run_recipe(recipe, registry, Console(quiet=True), samples=0)
        return result.metrics["test"]

    return run


@pytest.fixture(scope="module")
def pop_ndcg(ml100k_run) -> float:
    return ml100k_run(RECIPES / "ml100k_sasrec.yaml", "model.name=pop", "name=pop")["NDCG@10"]


@pytest.mark.parametrize("model", MODELS)
def test_a_short_cpu_run_of_each_ml100k_recipe_beats_pop(ml100k_run, pop_ndcg, model):
    assert 0.02 < pop_ndcg < 0.1  # the fixture's popularity signal is weak, not absent
    ndcg = ml100k_run(RECIPES / f"ml100k_{model}.yaml", *SHORT_RUN)["NDCG@10"]
    assert ndcg > 2 * pop_ndcg, f"{model}: test NDCG@10 {ndcg:.4f} vs POP {pop_ndcg:.4f}"


def test_the_fixture_is_in_the_official_ml100k_format(tmp_path):
    folder = write_ml100k_fixture(tmp_path / "ml-100k")
    raw = seqrec_movielens.MovieLens().load(seqrec_movielens.MovieLensOptions(path=str(folder)))
    df = raw.interactions
    assert list(df.columns) == ["user", "item", "rating", "timestamp"]
    assert df["user"].nunique() == N_USERS and not df["timestamp"].is_monotonic_increasing
    assert raw.items.loc[7, "title"] == "Movie 7 (1995)" and raw.items.loc[7, "year"] == 1995
    assert set(df["rating"]) == {1, 2, 3, 4, 5}
