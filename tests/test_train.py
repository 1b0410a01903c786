"""Training engine: SASRec, losses, windows, schedulers, early stopping,
checkpoints, resume, NaN handling, seeds."""

from __future__ import annotations

import gc
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import seqrec_metrics
import seqrec_pop
import seqrec_sasrec
import seqrec_synthetic
from seqrec_core import checkpoint as ckpt_io
from seqrec_core import hookimpl, losses
from seqrec_core.data import load_dataset
from seqrec_core.errors import SeqrecError
from seqrec_core.plugins import load_plugins
from seqrec_core.recipe import load_recipe
from seqrec_core.recommend import load_for_inference
from seqrec_core.run import run_recipe
from seqrec_core.train import (
    EarlyStopping,
    GraphStep,
    LossStep,
    LRSchedule,
    SharedGrads,
    Trainer,
    backward_step,
    bucket_widths,
    dense_batch,
    gather_windows,
    length_plan,
    make_micro_batch,
    window_bounds,
    window_tokens,
)


@pytest.fixture
def registry(monkeypatch, tmp_path):
    monkeypatch.delenv("SEQREC_DISABLE_PLUGINS", raising=False)
    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))
    return load_plugins(
        extra=[seqrec_synthetic, seqrec_sasrec, seqrec_pop, seqrec_metrics], use_entry_points=False
    )


def make_recipe(registry, tmp_path, **over):
    data = {
        "name": "t",
        "dataset": {
            "name": "synthetic",
            "n_users": 150,
            "n_items": 40,
            "mean_length": 15,
            "seed": 1,
        },
        "model": {
            "name": "sasrec",
            "max_len": 16,
            "dim": 16,
            "blocks": 1,
            "heads": 2,
            "dropout": 0.0,
        },
        "train": {"epochs": 3, "batch_size": 32, "lr": 0.01, "device": "cpu", "patience": 5},
        "eval": {"ks": [10], "metrics": ["recall", "ndcg", "hr"]},
        "callbacks": [],
        "output": {"runs_dir": str(tmp_path / "runs"), "checkpoints_dir": str(tmp_path / "ckpt")},
    }
    for key, value in over.items():
        section, _, field = key.partition("__")
        if field:
            data[section][field] = value
        else:
            data[section] = value
    return load_recipe(None, registry, data=data)


# ------------------------------------------------------------------ model


def test_sasrec_is_causal_and_ignores_padding():
    model = seqrec_sasrec.SASRec(seqrec_sasrec.SASRecOptions(max_len=8, dim=16, heads=2), 30).eval()
    seq = torch.tensor([[0, 0, 3, 7, 9, 2, 5, 11]])
    changed = seq.clone()
    changed[0, 6:] = torch.tensor([20, 21])
    with torch.no_grad():
        a, b = model.encode(seq), model.encode(changed)
    assert torch.allclose(a[:, 2:6], b[:, 2:6], atol=1e-6)  # earlier positions unchanged
    assert not torch.allclose(a[:, 6:], b[:, 6:])  # later ones do change
    # Left padding does not change the last position's output.
    with torch.no_grad():
        short = model.encode(torch.tensor([[3, 7, 9, 2, 5, 11]]))
    assert torch.allclose(short[:, -1], a[:, -1], atol=1e-5)


def test_sasrec_shapes_and_option_validation():
    model = seqrec_sasrec.SASRec(seqrec_sasrec.SASRecOptions(max_len=5, dim=8, heads=2), 12)
    scores = model.predict(torch.tensor([[0, 1, 2], [4, 5, 6]]))
    assert scores.shape == (2, 13)
    assert torch.isinf(scores[:, 0]).all()
    assert model.score(torch.zeros(2, 8), torch.tensor([[1, 2, 3], [4, 5, 6]])).shape == (2, 3)
    with pytest.raises(ValueError, match="divisible"):
        seqrec_sasrec.SASRecOptions(dim=10, heads=3)


# ------------------------------------------------------------------ losses


def test_full_ce_matches_cross_entropy_without_padding_column():
    torch.manual_seed(0)
    h, w = torch.randn(5, 4), torch.randn(7, 4)
    t = torch.tensor([1, 2, 6, 3, 1])
    expected = F.cross_entropy((h @ w.t())[:, 1:], t - 1)
    assert torch.allclose(losses.full_ce(h, t, w), expected, atol=1e-6)


def test_bce_and_gbce_by_hand():
    h = torch.tensor([[1.0, 0.0]])
    w = torch.tensor([[0.0, 0.0], [2.0, 0.0], [-1.0, 0.0], [0.5, 0.0]])
    t = torch.tensor([1])
    gen = torch.Generator().manual_seed(3)
    neg = torch.randint(1, 4, (1, 2), generator=torch.Generator().manual_seed(3))
    pos_logit = 2.0
    neg_logits = w[neg[0], 0]
    valid = neg[0] != 1
    expected = F.softplus(torch.tensor(-pos_logit)) + (F.softplus(neg_logits) * valid).sum()
    assert torch.allclose(losses.bce(h, t, w, 2, gen), expected, atol=1e-6)
    # gBCE with t = 0 is plain BCE (beta = 1); with t = 1, beta = alpha = k / (n_items - 1).
    g0 = losses.gbce(h, t, w, 2, 0.0, torch.Generator().manual_seed(3))
    assert torch.allclose(g0, expected, atol=1e-6)
    g1 = losses.gbce(h, t, w, 2, 1.0, torch.Generator().manual_seed(3))
    beta = 2 / (3 - 1)
    assert torch.allclose(
        g1, beta * F.softplus(torch.tensor(-pos_logit)) + (F.softplus(neg_logits) * valid).sum()
    )


