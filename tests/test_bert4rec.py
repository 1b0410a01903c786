"""The ``bert4rec`` model plugin: ids and shapes, masking, the appended [MASK],
bidirectionality, streaming, training, checkpoints, options and its recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import LossRecorder, model_registry, synthetic_recipe, trained_and_reloaded

import seqrec_bert4rec
import seqrec_console
import seqrec_files
import seqrec_gpu
import seqrec_metrics
import seqrec_movielens
import seqrec_tensorboard
from seqrec_core.data import load_dataset
from seqrec_core.errors import RecipeError
from seqrec_core.plugins import load_plugins
from seqrec_core.recipe import load_recipe
from seqrec_core.train import Trainer

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def make_model(n_items: int = 30, **options) -> seqrec_bert4rec.BERT4Rec:
    torch.manual_seed(0)
    opts = seqrec_bert4rec.BERT4RecOptions(**{"max_len": 8, "dim": 16, "heads": 2, **options})
    return seqrec_bert4rec.BERT4Rec(opts, n_items).eval()


@pytest.fixture
def registry(monkeypatch, tmp_path):
    return model_registry(monkeypatch, tmp_path, seqrec_bert4rec)


def make_recipe(registry, tmp_path, model: dict, **train):
    return synthetic_recipe(registry, tmp_path, model, **{"epochs": 10, **train})


SMALL = {"name": "bert4rec", "max_len": 16, "dim": 16, "blocks": 1, "heads": 2, "dropout": 0.0}


Losses = LossRecorder


# ------------------------------------------------------------------ ids and shapes


def test_ids_and_shapes():
    model = make_model(n_items=30)
    assert model.mask_id == 31 and model.item_emb.num_embeddings == 32
    assert model.item_embeddings().shape == (31, 16)
    assert model.output_embeddings().shape == (31, 16)
    seqs = torch.tensor([[0, 0, 3, 7, 9], [1, 2, 3, 4, 5], [0, 0, 0, 0, 0]])
    with torch.no_grad():
        hidden = model.encode(seqs)
        scores = model.predict(seqs)
    assert hidden.shape == (3, 5, 16) and torch.isfinite(hidden).all()
    assert scores.shape == (3, 31) and scores.dtype == torch.float32  # [MASK] is not a candidate
    assert torch.isinf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
    with pytest.raises(ValueError, match="divisible"):
        seqrec_bert4rec.BERT4RecOptions(dim=10, heads=3)


# ------------------------------------------------------------------ masking


def test_masking_rules():
    model = make_model(n_items=30, mask_prob=0.2)
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(0, 51, (4000,), generator=gen)
    lengths[:50] = 0  # empty rows
    seqs = torch.randint(1, 31, (4000, 50), generator=gen)
    seqs[torch.arange(50)[None, :] < (50 - lengths)[:, None]] = 0  # left padding
    inputs, labels = model.mask_batch(seqs, gen)
    masked = inputs == model.mask_id
    assert torch.equal(masked, labels != 0)  # loss exactly where [MASK] was put
    assert torch.equal(labels[masked], seqs[masked])  # labels are the original ids
    assert torch.equal(inputs[~masked], seqs[~masked])  # everything else untouched
    assert not (masked & (seqs == 0)).any()  # padding is never masked
    assert (labels <= model.n_items).all()  # [MASK] never a label
    assert torch.equal(masked.any(1), lengths > 0)  # >= 1 masked item per non-empty row
    long = lengths >= 30  # the one-item guarantee barely moves the rate of long rows
    rate = masked[long].sum() / (seqs[long] != 0).sum()
    assert abs(float(rate) - 0.2) < 0.01


def test_a_row_with_nothing_drawn_masks_its_most_recent_item():
    model = make_model(mask_prob=1e-6)
    seqs = torch.tensor([[0, 0, 4, 5, 6], [1, 2, 3, 4, 5]])
    inputs, labels = model.mask_batch(seqs, torch.Generator().manual_seed(0))
    assert inputs.tolist() == [[0, 0, 4, 5, 31], [1, 2, 3, 4, 31]]
    assert labels.tolist() == [[0, 0, 0, 0, 6], [0, 0, 0, 0, 5]]


def test_masking_follows_the_generator():
    model = make_model()
    seqs = torch.randint(1, 31, (64, 8), generator=torch.Generator().manual_seed(0))
    a = model.mask_batch(seqs, torch.Generator().manual_seed(5))
    b = model.mask_batch(seqs, torch.Generator().manual_seed(5))
    c = model.mask_batch(seqs, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


# ------------------------------------------------------------------ predict and attention


def spy_encode(model, monkeypatch) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    real = model.encode

    def encode(seqs):
        seen.append(seqs.clone())
        return real(seqs)

    monkeypatch.setattr(model, "encode", encode)
    return seen


def test_predict_appends_exactly_one_mask(monkeypatch):
    model = make_model(max_len=6)
    seen = spy_encode(model, monkeypatch)
    short = torch.tensor([[0, 0, 3, 7], [1, 2, 3, 4]])
    full = torch.tensor([[1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 9]])
    longer = torch.arange(1, 11).unsqueeze(0)
    with torch.no_grad():
        model.predict(short)
        model.predict(full)
        model.predict(longer)
    assert seen[0].tolist() == [[0, 0, 3, 7, 31], [1, 2, 3, 4, 31]]
    # Full width: the oldest column makes room for the [MASK].
    assert seen[1].tolist() == [[2, 3, 4, 5, 6, 31], [0, 0, 0, 0, 9, 31]]
    assert seen[2].tolist() == [[6, 7, 8, 9, 10, 31]]
    for s in seen:
        assert s.shape[1] <= 6 and (s[:, -1] == 31).all() and (s[:, :-1] != 31).all()


def test_predict_scores_the_mask_position():
    model = make_model()
    seqs = torch.tensor([[0, 3, 7, 9]])
    with torch.no_grad():
        hidden = model.encode(torch.tensor([[0, 3, 7, 9, 31]]))[:, -1]
        expected = model.score(hidden)
        expected[:, 0] = -torch.inf
        torch.testing.assert_close(model.predict(seqs), expected)


def test_attention_is_bidirectional_and_ignores_padding():
    model = make_model()
    seq = torch.tensor([[0, 0, 3, 7, 9, 2, 5, 11]])
    with torch.no_grad():
        base = model.encode(seq)
        later = seq.clone()
        later[0, 6] = 20
        after = model.encode(later)
        earlier = seq.clone()
        earlier[0, 3] = 20
        before = model.encode(earlier)
        short = model.encode(seq[:, 2:])
    assert not torch.allclose(base[:, 2:6], after[:, 2:6])  # the future reaches the past
    assert not torch.allclose(base[:, 4:], before[:, 4:])  # and the past the future
    torch.testing.assert_close(base[:, 2:], short, rtol=1e-5, atol=1e-5)  # padding is invisible


# ------------------------------------------------------------------ streaming


def test_streaming_fallback_equals_predict():
    model = make_model(n_items=50, max_len=8)
    gen = torch.Generator().manual_seed(3)
    for length in (3, 8, 15):  # shorter than, equal to and longer than max_len
        history = torch.randint(1, 51, (length,), generator=gen)
        state = model.init_state(history[:1])
        for t in range(1, length):
            state, scores = model.step(state, int(history[t]))
            with torch.no_grad():
                expected = model.predict(history[: t + 1].unsqueeze(0))[0]
            assert scores.shape == (51,)
            torch.testing.assert_close(scores, expected)


# ------------------------------------------------------------------ training


def test_learns_and_beats_pop(registry, tmp_path):
    recipe = make_recipe(registry, tmp_path, SMALL)
    data = load_dataset(recipe, registry)
    losses = Losses()
    bert = Trainer(recipe, registry, data, 0, "bert", torch.device("cpu"), [losses]).fit()
    pop_recipe = make_recipe(registry, tmp_path, {"name": "pop"})
    pop = Trainer(pop_recipe, registry, data, 0, "pop", torch.device("cpu")).fit()
    assert losses.values[-1] < losses.values[0] * 0.9
    assert bert.test["NDCG@10"] > pop.test["NDCG@10"] + 0.1


def test_checkpoint_round_trip_gives_same_scores(registry, tmp_path):
    recipe = make_recipe(registry, tmp_path, {**SMALL, "dropout": 0.2}, epochs=1)
    trainer, data, loaded, seqs = trained_and_reloaded(recipe, registry, 16)
    assert isinstance(loaded, seqrec_bert4rec.BERT4Rec) and loaded.options == recipe.model_options
    assert loaded.item_emb.num_embeddings == data.n_items + 2
    with torch.no_grad():
        assert torch.equal(loaded.predict(seqs), trainer.model.predict(seqs))


# ------------------------------------------------------------------ options and recipes


@pytest.mark.parametrize(
    ("model", "needles"),
    [
        (
            {"name": "bert4rec", "mask_prop": 0.3},
            ["unknown key 'mask_prop' for model 'bert4rec'", "did you mean 'mask_prob'?"],
        ),
        ({"name": "bert4rec", "mask_prob": 0.0}, ["model.mask_prob", "got 0.0"]),
        ({"name": "bert4rec", "max_len": 1}, ["model.max_len", "got 1"]),
        ({"name": "bert4rec", "dim": 10, "heads": 3}, ["divisible"]),
    ],
)
def test_bad_options_are_recipe_errors(registry, tmp_path, model, needles):
    with pytest.raises(RecipeError) as err:
        make_recipe(registry, tmp_path, model)
    for needle in needles:
        assert needle in str(err.value)


@pytest.mark.parametrize("name", ["ml100k_bert4rec", "ml1m_bert4rec"])
def test_recipes_parse(monkeypatch, name):
    monkeypatch.delenv("SEQREC_DISABLE_PLUGINS", raising=False)
    registry = load_plugins(
        extra=[
            seqrec_movielens,
            seqrec_files,
            seqrec_bert4rec,
            seqrec_metrics,
            seqrec_console,
            seqrec_tensorboard,
            seqrec_gpu,
        ],
        use_entry_points=False,
    )
    recipe = load_recipe(RECIPES / f"{name}.yaml", registry)
    assert recipe.name == name and recipe.model.name == "bert4rec"
    ml1m = name == "ml1m_bert4rec"  # ML-100K: max_len 50, tuned on validation
    assert recipe.model_options == seqrec_bert4rec.BERT4RecOptions(
        max_len=200 if ml1m else 50,
        dim=256 if ml1m else 64,
        blocks=2,
        heads=2,
        dropout=0.2,
        mask_prob=0.2,
        emb_init="xavier",
    )
    assert recipe.train.monitor == "NDCG@10"
    if ml1m:  # the whole cosine schedule runs (no early stop), lr 2e-3 after 5 warm-up epochs
        assert recipe.train.patience >= recipe.train.epochs == 400
        assert recipe.train.lr == 2e-3 and recipe.train.scheduler.warmup_epochs == 5
    else:
        assert recipe.train.patience == 20
    assert [c.name for c in recipe.callbacks] == ["console", "tensorboard", "gpu_monitor"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_masking_and_bf16_autocast():
    model = make_model().cuda().train()
    seqs = torch.randint(1, 31, (16, 8), device="cuda")
    inputs, labels = model.mask_batch(seqs, torch.Generator("cuda").manual_seed(0))
    assert inputs.device.type == "cuda" and (labels != 0).any(1).all()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        hidden = model.encode(inputs)
    hidden.float().sum().backward()
    assert torch.isfinite(model.item_emb.weight.grad).all()


def test_last_mask_prob_trains_a_share_of_rows_as_at_inference():
    model = make_model(n_items=30, mask_prob=0.2, last_mask_prob=0.25)
    gen = torch.Generator().manual_seed(0)
    seqs = torch.randint(1, 31, (4000, 40), generator=gen)
    seqs[:, :5] = 0  # left padding
    inputs, labels = model.mask_batch(seqs, gen)
    masked = inputs == model.mask_id
    only_last = masked[:, -1] & (masked.sum(1) == 1)
    # ~25 % chosen rows plus the few whose draw hit only the last item by chance
    assert abs(float(only_last.float().mean()) - 0.25) < 0.03
    assert torch.equal(labels[only_last, -1], seqs[only_last, -1])
    assert torch.equal(inputs[only_last, :-1], seqs[only_last, :-1])  # history intact
    others = ~only_last
    rate = masked[others].sum() / (seqs[others] != 0).sum()
    assert abs(float(rate) - 0.2) < 0.01  # the other rows keep the cloze rate
