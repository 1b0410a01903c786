"""What a finished run cost (RQ3): read from its files, plus a post-run measurement.

From ``runs/<run>/events.jsonl`` and ``metrics.json`` (written by every run):

* ``params`` — trainable parameters (``fit_start``);
* ``epoch_train_s`` — median seconds of the training part of an epoch
  (``epoch_end.train_time``; validation excluded);
* ``epoch_s`` — median seconds of a whole epoch (training + validation);
* ``time_to_best_s`` — seconds of all epochs up to and including the best one
  (the time to convergence under early stopping);
* ``total_s`` — the whole fit, final evaluation included (``fit_end``);
* ``tokens_per_s`` — median training tokens (supervised positions) per second;
* ``gpu_mem_nvml_gib`` — the device-wide peak memory that NVML saw, when the
  ``gpu_monitor`` callback ran (``epoch_end.gpu``; other processes included).

Measured afterwards by :func:`measure_run` (no callback needed, so it works on
any finished run, including those trained before this existed):

* ``train_peak_gib`` — ``torch.cuda.max_memory_allocated`` over two optimizer
  steps of the recipe's loss, optimizer and batch size on full-length windows
  (an upper bound of the trainer's own peak; NaN on a CPU);
* ``latency_b1_ms`` / ``latency_b256_ms`` — median ``predict`` + top-10 on the
  test histories of 1 and 256 users (:func:`~seqrec_core.research.latency.time_call`).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqrec_core.data.core import SequenceData
from seqrec_core.events import EVENTS_FILE
from seqrec_core.recipe import Recipe
from seqrec_core.research.latency import median_time

GIB = 2**30


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events of the last fresh start in ``events.jsonl`` (a run that was
    started over appends; a resumed run continues the same history)."""
    if not path.is_file():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    starts = [
        i
        for i, e in enumerate(events)
        if e.get("event") == "fit_start" and e.get("start_epoch", 1) == 1
    ]
    return events[starts[-1] :] if starts else events


def _median(values: list[float]) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(values) if values else math.nan


def run_cost(run_dir: Path) -> dict[str, float]:
    """Cost numbers of a run from its ``events.jsonl`` and ``metrics.json``.
    Without events, epoch time and time to best come from ``total_time`` /
    ``epochs_run`` (per-epoch train time and tokens/s are then unknown)."""
    events = read_events(run_dir / EVENTS_FILE)
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    epochs: dict[int, dict] = {}
    params = math.nan
    total = float(metrics.get("total_time", math.nan))
    for e in events:
        kind = e.get("event")
        if kind == "fit_start":
            params = float(e.get("params", math.nan))
        elif kind == "epoch_end":
            epochs[int(e["epoch"])] = e  # a replayed epoch (resume) keeps its last record
        elif kind == "fit_end" and e.get("status") in ("completed", "early_stopped"):
            total = float(e.get("total_time") or total)
            params = float(e.get("params", params))
    best = int(metrics.get("best_epoch", 0) or 0)
    if math.isnan(params) and metrics.get("params") is not None:
        params = float(metrics["params"])
    shared = float(metrics.get("concurrent_runs") or math.nan)  # unknown: older runs
    ordered = [epochs[k] for k in sorted(epochs)]
    gpu = [
        g.get("memory_used")
        for e in ordered
        for g in (e.get("gpu") or [])
        if g.get("memory_used") is not None
    ]
    if not ordered and metrics.get("epochs_run"):
        # events.jsonl missing (e.g. only the JSON files were copied off a GPU
        # machine): epoch and time-to-best from the run's mean epoch time.
        run_epochs = int(metrics["epochs_run"])
        mean = total / run_epochs if run_epochs else math.nan
        return {
            "params": params,
            "epochs": float(run_epochs),
            "best_epoch": float(best),
            "epoch_train_s": math.nan,
            "epoch_s": mean,
            "time_to_best_s": mean * best,
            "total_s": total,
            "tokens_per_s": math.nan,
            "gpu_mem_nvml_gib": math.nan,
            "concurrent_runs": shared,
        }
    return {
        "params": params,
        "epochs": float(len(ordered)),
        "best_epoch": float(best),
        "epoch_train_s": _median([e.get("train_time") for e in ordered]),
        "epoch_s": _median([e.get("epoch_time") for e in ordered]),
        "time_to_best_s": float(
            sum(e.get("epoch_time") or 0.0 for e in ordered if int(e["epoch"]) <= best)
        )
        if ordered
        else math.nan,
        "total_s": total,
        "tokens_per_s": _median([e.get("tokens_per_s") for e in ordered]),
        "gpu_mem_nvml_gib": max(gpu) / GIB if gpu else math.nan,
        "concurrent_runs": shared,
    }


def train_step_peak(
    model: Any, recipe: Recipe, n_items: int, device: torch.device, steps: int = 2
) -> float:
    """Peak GiB allocated by ``steps`` optimizer steps on full-length random
    windows (CUDA only; NaN elsewhere). Leaves the model's weights changed:
    call it on a copy or last."""
    from seqrec_core.train import LossStep, build_optimizer, make_micro_batch

    if device.type != "cuda" or not model.trainable:
        return math.nan
    model.train()
    width = (model.max_len or 200) + (0 if model.objective == "masked" else 1)
    gen = torch.Generator(device).manual_seed(0)
    step = LossStep(model, recipe.loss, model.encode, gen)
    optimizer = build_optimizer(recipe.train, model, device)
    amp = recipe.train.amp
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    for _ in range(steps):
        windows = torch.randint(
            1, n_items + 1, (recipe.train.batch_size, width), device=device, generator=gen
        )
        micro = make_micro_batch(model, windows, gen)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = step(micro.inputs, micro.sel, micro.targets)
        loss.backward()
        optimizer.step()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) / GIB
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    return peak


def inference_latency(
    model: Any,
    data: SequenceData,
    batch: int,
    device: torch.device,
    amp: bool = True,
    k: int = 10,
    repeat: int = 20,
) -> float:
    """Median seconds of ``predict`` + top-``k`` for the test histories of
    ``batch`` users (repeated cyclically when fewer users are evaluated)."""
    users = data.eval_users("test")
    if len(users) == 0:
        users = np.arange(data.n_users)
    users = np.resize(users, batch)
    seqs = torch.from_numpy(data.padded("test", users, model.max_len)).to(device)
    amp = amp and device.type == "cuda"
    model.eval()
    k = min(k, data.n_items)

    def call():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            return model.predict(seqs).topk(k).indices

    return median_time(call, device, warmup=3, repeat=repeat)


def measure_run(
    model: Any, recipe: Recipe, data: SequenceData, device: torch.device
) -> dict[str, float]:
    """The post-run numbers: inference latency at B=1 and B=256, training peak memory."""
    model = model.to(device)
    out = {
        "latency_b1_ms": inference_latency(model, data, 1, device, recipe.train.amp) * 1e3,
        "latency_b256_ms": inference_latency(model, data, 256, device, recipe.train.amp) * 1e3,
    }
    out["train_peak_gib"] = train_step_peak(model, recipe, data.n_items, device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out