def test_sampled_softmax_masks_accidental_hits():
    h = torch.tensor([[1.0]])
    w = torch.tensor([[0.0], [1.0]])  # one item: every negative is the target itself
    loss = losses.sampled_softmax(h, torch.tensor([1]), w, 4, torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("loss", ["ce", "sampled_softmax", "bce", "gbce"])
def test_every_loss_trains(registry, tmp_path, loss):
    recipe = make_recipe(registry, tmp_path, loss={"name": loss, "negatives": 8}, train__epochs=2)
    data = load_dataset(recipe, registry)
    rec = Recorder()
    result = Trainer(recipe, registry, data, 0, "t", torch.device("cpu"), [rec]).fit()
    losses_ = [e["train_loss"] for e in rec.epochs]
    assert all(math.isfinite(v) for v in losses_)
    assert losses_[-1] < losses_[0]
    assert result.test and result.best_epoch >= 1


# ------------------------------------------------------------------ windows / schedules


def test_sliding_windows_predict_every_training_target_once(registry, tmp_path):
    recipe = make_recipe(registry, tmp_path)
    data = load_dataset(recipe, registry)
    width = 5
    starts, ends = window_bounds(data, width, "sliding")
    win = gather_windows(
        torch.from_numpy(data.items), torch.from_numpy(starts), torch.from_numpy(ends), width
    )
    # Every (user, target position) pair appears exactly once as a supervised target.
    covered = []
    for s, e in zip(starts, ends, strict=True):
        first = max(s, e - width)
        covered += list(range(first + 1, e))
    tr_start, tr_end = data.history_bounds("train", np.arange(data.n_users))
    expected = [
        p for s, e in zip(tr_start, tr_end, strict=True) if e - s >= 2 for p in range(s + 1, e)
    ]
    assert sorted(covered) == sorted(expected)
    assert win.shape == (len(starts), width)
    last_s, last_e = window_bounds(data, width, "last")
    assert len(last_s) == int(((tr_end - tr_start) >= 2).sum())


def test_gather_windows_left_pads():
    items = torch.arange(1, 11)
    win = gather_windows(items, torch.tensor([0, 6]), torch.tensor([3, 10]), 4)
    assert win.tolist() == [[0, 1, 2, 3], [7, 8, 9, 10]]


@pytest.mark.parametrize("name", ["none", "step", "cosine", "onecycle", "plateau"])
def test_schedules_warm_up_and_decay(registry, tmp_path, name):
    recipe = make_recipe(
        registry,
        tmp_path,
        train__scheduler={"name": name, "warmup_epochs": 1, "step_size": 1, "gamma": 0.5},
    )
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1.0)
    sched = LRSchedule(recipe.train.scheduler, opt, steps_per_epoch=4, epochs=3)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step_batch()
    assert lrs[0] < lrs[3] <= 1.0 + 1e-9  # warm-up ramps up
    if name in ("step", "cosine", "onecycle"):
        assert lrs[-1] < lrs[4]
    if name == "plateau":
        for _ in range(4):
            sched.step_validation(0.1)
        assert opt.param_groups[0]["lr"] < 1.0


# ------------------------------------------------------------------ early stopping


def test_early_stopping_on_a_scripted_sequence():
    stop = EarlyStopping("Recall@10", patience=3)
    seen = []
    for epoch, value in enumerate([0.1, 0.2, 0.15, 0.19, 0.2, 0.18, 0.5], start=1):
        stop.update(epoch, value)
        seen.append(epoch)
        if stop.should_stop:
            break
    assert seen[-1] == 5 and stop.best_epoch == 2 and stop.best_value == 0.2


class Recorder:
    name = "recorder"

    def __init__(self):
        self.epochs, self.stops, self.saved, self.end = [], [], [], None

    @hookimpl
    def on_epoch_end(self, run, event):
        self.epochs.append(event)

    @hookimpl
    def on_early_stop(self, run, event):
        self.stops.append(event)

    @hookimpl
    def on_checkpoint_saved(self, run, event):
        self.saved.append(event)

    @hookimpl
    def on_fit_end(self, run, event):
        self.end = event


def test_trainer_stops_early_on_scripted_metrics(registry, tmp_path, monkeypatch):
    recipe = make_recipe(registry, tmp_path, train__epochs=20, train__patience=2)
    data = load_dataset(recipe, registry)
    values = iter([0.1, 0.3, 0.2, 0.25, 0.9, 0.9])
    trainer = Trainer(recipe, registry, data, 0, "t", torch.device("cpu"), [rec := Recorder()])
    real = trainer.evaluate
    monkeypatch.setattr(
        trainer,
        "evaluate",
        lambda split, filter_seen=None: (
            {"Recall@10": next(values)}
            if split == "valid" and trainer.model.training is not None and len(rec.epochs) < 4
            else real(split, filter_seen)
        ),
    )
    result = trainer.fit()
    assert [e["epoch"] for e in rec.epochs] == [1, 2, 3, 4]
    assert rec.stops and rec.stops[0]["epoch"] == 4 and rec.stops[0]["best_epoch"] == 2
    assert result.status == "early_stopped" and result.best_epoch == 2
    best = [s for s in rec.saved if s["kind"] == "best"]
    assert [s["epoch"] for s in best] == [1, 2]
    assert ckpt_io.load_checkpoint(trainer.best_path).meta["epoch"] == 2


