"""The ``lstm`` model plugin (LSTM and GRU4Rec): shapes, causality, padding,
streaming, training, checkpoints, options and its recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import LossRecorder, model_registry, synthetic_recipe, trained_and_reloaded

import seqrec_console
import seqrec_files
import seqrec_gpu
import seqrec_lstm
import seqrec_metrics
import seqrec_movielens
import seqrec_tensorboard
from seqrec_core.data import load_dataset
from seqrec_core.errors import RecipeError
from seqrec_core.plugins import load_plugins
from seqrec_core.recipe import load_recipe
from seqrec_core.train import Trainer

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
CELLS = ["lstm", "gru"]


def make_model(cell: str = "lstm", n_items: int = 30, **options) -> seqrec_lstm.LSTMRec:
    torch.manual_seed(0)
    opts = seqrec_lstm.LSTMOptions(cell=cell, **{"max_len": 8, "dim": 16, **options})
    return seqrec_lstm.LSTMRec(opts, n_items).eval()


@pytest.fixture
def registry(monkeypatch, tmp_path):
    return model_registry(monkeypatch, tmp_path, seqrec_lstm)


def make_recipe(registry, tmp_path, model: dict, **train):
    return synthetic_recipe(registry, tmp_path, model, **{"epochs": 5, **train})


Losses = LossRecorder


# ------------------------------------------------------------------ the network


@pytest.mark.parametrize("cell", CELLS)
def test_shapes(cell):
    model = make_model(cell, layers=2)
    seqs = torch.tensor([[0, 0, 3, 7, 9], [1, 2, 3, 4, 5], [0, 0, 0, 0, 0]])
    with torch.no_grad():
        hidden = model.encode(seqs)
        scores = model.predict(seqs)
    assert hidden.shape == (3, 5, 16)
    assert scores.shape == (3, 31) and scores.dtype == torch.float32
    assert torch.isinf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
    assert (hidden[0, :2] == 0).all() and (hidden[2] == 0).all()  # padding outputs are zero
    assert model.score(hidden[:, -1], torch.tensor([[1, 2], [3, 4], [5, 6]])).shape == (3, 2)
    # Longer input than max_len: only the last max_len items are read.
    long = torch.arange(1, 13).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(model.predict(long), model.predict(long[:, -8:]))


@pytest.mark.parametrize("cell", CELLS)
def test_a_later_item_never_changes_earlier_outputs(cell):
    model = make_model(cell, layers=2)
    seq = torch.tensor([[0, 0, 3, 7, 9, 2, 5, 11]])
    changed = seq.clone()
    changed[0, 5] = 20
    with torch.no_grad():
        a, b = model.encode(seq), model.encode(changed)
    assert torch.equal(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


@pytest.mark.parametrize("cell", CELLS)
def test_left_padding_does_not_change_outputs(cell):
    model = make_model(cell, layers=2)
    with torch.no_grad():
        padded = model.encode(torch.tensor([[0, 0, 3, 7, 9]]))
        short = model.encode(torch.tensor([[3, 7, 9]]))
        # The same rows batched with rows of other lengths.
        batch = model.encode(torch.tensor([[0, 0, 3, 7, 9], [4, 5, 6, 8, 1], [0, 0, 0, 0, 2]]))
        naive, _ = model._run(torch.tensor([[0, 0, 3, 7, 9]]))  # RNN run over the padding
    assert torch.allclose(padded[:, 2:], short, atol=1e-6)
    assert torch.allclose(batch[:1], padded, atol=1e-6)
    # Reading the padding would have changed the state: the test can tell.
    assert not torch.allclose(naive[:, -1], short[:, -1], atol=1e-4)


def test_gru_cell_is_a_gru():
    assert isinstance(make_model("gru").rnn, torch.nn.GRU)
    assert isinstance(make_model("lstm").rnn, torch.nn.LSTM)
    two = make_model("lstm", layers=2, dropout=0.3)
    assert two.rnn.num_layers == 2 and two.rnn.dropout == 0.3
    assert make_model("lstm", layers=1, dropout=0.3).rnn.dropout == 0.0  # no layer to drop between


# ------------------------------------------------------------------ streaming


@pytest.mark.parametrize("cell", CELLS)
def test_streaming_equals_recompute_within_max_len(cell):
    max_len = 24
    model = make_model(cell, n_items=50, layers=2, max_len=max_len, dim=32)
    gen = torch.Generator().manual_seed(1)
    for _ in range(6):
        length = int(torch.randint(2, max_len + 1, (1,), generator=gen))
        history = torch.randint(1, 51, (length,), generator=gen)
        k = int(torch.randint(0, length, (1,), generator=gen))
        state = model.init_state(history[:k])
        for t in range(k, length):
            state, scores = model.step(state, int(history[t]))
            with torch.no_grad():
                expected = model.predict(history[: t + 1].unsqueeze(0))[0]
            assert scores.shape == (51,) and scores[0] == -torch.inf
            assert torch.equal(scores[1:].topk(10).indices, expected[1:].topk(10).indices)
            torch.testing.assert_close(scores[1:], expected[1:], rtol=1e-4, atol=1e-5)


def test_init_state_reads_only_the_last_max_len_items():
    model = make_model("lstm", max_len=8)
    history = torch.arange(1, 21)
    state = model.init_state(history)
    with torch.no_grad():
        expected = model.encode(history.unsqueeze(0))[0, -1]
    torch.testing.assert_close(state.output, expected, rtol=1e-5, atol=1e-6)
    assert model.init_state(torch.tensor([], dtype=torch.long)).hidden is None


# ------------------------------------------------------------------ training


@pytest.mark.parametrize("cell", CELLS)
def test_learns_and_beats_pop(registry, tmp_path, cell):
    model = {"name": "lstm", "cell": cell, "max_len": 16, "dim": 16, "dropout": 0.0}
    recipe = make_recipe(registry, tmp_path, model)
    data = load_dataset(recipe, registry)
    losses = Losses()
    rnn = Trainer(recipe, registry, data, 0, cell, torch.device("cpu"), [losses]).fit()
    pop_recipe = make_recipe(registry, tmp_path, {"name": "pop"})
    pop = Trainer(pop_recipe, registry, data, 0, "pop", torch.device("cpu")).fit()
    assert losses.values[-1] < losses.values[0] * 0.9
    assert rnn.test["NDCG@10"] > pop.test["NDCG@10"] + 0.1


def test_checkpoint_round_trip_gives_same_scores(registry, tmp_path):
    model = {"name": "lstm", "cell": "gru", "max_len": 16, "dim": 16, "layers": 2}
    recipe = make_recipe(registry, tmp_path, model, epochs=1)
    trainer, data, loaded, seqs = trained_and_reloaded(recipe, registry, 16)
    assert isinstance(loaded, seqrec_lstm.LSTMRec) and loaded.options == recipe.model_options
    with torch.no_grad():
        assert torch.equal(loaded.predict(seqs), trainer.model.predict(seqs))


# ------------------------------------------------------------------ options and recipes


@pytest.mark.parametrize(
    ("model", "needles"),
    [
        (
            {"name": "lstm", "dimm": 8},
            ["unknown key 'dimm' for model 'lstm'", "did you mean 'dim'?", "cell"],
        ),
        ({"name": "lstm", "cell": "gur"}, ["model.cell", "'lstm'", "did you mean 'gru'?"]),
        ({"name": "lstm", "dropout": 1.0}, ["model.dropout", "got 1.0"]),
    ],
)
def test_bad_options_are_recipe_errors(registry, tmp_path, model, needles):
    with pytest.raises(RecipeError) as err:
        make_recipe(registry, tmp_path, model)
    for needle in needles:
        assert needle in str(err.value)


@pytest.mark.parametrize("name", ["ml100k_lstm", "ml1m_lstm"])
def test_recipes_parse(monkeypatch, name):
    monkeypatch.delenv("SEQREC_DISABLE_PLUGINS", raising=False)
    registry = load_plugins(
        extra=[
            seqrec_movielens,
            seqrec_files,
            seqrec_lstm,
            seqrec_metrics,
            seqrec_console,
            seqrec_tensorboard,
            seqrec_gpu,
        ],
        use_entry_points=False,
    )
    recipe = load_recipe(RECIPES / f"{name}.yaml", registry)
    assert recipe.name == name and recipe.model.name == "lstm"
    dim = 256 if name.startswith("ml1m") else 64  # ML-1M: chosen on validation (RQ2 grid)
    assert recipe.model_options == seqrec_lstm.LSTMOptions(max_len=200, dim=dim, dropout=0.2)
    assert recipe.train.monitor == "NDCG@10"
    # ML-100K: 8 steps per epoch; patience 10 stopped two of three seeds on the popularity plateau
    assert recipe.train.patience == (30 if name.startswith("ml100k") else 10)
    assert [c.name for c in recipe.callbacks] == ["console", "tensorboard", "gpu_monitor"]
    gru = load_recipe(RECIPES / f"{name}.yaml", registry, ["model.cell=gru"])
    assert gru.model_options.cell == "gru"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cell", CELLS)
def test_cuda_matches_cpu_and_runs_under_bf16_autocast(cell):
    model = make_model(cell, layers=2)
    seqs = torch.tensor([[0, 0, 3, 7, 9], [1, 2, 3, 4, 5]])
    with torch.no_grad():
        cpu = model.encode(seqs)
        gpu = model.cuda().encode(seqs.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-4)
    model.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        hidden = model.encode(seqs.cuda())
    hidden.float().sum().backward()
    assert torch.isfinite(model.item_emb.weight.grad).all()
