"""Distributed training and evaluation (torch.distributed, Gloo, 2 CPU processes).

One spawned pair of processes runs every two-rank scenario once (module
fixture) and each rank writes what it saw to a JSON file; the tests read those.
One more test launches the real thing: ``python -m torch.distributed.run
--nproc-per-node 2 -m seqrec_core run recipe.yaml``.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

import seqrec_metrics
import seqrec_sasrec
import seqrec_synthetic
from seqrec_core import checkpoint as ckpt_io
from seqrec_core import distributed, hookimpl
from seqrec_core.data import load_dataset
from seqrec_core.errors import SeqrecError
from seqrec_core.evaluate import evaluate, rank_split
from seqrec_core.plugins import load_plugins
from seqrec_core.recipe import load_recipe
from seqrec_core.run import run_recipe
from seqrec_core.train import (
    LossStep,
    MicroBatch,
    Trainer,
    backward_step,
    gather_windows,
    make_micro_batch,
    step_slices,
    window_bounds,
    window_tokens,
)

WORLD = 2
DATASET = {"name": "synthetic", "n_users": 150, "n_items": 40, "mean_length": 15, "seed": 1}
MODEL = {"name": "sasrec", "max_len": 16, "dim": 16, "blocks": 1, "heads": 2, "dropout": 0.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def registry():
    return load_plugins(
        extra=[seqrec_synthetic, seqrec_sasrec, seqrec_metrics], use_entry_points=False
    )


def recipe_dict(root: Path, **train) -> dict:
    return {
        "name": "t",
        "dataset": dict(DATASET),
        "model": dict(MODEL),
        "train": {
            "epochs": 3,
            "batch_size": 16,
            "lr": 0.01,
            "device": "cpu",
            "patience": 5,
            **train,
        },
        "eval": {"ks": [5, 10], "metrics": ["recall", "ndcg", "mrr", "coverage"], "batch_size": 32},
        "callbacks": [],
        "output": {"runs_dir": str(root / "runs"), "checkpoints_dir": str(root / "ckpt")},
    }


def make_recipe(reg, root: Path, model: dict | None = None, **train):
    data = recipe_dict(root, **train)
    if model:
        data["model"].update(model)
    return load_recipe(None, reg, data=data)


# ------------------------------------------------------------------ the two ranks


class Recorder:
    name = "recorder"

    def __init__(self):
        self.epochs: list[int] = []

    @hookimpl
    def on_epoch_end(self, run, event):
        self.epochs.append(event["epoch"])


def _grads(reg, root: Path, world: distributed.World) -> list[dict]:
    """One DDP step vs one process on the same global batch."""
    recipe = make_recipe(reg, root)
    data = distributed.local_main_first(lambda: load_dataset(recipe, reg), "data")
    width = MODEL["max_len"] + 1
    starts, ends = (torch.from_numpy(a) for a in window_bounds(data, width, "last"))
    items = torch.from_numpy(data.items)
    out = []
    # (micro-batches per rank, windows in the global batch): even, accumulated, uneven tails.
    for accum, n in [(1, 8), (2, 8), (2, 7), (1, 3)]:
        batch_size = -(-n // (world.size * accum))
        torch.manual_seed(0)
        model = seqrec_sasrec.SASRec(recipe.model_options, data.n_items)
        ref = copy.deepcopy(model)
        order = torch.randperm(len(starts), generator=torch.Generator().manual_seed(n))[:n]
        ddp = torch.nn.parallel.DistributedDataParallel(
            LossStep(model, recipe.loss, model.encode, None)
        )
        micro = [
            make_micro_batch(model, gather_windows(items, starts[i], ends[i], width))
            for i in step_slices(order, 0, batch_size, world, accum)
        ]
        loss, tokens = backward_step(ddp, micro, world)
        whole = make_micro_batch(ref, gather_windows(items, starts[order], ends[order], width))
        ref_loss, ref_tokens = backward_step(
            LossStep(ref, recipe.loss, ref.encode, None), [whole], distributed.World()
        )
        diff = max(
            float((p.grad - q.grad).abs().max())
            for p, q in zip(model.parameters(), ref.parameters(), strict=True)
        )
        out.append(
            {
                "accum": accum,
                "n": n,
                "max_grad_diff": diff,
                "loss": float(loss),
                "ref_loss": float(ref_loss),
                "tokens": int(tokens),
                "ref_tokens": int(ref_tokens),
                "local_tokens": [m.tokens for m in micro],
            }
        )
    return out


def _eval(reg, root: Path) -> list[dict]:
    """Sharded + gathered ranking vs one process, several batch sizes."""
    recipe = make_recipe(reg, root)
    data = distributed.local_main_first(lambda: load_dataset(recipe, reg), "data")
    torch.manual_seed(1)
    model = seqrec_sasrec.SASRec(recipe.model_options, data.n_items)
    out = []
    for batch_size in (32, 7, 1024):  # 5 uneven batches, many, one (rank 1 idle)
        for filter_seen in (False, True):
            for split in ("valid", "test"):
                args = (model, data, split, 10, filter_seen, batch_size)
                a = rank_split(*args, distributed=True)
                b = rank_split(*args)
                out.append(
                    {
                        "case": [batch_size, filter_seen, split],
                        "ranks_equal": bool(np.array_equal(a.ranks, b.ranks)),
                        "topk_equal": bool(np.array_equal(a.topk, b.topk)),
                        "n": len(a.ranks),
                        "n_users": len(data.eval_users(split)),
                    }
                )
    return out


def _early_stop(reg, root: Path, rank: int) -> dict:
    """Rank 1 sees ever-improving (scripted) validation values, rank 0 a peak at
    epoch 2: rank 1 must still stop with rank 0, at epoch 4."""
    recipe = make_recipe(reg, root, epochs=20, patience=2)
    data = distributed.local_main_first(lambda: load_dataset(recipe, reg), "data")
    trainer = Trainer(recipe, reg, data, 0, "es", torch.device("cpu"), [rec := Recorder()])
    script = iter([0.1, 0.3, 0.2, 0.25] if rank == 0 else [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    real = trainer.evaluate
    calls = []

    def scripted(split, filter_seen=None):
        calls.append(split)
        if split == "valid" and len(calls) <= 4:
            return {"Recall@10": next(script)}
        return real(split, filter_seen)

    trainer.evaluate = scripted
    res = trainer.fit()
    return {
        "status": res.status,
        "epochs_run": res.epochs_run,
        "best_epoch": res.best_epoch,
        "callback_epochs": rec.epochs,
        "test": res.test,
    }


def _resume(reg, root: Path) -> dict:
    """2 epochs, then resume to 3, vs 3 epochs at once (dropout on)."""
    model = {"dropout": 0.2}
    first = make_recipe(reg, root / "resumed", model, epochs=2, grad_accum=2, batch_size=8)
    run_recipe(first, reg, samples=0)
    again = make_recipe(reg, root / "resumed", model, epochs=3, grad_accum=2, batch_size=8)
    resumed = run_recipe(again, reg, samples=0, resume=True)
    events = (root / "resumed/runs/t/events.jsonl").read_text().splitlines()
    starts = [json.loads(e)["start_epoch"] for e in events if '"fit_start"' in e]
    whole = make_recipe(reg, root / "whole", model, epochs=3, grad_accum=2, batch_size=8)
    full = run_recipe(whole, reg, samples=0)
    return {"resumed": resumed.metrics, "full": full.metrics, "start_epochs": starts}


def _failures(reg, root: Path, rank: int, monkeypatch) -> dict:
    """Rank 0 cannot write a checkpoint; then the loss is NaN on rank 1 only."""
    import seqrec_core.train as train_mod

    out = {}
    recipe = make_recipe(reg, root / "fail", epochs=3)
    data = distributed.local_main_first(lambda: load_dataset(recipe, reg), "data")
    real_save = ckpt_io.write_snapshot

    def broken_save(path, tensors, meta):
        if Path(path).name == "last.safetensors":
            raise OSError("disk full")
        return real_save(path, tensors, meta)

    if rank == 0:
        monkeypatch.setattr(ckpt_io, "write_snapshot", broken_save)
    try:
        Trainer(recipe, reg, data, 0, "w", torch.device("cpu")).fit()
        out["write"] = None
    except Exception as exc:
        out["write"] = [type(exc).__name__, str(exc)]
    monkeypatch.setattr(ckpt_io, "write_snapshot", real_save)

    real_loss = train_mod.compute_loss
    calls = []

    def flaky(cfg, h, t, w, gen=None):
        calls.append(1)
        loss = real_loss(cfg, h, t, w, gen)
        return loss * float("nan") if rank == 1 and len(calls) == 7 else loss

    monkeypatch.setattr(train_mod, "compute_loss", flaky)
    recipe = make_recipe(reg, root / "nan", epochs=3)
    try:
        Trainer(recipe, reg, data, 0, "n", torch.device("cpu")).fit()
        out["nan"] = None
    except Exception as exc:
        out["nan"] = [type(exc).__name__, str(exc)]
    monkeypatch.undo()
    return out


def _worker(rank: int, port: int, root: str) -> None:
    root_path = Path(root)
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
        SEQREC_CACHE=str(root_path / "cache"),
    )
    os.environ.pop("SEQREC_DISABLE_PLUGINS", None)
    torch.set_num_threads(1)
    reg = registry()
    saves: list[str] = []
    writes: list[str] = []
    real_save = ckpt_io.write_snapshot
    import seqrec_core.run as run_mod

    real_write = run_mod.atomic_write_text
    mp_ = pytest.MonkeyPatch()
    mp_.setattr(
        ckpt_io, "write_snapshot", lambda p, t, m: saves.append(str(p)) or real_save(p, t, m)
    )
    mp_.setattr(
        run_mod, "atomic_write_text", lambda p, t: writes.append(str(p)) or real_write(p, t)
    )
    out: dict = {}
    with distributed.session(torch.device("cpu")) as world:
        out["world"] = [world.rank, world.size, dist.is_initialized()]
        out["grads"] = _grads(reg, root_path / "grads", world)
        out["eval"] = _eval(reg, root_path / "eval")
        out["early_stop"] = _early_stop(reg, root_path / "es", rank)
        out["resume"] = _resume(reg, root_path / "resume")
        out["saves"], out["writes"] = list(saves), list(writes)
        mp_.undo()
        out["failures"] = _failures(reg, root_path / "failures", rank, pytest.MonkeyPatch())
    out["initialized_after"] = dist.is_initialized()
    (root_path / f"rank{rank}.json").write_text(json.dumps(out))


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    root = tmp_path_factory.mktemp("ddp")
    mp.start_processes(
        _worker, args=(free_port(), str(root)), nprocs=WORLD, join=True, start_method="spawn"
    )
    return [json.loads((root / f"rank{r}.json").read_text()) | {"root": str(root)} for r in (0, 1)]


def test_a_process_group_exists_inside_the_session_only(ranks):
    for r, out in enumerate(ranks):
        assert out["world"] == [r, WORLD, True]
        assert out["initialized_after"] is False


def test_ddp_step_gradients_equal_one_process_on_the_global_batch(ranks):
    for out in ranks:
        for case in out["grads"]:
            assert case["max_grad_diff"] < 1e-6, case
            assert case["loss"] == pytest.approx(case["ref_loss"], abs=1e-6), case
            assert case["tokens"] == case["ref_tokens"], case
    # The ranks' shares really differ in size (so the weighting is exercised).
    uneven = [c for c in ranks[0]["grads"] if c["n"] in (3, 7)]
    assert all(
        c0["local_tokens"] != c1["local_tokens"]
        for c0, c1 in zip(uneven, [c for c in ranks[1]["grads"] if c["n"] in (3, 7)], strict=True)
    )


def test_sharded_evaluation_equals_one_process_exactly(ranks):
    for out in ranks:
        for case in out["eval"]:
            assert case["ranks_equal"] and case["topk_equal"], case
            assert case["n"] == case["n_users"], case  # nobody dropped or duplicated


def test_early_stopping_is_rank_zeros_decision_on_every_rank(ranks):
    r0, r1 = ranks[0]["early_stop"], ranks[1]["early_stop"]
    for r in (r0, r1):
        assert r["status"] == "early_stopped" and r["epochs_run"] == 4 and r["best_epoch"] == 2
    assert r0["callback_epochs"] == [1, 2, 3, 4]
    assert r1["callback_epochs"] == []  # callbacks run on rank 0 only
    assert r0["test"] == r1["test"]


def test_only_rank_zero_writes(ranks):
    root = Path(ranks[0]["root"])
    assert ranks[1]["saves"] == [] and ranks[1]["writes"] == []
    assert ranks[0]["saves"] and ranks[0]["writes"]
    files = sorted(p.name for p in (root / "resume/whole/ckpt/t").iterdir())
    assert files == ["best.safetensors", "histories.safetensors", "last.safetensors"]
    names = [
        json.loads(line)["event"]
        for line in (root / "resume/whole/runs/t/events.jsonl").read_text().splitlines()
    ]
    assert names.count("fit_start") == 1 and names.count("fit_end") == 1


def test_resume_under_two_processes_matches_an_uninterrupted_run(ranks):
    assert ranks[0]["resume"]["start_epochs"] == [1, 3]  # the second run trained epoch 3 only
    for out in ranks:
        resumed, full = out["resume"]["resumed"], out["resume"]["full"]
        for split in ("valid", "test"):
            for name, value in full[split].items():
                assert resumed[split][name] == pytest.approx(value, abs=1e-6), (split, name)
    last = ckpt_io.load_checkpoint(
        Path(ranks[0]["root"]) / "resume/resumed/ckpt/t/last.safetensors"
    )
    assert last.meta["trainer"]["epoch"] == 3 and last.meta["trainer"]["world_size"] == WORLD


def test_a_failure_on_one_rank_stops_every_rank(ranks):
    r0, r1 = ranks[0]["failures"], ranks[1]["failures"]
    # the background write's error, raised at the next checkpoint, names the file
    assert r0["write"][0] == "CheckpointWriteError"
    assert r0["write"][1].endswith("last.safetensors: disk full")
    assert r1["write"][0] == "PeerFailed" and "rank 0" in r1["write"][1]
    for r in (r0, r1):  # NaN on rank 1 only: every rank stops at the same batch
        assert r["nan"][0] == "SeqrecError" and "loss became nan at epoch" in r["nan"][1]
    assert r0["nan"][1] == r1["nan"][1]


# ------------------------------------------------------------------ one process


class SeesGroup:
    name = "sees_group"

    def __init__(self):
        self.seen = []

    @hookimpl
    def on_fit_start(self, run, event):
        self.seen.append(dist.is_initialized())


@pytest.mark.parametrize("world_size", [None, "1"])
def test_a_single_process_creates_no_process_group(tmp_path, monkeypatch, world_size):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    if world_size:
        monkeypatch.setenv("WORLD_SIZE", world_size)
    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))
    reg = registry()
    with distributed.session(torch.device("cpu")) as world:
        assert world == distributed.World() and not dist.is_initialized()
        recipe = make_recipe(reg, tmp_path, epochs=1)
        data = load_dataset(recipe, reg)
        sees = SeesGroup()
        Trainer(recipe, reg, data, 0, "one", torch.device("cpu"), [sees]).fit()
    assert sees.seen == [False] and not dist.is_initialized()


def test_torchrun_environment_is_read_and_checked():
    assert distributed.env_world({}) == distributed.World()
    assert distributed.env_world({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == (
        distributed.World(3, 4, 1)
    )
    with pytest.raises(SeqrecError, match="RANK is not set"):
        distributed.env_world({"WORLD_SIZE": "2"})
    with pytest.raises(SeqrecError, match="outside"):
        distributed.env_world({"WORLD_SIZE": "2", "RANK": "2"})


def test_step_slices_cover_every_window_once():
    order = torch.randperm(23, generator=torch.Generator().manual_seed(0))
    for size, accum, batch in [(1, 1, 5), (2, 1, 4), (2, 2, 3), (3, 2, 2)]:
        glob = batch * size * accum
        steps = -(-23 // glob)
        seen = []
        for step in range(steps):
            parts = [
                step_slices(order, step, batch, distributed.World(r, size), accum)
                for r in range(size)
            ]
            assert all(len(p) == accum for p in parts)
            seen += [int(i) for p in parts for s in p for i in s]
        assert sorted(seen) == list(range(23)), (size, accum, batch)
    # Fewer windows in the last step than parts: the first windows are repeated.
    tail = [step_slices(order[:3], 0, 8, distributed.World(r, 2), 2) for r in range(2)]
    assert all(len(s) >= 1 for p in tail for s in p)


def test_grad_accum_in_one_process_equals_one_big_batch(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))
    reg = registry()
    recipe = make_recipe(reg, tmp_path)
    data = load_dataset(recipe, reg)
    width = MODEL["max_len"] + 1
    starts, ends = (torch.from_numpy(a) for a in window_bounds(data, width, "last"))
    items = torch.from_numpy(data.items)
    torch.manual_seed(0)
    model = seqrec_sasrec.SASRec(recipe.model_options, data.n_items)
    ref = copy.deepcopy(model)
    order = torch.arange(10)
    one = distributed.World()
    micro = [
        make_micro_batch(model, gather_windows(items, starts[i], ends[i], width))
        for i in step_slices(order, 0, 4, one, 3)  # parts of 4, 3, 3 windows
    ]
    backward_step(LossStep(model, recipe.loss, model.encode, None), micro, one)
    whole: MicroBatch = make_micro_batch(ref, gather_windows(items, starts, ends, width)[:10])
    backward_step(LossStep(ref, recipe.loss, ref.encode, None), [whole], one)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)
    # The trainer's shortcut: causal windows' positions are known without a forward.
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    total = window_tokens(starts, ends, width)[order].sum()
    assert int(total) == whole.tokens
    backward_step(LossStep(model, recipe.loss, model.encode, None), micro, one, total_tokens=total)
    for p, g in zip(model.parameters(), grads, strict=True):
        assert torch.equal(p.grad, g)
    # Dense micro-batches (every position, target 0 = none; what CUDA runs use) give
    # the same loss and gradients as the selected positions.
    model.zero_grad()
    dense = [
        make_micro_batch(model, gather_windows(items, starts[i], ends[i], width), dense=True)
        for i in step_slices(order, 0, 4, one, 3)
    ]
    assert [int(m.count) for m in dense] == [m.tokens for m in micro]
    loss_d, tok_d = backward_step(LossStep(model, recipe.loss, model.encode, None), dense, one)
    loss_s, tok_s = backward_step(LossStep(ref, recipe.loss, ref.encode, None), micro, one)
    assert int(tok_d) == int(tok_s) and float(loss_d) == pytest.approx(float(loss_s), rel=1e-6)
    for p, g in zip(model.parameters(), grads, strict=True):
        assert torch.allclose(p.grad, g, atol=1e-6)
    for mode in ("last", "sliding"):
        s, e = (torch.from_numpy(a) for a in window_bounds(data, 5, mode))
        win = gather_windows(items, s, e, 5)
        assert torch.equal(window_tokens(s, e, 5), ((win[:, :-1] != 0) & (win[:, 1:] != 0)).sum(1))


# ------------------------------------------------------------------ torchrun, end to end


TWO_GPUS = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, TWO_GPUS])])
def test_torchrun_two_processes_end_to_end(tmp_path, monkeypatch, device):
    """``torchrun --nproc-per-node 2 -m seqrec_core run``: early stop, one
    checkpoint set, and test metrics equal to one process on that checkpoint
    (Gloo on CPU; NCCL and bf16 training on two GPUs)."""
    data = recipe_dict(tmp_path, epochs=10, patience=1, lr=1e-9, device=device)
    data["eval"]["filter_seen"] = True
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "SEQREC_CACHE": str(tmp_path / "cache"),
    }
    env.pop("SEQREC_DISABLE_PLUGINS", None)
    monkeypatch.delenv("SEQREC_DISABLE_PLUGINS", raising=False)
    monkeypatch.setenv("SEQREC_CACHE", env["SEQREC_CACHE"])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd += ["--master-addr", "127.0.0.1", "--master-port", "PORT"]
    cmd += ["-m", "seqrec_core", "run", str(path), "--samples", "0"]
    for _attempt in range(3):  # the free port may be taken before torchrun binds it
        port = str(free_port())
        run = [port if a == "PORT" else a for a in cmd]
        proc = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120)
        if proc.returncode == 0 or "address already in use" not in proc.stderr.lower():
            break
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt_dir = tmp_path / "ckpt/t"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == [
        "best.safetensors",
        "histories.safetensors",
        "last.safetensors",
    ]
    events = [json.loads(x) for x in (tmp_path / "runs/t/events.jsonl").read_text().splitlines()]
    names = [e["event"] for e in events]
    assert names.count("fit_start") == 1 and names.count("early_stop") == 1
    assert events[-1]["status"] == "early_stopped"
    assert proc.stderr.count("best epoch") == 1  # console output from rank 0 only

    metrics = json.loads((tmp_path / "runs/t/metrics.json").read_text())["metrics"]
    reg = load_plugins()
    recipe = load_recipe(path, reg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers: the same kernels, the same floats
    try:
        ckpt = ckpt_io.load_checkpoint(ckpt_dir / "best.safetensors")
        model = ckpt_io.build_model(ckpt, reg).to(device)
        data_ = load_dataset(recipe, reg)
        metric_plugins = [reg.get("metrics", m) for m in recipe.eval.metrics]
        for split in ("valid", "test"):
            for seen, tag in ((recipe.eval.filter_seen, ""), (False, "/U"), (True, "/F")):
                single = evaluate(
                    model,
                    data_,
                    split,
                    metric_plugins,
                    recipe.eval.ks,
                    seen,
                    recipe.eval.batch_size,
                    device=device,
                )
                got = {
                    k[: len(k) - len(tag)]: v for k, v in metrics[split].items() if k.endswith(tag)
                }
                if not tag:
                    got = {k: v for k, v in metrics[split].items() if "/" not in k}
                assert single == got, (split, tag)
    finally:
        torch.set_num_threads(threads)