def test_sasrec_learns_and_beats_pop(registry, tmp_path):
    recipe = make_recipe(registry, tmp_path, train__epochs=10)
    data = load_dataset(recipe, registry)
    rec = Recorder()
    sas = Trainer(recipe, registry, data, 0, "sas", torch.device("cpu"), [rec]).fit()
    pop_recipe = make_recipe(registry, tmp_path, model={"name": "pop"})
    pop = Trainer(pop_recipe, registry, data, 0, "pop", torch.device("cpu")).fit()
    assert rec.epochs[-1]["train_loss"] < rec.epochs[0]["train_loss"] * 0.9
    assert sas.test["NDCG@10"] > pop.test["NDCG@10"] + 0.05
    # Final metrics come under both protocols too; the recipe's (U) is the plain name.
    for split in (sas.valid, sas.test):
        assert split["NDCG@10/U"] == split["NDCG@10"]
        assert split["NDCG@10/F"] >= split["NDCG@10/U"]
        assert split["Recall@10/F"] >= split["Recall@10/U"]
    assert sas.test["NDCG@10/F"] > sas.test["NDCG@10/U"]  # synthetic users revisit items


def test_one_protocol_only_when_both_protocols_is_off(registry, tmp_path):
    recipe = make_recipe(
        registry,
        tmp_path,
        model={"name": "pop"},
        eval__filter_seen=True,
        eval__both_protocols=False,
    )
    data = load_dataset(recipe, registry)
    pop = Trainer(recipe, registry, data, 0, "pop", torch.device("cpu")).fit()
    assert "NDCG@10" in pop.test and not any("/" in k for k in pop.test)


# ------------------------------------------------------------------ checkpoints


def test_checkpoint_round_trip_gives_same_scores(registry, tmp_path):
    recipe = make_recipe(registry, tmp_path, train__epochs=2)
    data = load_dataset(recipe, registry)
    trainer = Trainer(recipe, registry, data, 0, "t", torch.device("cpu"))
    trainer.fit()
    model, catalogue, histories, ckpt = load_for_inference(trainer.best_path, registry)
    seqs = torch.from_numpy(data.padded("test", data.eval_users("test")[:20], 16))
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(model.predict(seqs), trainer.model.predict(seqs))
    assert catalogue.titles[1:] == data.titles(np.arange(1, data.n_items + 1))
    raw_user = data.user_map.to_raw(3)
    assert histories.of(raw_user) == data.items[data.offsets[3] : data.offsets[4]].tolist()
    meta = ckpt.meta
    assert meta["model"]["options"]["dim"] == 16 and meta["seed"] == 0
    assert meta["dataset"]["item_map_digest"] == data.item_map.digest()
    assert {"seqrec", "torch", "safetensors"} <= set(meta["versions"])


def test_checkpoint_for_another_dataset_is_refused(registry, tmp_path):
    recipe = make_recipe(registry, tmp_path, train__epochs=1)
    data = load_dataset(recipe, registry)
    trainer = Trainer(recipe, registry, data, 0, "t", torch.device("cpu"))
    trainer.fit()
    other = load_dataset(
        make_recipe(
            registry, tmp_path, dataset={"name": "synthetic", "n_users": 50, "n_items": 30}
        ),
        registry,
    )
    with pytest.raises(SeqrecError, match="item id maps differ"):
        ckpt_io.check_dataset(ckpt_io.load_checkpoint(trainer.best_path), other)


def test_corrupt_and_foreign_checkpoints_are_refused(tmp_path):
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(SeqrecError, match="not a seqrec checkpoint"):
        ckpt_io.load_checkpoint(foreign)
    pickle_file = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, pickle_file)
    with pytest.raises(SeqrecError, match="not a readable safetensors"):
        ckpt_io.load_checkpoint(pickle_file)
    good = ckpt_io.save_checkpoint(
        tmp_path / "g.safetensors", {"a": torch.ones(3)}, {"kind": "best"}
    )
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(good.read_bytes()[:-5])
    with pytest.raises(SeqrecError, match="not a readable safetensors"):
        ckpt_io.load_checkpoint(truncated)
    with pytest.raises(SeqrecError, match="not found"):
        ckpt_io.load_checkpoint(tmp_path / "missing.safetensors")


def test_optimizer_state_round_trips_without_pickle():
    p = torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.AdamW([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    tensors, info = ckpt_io.optimizer_tensors(opt)
    json.dumps(info)  # JSON-able
    opt2 = torch.optim.AdamW([torch.nn.Parameter(p.detach().clone())], lr=0.5)
    ckpt = ckpt_io.Checkpoint(None, {}, tensors)
    ckpt_io.restore_optimizer(opt2, ckpt, info)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s2["param_groups"][0]["lr"] == 0.1
    assert torch.equal(s1["state"][0]["exp_avg"], s2["state"][0]["exp_avg"])


# ------------------------------------------------------------------ resume / failures


class Crash(BaseException):
    """Stands in for kill -9: not an ordinary error a callback could report."""


class CrashAt:
    name = "crash"

    def __init__(self, epoch, batch):
        self.epoch, self.batch = epoch, batch

    @hookimpl
    def on_batch_end(self, run, event):
        if event["epoch"] == self.epoch and event["batch"] == self.batch:
            raise Crash()


def test_resume_after_crash_matches_uninterrupted_run(registry, tmp_path):
    kw = {"train__epochs": 5, "train__scheduler": {"name": "cosine", "warmup_epochs": 1}}
    recipe_a = make_recipe(registry, tmp_path / "a", **kw)
    data = load_dataset(recipe_a, registry)
    full = Trainer(recipe_a, registry, data, 7, "r", torch.device("cpu")).fit()

    recipe_b = make_recipe(registry, tmp_path / "b", **kw)
    with pytest.raises(Crash):
        Trainer(recipe_b, registry, data, 7, "r", torch.device("cpu"), [CrashAt(3, 2)]).fit()
    last = ckpt_io.load_checkpoint(tmp_path / "b/ckpt/r/last.safetensors")
    assert last.meta["trainer"]["epoch"] == 2  # only the interrupted epoch is lost
    resumed = Trainer(recipe_b, registry, data, 7, "r", torch.device("cpu")).fit(resume=True)
    assert resumed.best_epoch == full.best_epoch
    assert resumed.best_value == pytest.approx(full.best_value, abs=1e-6)
    for name, value in full.test.items():
        assert resumed.test[name] == pytest.approx(value, abs=1e-6)


def test_resume_with_other_model_options_is_refused(registry, tmp_path):
    recipe = make_recipe(registry, tmp_path, train__epochs=1)
    data = load_dataset(recipe, registry)
    Trainer(recipe, registry, data, 0, "r", torch.device("cpu")).fit()
    other = make_recipe(
        registry, tmp_path, train__epochs=2, model={"name": "sasrec", "max_len": 16, "dim": 8}
    )
    with pytest.raises(SeqrecError, match="resume with the same model"):
        Trainer(other, registry, data, 0, "r", torch.device("cpu")).fit(resume=True)


@pytest.mark.parametrize("log_every", [None, 3])  # checked every step / every 3 steps
def test_nan_loss_stops_and_keeps_last_good_checkpoint(registry, tmp_path, monkeypatch, log_every):
    recipe = make_recipe(registry, tmp_path, train__epochs=4, train__log_every=log_every)
    data = load_dataset(recipe, registry)
    trainer = Trainer(recipe, registry, data, 0, "n", torch.device("cpu"), [rec := Recorder()])
    import seqrec_core.train as train_mod

    real = train_mod.compute_loss

    def flaky(cfg, h, t, w, gen=None):
        loss = real(cfg, h, t, w, gen)
        return loss * float("nan") if len(rec.epochs) == 2 else loss

    monkeypatch.setattr(train_mod, "compute_loss", flaky)
    with pytest.raises(SeqrecError, match=r"loss became nan at epoch 3, batch 1/"):
        trainer.fit()
    last = ckpt_io.load_checkpoint(trainer.last_path)
    assert last.meta["trainer"]["epoch"] == 2
    assert rec.end["status"] == "failed"
    for t in last.model_state.values():
        assert torch.isfinite(t).all()


# ------------------------------------------------------------------ run: seeds, files


def test_seeds_are_summarised_with_mean_and_std(registry, tmp_path):
    recipe = make_recipe(registry, tmp_path, train__epochs=1, train__seeds=[42, 123])
    result = run_recipe(recipe, registry, samples=0)
    per_seed = [
        json.loads((tmp_path / f"runs/t-seed{s}/metrics.json").read_text())["metrics"]["test"]
        for s in (42, 123)
    ]
    summary = json.loads((result.run_dir / "summary.json").read_text())["summary"]["test"]
    for name in ("Recall@10", "NDCG@10"):
        values = np.array([m[name] for m in per_seed])
        assert summary[name]["mean"] == pytest.approx(values.mean())
        assert summary[name]["std"] == pytest.approx(values.std())
    assert per_seed[0] != per_seed[1]  # different seeds, different models
    assert (tmp_path / "ckpt/t-seed42/best.safetensors").is_file()


def test_one_seed_is_deterministic_on_cpu(registry, tmp_path):
    results = []
    for sub in ("x", "y"):
        recipe = make_recipe(
            registry,
            tmp_path / sub,
            train__epochs=2,
            model={"name": "sasrec", "max_len": 16, "dim": 16, "dropout": 0.3},
        )
        data = load_dataset(recipe, registry)
        results.append(Trainer(recipe, registry, data, 5, "d", torch.device("cpu")).fit().test)
    assert results[0] == results[1]


def test_existing_run_is_not_overwritten(registry, tmp_path):
    recipe = make_recipe(registry, tmp_path, train__epochs=1)
    run_recipe(recipe, registry, samples=0)
    before = (tmp_path / "ckpt/t/best.safetensors").read_bytes()
    with pytest.raises(SeqrecError, match="--resume"):
        run_recipe(recipe, registry, samples=0)
    assert (tmp_path / "ckpt/t/best.safetensors").read_bytes() == before
    run_recipe(recipe, registry, samples=0, overwrite=True)


def test_events_log_has_the_lifecycle(registry, tmp_path):
    from seqrec_core.events import read_events

    recipe = make_recipe(registry, tmp_path, train__epochs=2)
    run_recipe(recipe, registry, samples=0)
    events = list(read_events(tmp_path / "runs/t/events.jsonl"))
    names = [e["event"] for e in events]
    assert names[0] == "fit_start" and names[-1] == "fit_end"
    assert names.count("epoch_end") == 2 and "validation_end" in names and "batch_end" in names
    end = events[-1]
    assert end["status"] == "completed" and "NDCG@10" in end["test"]


class Broken:
    name = "broken"

    @hookimpl
    def on_epoch_end(self, run, event):
        raise OSError("disk full")


def test_a_failing_callback_is_reported_and_training_goes_on(registry, tmp_path, capsys):
    recipe = make_recipe(registry, tmp_path, train__epochs=2)
    data = load_dataset(recipe, registry)
    rec = Recorder()
    result = Trainer(recipe, registry, data, 0, "b", torch.device("cpu"), [Broken(), rec]).fit()
    assert result.status == "completed" and len(rec.epochs) == 2
    err = capsys.readouterr().err
    assert err.count("callback 'broken-0' failed in on_epoch_end: OSError: disk full") == 1


def test_sigterm_stops_a_run_like_ctrl_c_and_keeps_the_last_checkpoint(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from seqrec_core.events import read_events

    env = {**os.environ, "SEQREC_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "seqrec_core",
        "run",
        "recipes/quickstart.yaml",
        "-o",
        f"output.runs_dir={tmp_path}/runs",
        "-o",
        f"output.checkpoints_dir={tmp_path}/ckpt",
        "-o",
        "callbacks=[]",
        "-o",
        "train.epochs=200",
        "-o",
        "train.patience=200",
    ]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen(cmd, cwd=root, env=env, stderr=subprocess.PIPE, text=True)
    last = tmp_path / "ckpt/quickstart/last.safetensors"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert last.exists(), "no epoch finished in time"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    events = list(read_events(tmp_path / "runs/quickstart/events.jsonl"))
    assert events[-1]["event"] == "fit_end" and events[-1]["status"] == "interrupted"
    assert ckpt_io.load_checkpoint(last).meta["trainer"]["epoch"] >= 1


def test_a_fresh_run_starts_a_fresh_event_log_and_resume_appends(registry, tmp_path):
    from seqrec_core.events import read_events

    recipe = make_recipe(registry, tmp_path, train__epochs=1)
    run_recipe(recipe, registry, samples=0)
    run_recipe(recipe, registry, samples=0, overwrite=True)
    log = tmp_path / "runs/t/events.jsonl"
    events = list(read_events(log))
    assert [e["event"] for e in events].count("fit_start") == 1
    assert all(e["tokens_per_s"] > 0 for e in events if e["event"] == "batch_end")
    run_recipe(make_recipe(registry, tmp_path, train__epochs=2), registry, samples=0, resume=True)
    assert [e["event"] for e in read_events(log)].count("fit_start") == 2


def test_embedding_init_option_changes_only_the_embedding_scale():
    normal = seqrec_sasrec.SASRec(seqrec_sasrec.SASRecOptions(dim=64), 1000)
    xavier = seqrec_sasrec.SASRec(seqrec_sasrec.SASRecOptions(dim=64, emb_init="xavier"), 1000)
    assert normal.item_emb.weight[1:].std().item() == pytest.approx(64**-0.5, rel=0.05)
    expected = (2 / (1001 + 64)) ** 0.5  # Xavier-normal std of a 1001 x 64 table
    assert xavier.item_emb.weight[1:].std().item() == pytest.approx(expected, rel=0.05)
    assert xavier.item_emb.weight[0].abs().max() == 0  # padding row stays zero
    with pytest.raises(ValueError):
        seqrec_sasrec.SASRecOptions(emb_init="uniform")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    "name, buckets, background",
    [
        ("sasrec", 1, True),
        ("bert4rec", 1, True),
        ("lstm", 1, True),
        ("xlstm", 1, True),
        ("xlstm", 1, False),
        ("sasrec", 3, True),
        ("bert4rec", 3, True),
    ],
)
def test_cuda_graph_training_equals_eager_training(
    monkeypatch, tmp_path, name, buckets, background
):
    """Same kernels, same order: per-epoch losses and final metrics of a run
    replayed from CUDA graphs match the eager run (fp32, no dropout), with
    checkpoints written in the background (the default) or not."""
    import warnings

    from helpers import model_registry

    import seqrec_bert4rec
    import seqrec_lstm
    import seqrec_xlstm

    registry = model_registry(
        monkeypatch, tmp_path, seqrec_sasrec, seqrec_bert4rec, seqrec_lstm, seqrec_xlstm
    )

    model = {"name": name, "max_len": 16, "dim": 16, "dropout": 0.0}
    if name == "lstm":
        model["layers"] = 1
    else:
        model.update(blocks=1, heads=2)
    if name == "xlstm":  # the Triton kernels want head dims of at least 16
        model.update(dim=64, chunk_size=16)
    results, losses = [], []
    for graphs in (False, True):
        recipe = make_recipe(
            registry,
            tmp_path / str(graphs),
            model=model,
            train__epochs=3,
            train__device="cuda",
            train__amp=False,
            train__cuda_graphs=graphs,
            train__length_buckets=buckets,
            train__async_checkpoints=background,
        )
        data = load_dataset(recipe, registry)
        rec = Recorder()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.manual_seed(0)
            results.append(
                Trainer(recipe, registry, data, 0, "g", torch.device("cuda"), [rec]).fit()
            )
        assert not [w for w in caught if "CUDA graph capture failed" in str(w.message)]
        losses.append([e["train_loss"] for e in rec.epochs])
    # The first epoch agrees to 1e-3 for every model. Later xLSTM epochs drift
    # more: on an H200 its third epoch differed by 3.4e-3 from eager in one run of
    # two (cause not established: the same kernels should match as the other
    # models do), so they get 1e-2 — a broken replay is off by far more.
    later = 1e-2 if name == "xlstm" else 1e-3
    assert losses[0][0] == pytest.approx(losses[1][0], rel=1e-3), losses
    assert losses[0][1:] == pytest.approx(losses[1][1:], rel=later), losses
    ndcg = [r.test["NDCG@10"] for r in results]
    assert ndcg[0] == pytest.approx(ndcg[1], abs=2e-3 if name != "xlstm" else 1e-2), ndcg


def test_zero_epochs_evaluates_the_initial_model(registry, tmp_path):
    recipe = make_recipe(registry, tmp_path, train__epochs=0)
    data = load_dataset(recipe, registry)
    trainer = Trainer(recipe, registry, data, 0, "z", torch.device("cpu"))
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    result = trainer.fit()
    assert result.best_epoch == 0 and result.epochs_run == 0
    saved = ckpt_io.load_checkpoint(trainer.best_path).model_state
    assert all(torch.equal(saved[k], v) for k, v in initial.items())
    assert 0.0 <= result.test["NDCG@10"] <= 1.0


# ------------------------------------------------------------------ length buckets


def test_bucket_widths_are_rounded_and_end_at_the_full_width():
    assert bucket_widths(201, 4) == [56, 104, 152, 201]
    assert bucket_widths(16, 8) == [8, 16]  # rounding merges buckets
    assert bucket_widths(30, 1) == [30]


def test_length_plan_uses_every_window_once_in_its_narrowest_bucket():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(2, 41, (103,))
    order = torch.randperm(103, generator=gen)
    widths = bucket_widths(40, 3)
    plan = length_plan(order, lengths, widths, 8, gen)
    used = torch.cat([idx for _, idx in plan])
    assert sorted(used.tolist()) == list(range(103))
    for w, idx in plan:
        assert 1 <= len(idx) <= 8
        k = widths.index(w)
        low = widths[k - 1] if k else 0
        assert bool(((lengths[idx] > low) & (lengths[idx] <= w)).all())
    assert len({w for w, _ in plan}) == len(widths)
    assert len(plan) == sum(
        math.ceil(int((torch.bucketize(lengths, torch.tensor(widths)) == k).sum()) / 8)
        for k in range(len(widths))
    )


def test_a_window_cut_at_its_bucket_width_gives_the_same_loss(registry, tmp_path):
    recipe = make_recipe(registry, tmp_path)
    data = load_dataset(recipe, registry)
    torch.manual_seed(0)
    model = seqrec_sasrec.SASRec(recipe.model_options, data.n_items).eval()
    width = recipe.model_options.max_len + 1
    starts, ends = (torch.from_numpy(a) for a in window_bounds(data, width, "last"))
    items = torch.from_numpy(data.items)
    short = ((ends - starts) <= 9).nonzero()[:, 0][:6]
    assert len(short) > 1
    step = LossStep(model, recipe.loss, model.encode, None)
    with torch.no_grad():
        full = dense_batch(model, gather_windows(items, starts[short], ends[short], width))
        cut = dense_batch(model, gather_windows(items, starts[short], ends[short], 9))
        assert cut[0].shape[1] == 8 and int((cut[1] != 0).sum()) == int((full[1] != 0).sum())
        assert torch.allclose(step(*full[:1], None, full[1]), step(cut[0], None, cut[1]), atol=1e-6)


class BatchCounter:
    name = "batches"

    def __init__(self):
        self.announced: list[int] = []
        self.last_batch: list[int] = []

    @hookimpl
    def on_epoch_start(self, run, event):
        self.announced.append(event["batches"])

    @hookimpl
    def on_batch_end(self, run, event):
        if event["batch"] == event["batches"]:
            self.last_batch.append(event["batch"])


def test_training_with_length_buckets(registry, tmp_path):
    recipe = make_recipe(registry, tmp_path, train__epochs=3, train__length_buckets=3)
    data = load_dataset(recipe, registry)
    rec, counter = Recorder(), BatchCounter()
    result = Trainer(recipe, registry, data, 0, "lb", torch.device("cpu"), [rec, counter]).fit()
    width = recipe.model_options.max_len + 1
    starts, ends = window_bounds(data, width, "last")
    lengths = torch.from_numpy(np.minimum(ends - starts, width))
    widths = bucket_widths(width, 3)
    sizes = torch.bincount(torch.bucketize(lengths, torch.tensor(widths)))
    expected = sum(math.ceil(int(n) / recipe.train.batch_size) for n in sizes)
    unbucketed = math.ceil(len(starts) / recipe.train.batch_size)
    assert len(widths) == 3 and expected > unbucketed  # more, smaller batches
    assert counter.announced == counter.last_batch == [expected] * 3
    assert rec.epochs[-1]["train_loss"] < rec.epochs[0]["train_loss"]
    assert result.test["NDCG@10"] > 0


def test_a_weighted_step_has_the_weighted_gradients_and_the_plain_loss(registry, tmp_path):
    from seqrec_core import distributed

    model, step, width, windows = _sasrec_step(registry, tmp_path)
    batch = make_micro_batch(model, windows(torch.arange(8), width))
    one = distributed.World()
    plain_loss, plain_n = backward_step(step, [batch], one)
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    loss, n = backward_step(step, [batch], one, weight=torch.tensor(0.25))
    assert float(loss) == pytest.approx(float(plain_loss)) and int(n) == int(plain_n)
    for p, g in zip(model.parameters(), plain, strict=True):
        assert torch.allclose(p.grad, 0.25 * g, atol=1e-7)
    with pytest.raises(ValueError, match="one micro-batch"):
        backward_step(step, [batch, batch], one, weight=torch.tensor(1.0))


def test_bucketed_steps_weigh_every_position_the_same(registry, tmp_path, monkeypatch):
    """With length buckets each step's mean loss is weighted by its supervised
    positions over the average step's: per position the same weight in every
    batch, and the weights of an epoch add up to its number of steps."""
    import seqrec_core.train as train_mod

    seen = []
    real = train_mod.backward_step

    def recording(step, micro, world, amp=False, total=None, weight=None):
        seen.append((float(weight), int(micro[0].count)))
        return real(step, micro, world, amp, total, weight)

    monkeypatch.setattr(train_mod, "backward_step", recording)
    recipe = make_recipe(registry, tmp_path, train__epochs=2, train__length_buckets=3)
    data = load_dataset(recipe, registry)
    Trainer(recipe, registry, data, 0, "w", torch.device("cpu")).fit()
    width = recipe.model_options.max_len + 1
    starts, ends = (torch.from_numpy(a) for a in window_bounds(data, width, "last"))
    positions = int(window_tokens(starts, ends, width).sum())
    steps = len(seen) // 2
    per_step = positions / steps
    counts = sorted({n for _, n in seen})
    assert counts[0] * 2 < counts[-1]  # the buckets really differ in positions
    for weight, n in seen:
        assert weight == pytest.approx(n / per_step, rel=1e-5)
    assert sum(w for w, _ in seen[:steps]) == pytest.approx(steps, rel=1e-5)


def _sasrec_step(registry, tmp_path):
    """A seeded SASRec on the test data, its training step, the causal window width
    and ``windows(idx, w)``: those training windows cut at width ``w``."""
    recipe = make_recipe(registry, tmp_path)
    data = load_dataset(recipe, registry)
    width = recipe.model_options.max_len + 1
    starts, ends = (torch.from_numpy(a) for a in window_bounds(data, width, "last"))
    items = torch.from_numpy(data.items)
    torch.manual_seed(0)
    model = seqrec_sasrec.SASRec(recipe.model_options, data.n_items).eval()
    step = LossStep(model, recipe.loss, model.encode, None)

    def windows(idx, w):
        return gather_windows(items, starts[idx], ends[idx], w)

    return model, step, width, windows


def test_shared_grads_accumulate_in_place_across_widths_like_eager_steps(registry, tmp_path):
    """What lets several CUDA graphs (one per length bucket) share gradients: after
    the first backward the .grad tensors are only zeroed in place, every later
    backward — of any width — adds into the same memory, and the values are those
    of eager steps that start from fresh (None) gradients."""
    model, step, width, windows = _sasrec_step(registry, tmp_path)
    batches = [(torch.arange(0, 16), 9), (torch.arange(16, 40), width), (torch.arange(40, 50), 13)]

    def backward(idx, w):
        inputs, targets = dense_batch(model, windows(idx, w))
        step(inputs, None, targets).backward()

    expected = []
    for idx, w in batches:
        model.zero_grad(set_to_none=True)
        backward(idx, w)
        expected.append([p.grad.clone() for p in model.parameters()])

    model.zero_grad(set_to_none=True)
    shared = SharedGrads(model)
    pointers = None
    for (idx, w), want in zip(batches * 2, expected * 2, strict=True):
        shared.zero()
        backward(idx, w)
        shared.keep()
        shared.check()
        now = [p.grad.data_ptr() for p in model.parameters()]
        pointers = pointers or now
        assert now == pointers  # the same memory every step
        for got, ref in zip((p.grad for p in model.parameters()), want, strict=True):
            assert torch.allclose(got, ref, atol=1e-6)
    first = next(model.parameters())
    first.grad = torch.zeros_like(first)
    with pytest.raises(RuntimeError, match="replaced"):
        shared.check()


def test_shared_grads_reset_drops_every_graph_using_them(registry, tmp_path):
    recipe = make_recipe(registry, tmp_path)
    data = load_dataset(recipe, registry)
    model = seqrec_sasrec.SASRec(recipe.model_options, data.n_items)
    step = LossStep(model, recipe.loss, model.encode, None)
    shared = SharedGrads(model)
    steps = [GraphStep(step, 4, w, "cpu", False, shared) for w in (8, 16)]
    assert shared.users == steps
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    shared.keep()
    steps[0].graph = object()  # stands for a captured graph
    shared.reset("capture failed")
    assert all(s.graph is None and s.failed == "capture failed" for s in steps)
    assert shared.grads is None and all(p.grad is None for p in model.parameters())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("sharing", [1, 3])
def test_a_run_sharing_its_gpu_hands_evaluation_memory_back(
    monkeypatch, registry, tmp_path, sharing
):
    """Under ``sweep/tune --jobs`` (SEQREC_CONCURRENT_RUNS > 1) the allocator's
    cache is emptied after an evaluation, so the evaluation's peak is free for
    the runs sharing the GPU; a run alone keeps its cache (no re-allocation)."""
    monkeypatch.setenv("SEQREC_CONCURRENT_RUNS", str(sharing))
    recipe = make_recipe(
        registry,
        tmp_path,
        train__device="cuda",
        dataset__n_users=3000,
        dataset__n_items=5000,
        eval__batch_size=3000,  # one chunk: a 3000 x 5001 fp32 score block (60 MB)
    )
    data = load_dataset(recipe, registry)
    trainer = Trainer(recipe, registry, data, 0, "s", torch.device("cuda"), [])

    def cached() -> int:
        torch.cuda.synchronize()
        return torch.cuda.memory_reserved() - torch.cuda.memory_allocated()

    # Earlier tests' leftovers (such as CUDA-graph pools of trainers not yet
    # collected, or part-used segments) stay reserved whatever this run does:
    # measure from here.
    gc.collect()
    torch.cuda.empty_cache()
    before = cached()
    trainer.evaluate("valid")
    added = cached() - before
    if sharing > 1:
        assert added < 2**25, (added, before)  # < 32 MiB more left in the cache
    else:
        assert added >= 50 * 2**20, (added, before)  # the score block's memory stays cached


# ------------------------------------------------------------------ background checkpoints


def test_background_writer_saves_the_values_at_submit_time(tmp_path, monkeypatch):
    import threading

    release = threading.Event()
    real = ckpt_io.write_snapshot

    def held(path, flat, text):  # the write starts only after training changed the tensors
        release.wait(10)
        return real(path, flat, text)

    monkeypatch.setattr(ckpt_io, "write_snapshot", held)
    writer = ckpt_io.CheckpointWriter()
    weights = torch.arange(4.0)
    history = [{"epoch": 1}]
    writer.submit(tmp_path / "a.safetensors", {"w": weights}, {"history": history})
    weights.add_(100.0)  # an optimizer step, in place
    history.append({"epoch": 2})
    assert not (tmp_path / "a.safetensors").exists()
    release.set()
    writer.flush()
    writer.close()
    ckpt = ckpt_io.load_checkpoint(tmp_path / "a.safetensors")
    assert torch.equal(ckpt.tensors["w"], torch.arange(4.0))
    assert ckpt.meta["history"] == [{"epoch": 1}]


def test_background_writer_reports_in_order_and_after_the_file_exists(tmp_path):
    writer = ckpt_io.CheckpointWriter(max_pending=1)
    seen = []

    def done(name):
        return lambda: seen.append((name, (tmp_path / name).is_file()))

    writer.submit(tmp_path / "a", {"w": torch.zeros(2)}, {}, done=done("a"))
    # max_pending=1: this submit first waits for "a", whose callback runs here
    writer.submit(tmp_path / "b", {"w": torch.ones(2)}, {}, done=done("b"))
    assert seen == [("a", True)]
    writer.flush()
    assert seen == [("a", True), ("b", True)]
    writer.close()


def test_a_failed_background_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    writer = ckpt_io.CheckpointWriter()
    path = tmp_path / "last.safetensors"
    writer.submit(path, {"w": torch.zeros(2)}, {"epoch": 1})
    writer.flush()
    real = ckpt_io.write_snapshot

    def full(p, flat, text):
        raise OSError("No space left on device")

    monkeypatch.setattr(ckpt_io, "write_snapshot", full)
    called = []
    writer.submit(path, {"w": torch.ones(2)}, {"epoch": 2}, done=lambda: called.append(2))
    with pytest.raises(ckpt_io.CheckpointWriteError, match=r"last.safetensors: No space left"):
        writer.flush()
    assert called == []  # no checkpoint_saved for a file that was not written
    monkeypatch.setattr(ckpt_io, "write_snapshot", real)
    writer.close()
    kept = ckpt_io.load_checkpoint(path)
    assert kept.meta["epoch"] == 1 and torch.equal(kept.tensors["w"], torch.zeros(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]  # no temp file left


def test_background_and_foreground_checkpoints_are_the_same_files(registry, tmp_path):
    from seqrec_core.events import read_events

    runs = {}
    for flag in (True, False):
        root = tmp_path / str(flag)
        recipe = make_recipe(registry, root, train__epochs=3, train__async_checkpoints=flag)
        data = load_dataset(recipe, registry)
        Trainer(recipe, registry, data, 0, "t", torch.device("cpu")).fit()
        events = list(read_events(root / "runs/t/events.jsonl"))
        saved = [(e["kind"], e["epoch"]) for e in events if e["event"] == "checkpoint_saved"]
        assert [epoch for kind, epoch in saved if kind == "last"] == [1, 2, 3]
        assert [e["event"] for e in events][-1] == "fit_end"
        runs[flag] = (
            ckpt_io.load_checkpoint(root / "ckpt/t/last.safetensors"),
            ckpt_io.load_checkpoint(root / "ckpt/t/best.safetensors"),
            sorted(saved),
        )
    (last_a, best_a, saved_a), (last_s, best_s, saved_s) = runs[True], runs[False]
    assert saved_a == saved_s
    assert last_a.tensors.keys() == last_s.tensors.keys()
    for name, value in last_s.tensors.items():
        assert torch.equal(last_a.tensors[name], value), name
    assert last_a.meta["trainer"]["history"] == last_s.meta["trainer"]["history"]
    assert best_a.meta["epoch"] == best_s.meta["epoch"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_snapshot_of_gpu_tensors_is_a_host_copy_taken_now():
    x = torch.randn(1000, 256, device="cuda")
    view = x.t()  # not contiguous
    expected = x.cpu()
    snap = ckpt_io.snapshot({"x": x, "view": view, "step": torch.tensor(3.0, device="cuda")})
    x.mul_(2.0)  # queued on the stream right after the copies
    torch.cuda.synchronize()
    assert all(t.device.type == "cpu" and t.is_contiguous() for t in snap.values())
    assert torch.equal(snap["x"], expected) and torch.equal(snap["view"], expected.t())
    assert snap["step"].item() == 3.0


class StopAtEpoch2:
    name = "stop_at_epoch_2"

    @hookimpl
    def on_epoch_start(self, run, event):
        if event["epoch"] == 2:
            raise KeyboardInterrupt


def test_an_interrupted_run_writes_its_queued_checkpoints_before_fit_end(
    registry, tmp_path, monkeypatch
):
    import time as time_mod

    real = ckpt_io.write_snapshot

    def slow(path, flat, text):  # still writing when training is interrupted
        time_mod.sleep(0.3)
        return real(path, flat, text)

    monkeypatch.setattr(ckpt_io, "write_snapshot", slow)
    recipe = make_recipe(registry, tmp_path, train__epochs=3)
    data = load_dataset(recipe, registry)
    rec = Recorder()
    trainer = Trainer(recipe, registry, data, 0, "i", torch.device("cpu"), [StopAtEpoch2(), rec])
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert rec.end["status"] == "interrupted"
    assert [(e["kind"], e["epoch"]) for e in rec.saved] == [("best", 1), ("last", 1)]
    last = ckpt_io.load_checkpoint(trainer.last_path)
    assert last.meta["trainer"]["epoch"] == 1


def test_masked_model_trains_with_weighted_length_buckets(monkeypatch, tmp_path):
    """BERT4Rec's masked positions are drawn per batch, so its bucket weights
    are the windows' positions; a bucketed fit runs and learns."""
    from helpers import model_registry

    import seqrec_bert4rec
    import seqrec_core.train as train_mod

    registry = model_registry(monkeypatch, tmp_path, seqrec_bert4rec)
    weights = []
    real = train_mod.backward_step

    def recording(step, micro, world, amp=False, total=None, weight=None):
        weights.append(float(weight))
        return real(step, micro, world, amp, total, weight)

    monkeypatch.setattr(train_mod, "backward_step", recording)
    model = {"name": "bert4rec", "max_len": 16, "dim": 16, "blocks": 1, "heads": 2}
    recipe = make_recipe(registry, tmp_path, model=model, train__epochs=4, train__length_buckets=3)
    data = load_dataset(recipe, registry)
    rec = Recorder()
    result = Trainer(recipe, registry, data, 0, "m", torch.device("cpu"), [rec]).fit()
    steps = len(weights) // 4
    assert sum(weights[:steps]) == pytest.approx(steps, rel=1e-5)
    assert min(weights) < 0.8 < 1.2 < max(weights)  # short and long buckets weigh differently
    assert rec.epochs[-1]["train_loss"] < rec.epochs[0]["train_loss"]
    assert 0 < result.test["NDCG@10"] <= 1
