"""One recipe → dataset → model → (training) → evaluation → files under ``runs/<name>/``.

Under ``torchrun`` every rank runs :func:`run_recipe`: it creates the process
group (:func:`seqrec_core.distributed.session`), every rank loads the data and
trains, and only rank 0 prints and writes files (``docs/distributed.md``).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from seqrec_core import distributed
from seqrec_core.data import SequenceData, load_dataset
from seqrec_core.errors import SeqrecError
from seqrec_core.gpu import concurrent_runs
from seqrec_core.plugins import Registry
from seqrec_core.recipe import Recipe
from seqrec_core.train import FitResult, Trainer


@dataclass
class RunResult:
    name: str
    run_dir: Path
    stats: dict[str, Any]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file + rename so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise SeqrecError(
            "train.device is 'cuda' but no CUDA GPU is available; use 'auto' or 'cpu'"
        )
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def stats_table(stats: dict[str, Any]) -> Table:
    table = Table(title="dataset", show_header=False)
    for key, value in stats.items():
        table.add_row(key, f"{value:.6f}" if isinstance(value, float) else f"{value:,}")
    return table


def metrics_table(metrics: dict[str, dict[str, float]], title: str = "metrics") -> Table:
    names = list(next(iter(metrics.values()), {}))
    table = Table(title=title)
    table.add_column("metric")
    for split in metrics:
        table.add_column(split, justify="right")
    for name in names:
        table.add_row(name, *(f"{metrics[s].get(name, float('nan')):.4f}" for s in metrics))
    return table


def build_model(recipe: Recipe, registry: Registry, data: SequenceData) -> Any:
    cls = registry.get("models", recipe.model.name)
    return cls(recipe.model_options, data.n_items)


def build_callbacks(recipe: Recipe, registry: Registry) -> list[Any]:
    return [
        registry.get("callbacks", entry.name)(options)
        for entry, options in zip(recipe.callbacks, recipe.callback_options, strict=True)
    ]


def run_names(recipe: Recipe) -> dict[int, str]:
    """Run name per seed: the recipe name, or ``<name>-seed<seed>`` with several seeds."""
    seeds = recipe.train.seeds
    if len(seeds) == 1:
        return {seeds[0]: recipe.name}
    return {s: f"{recipe.name}-seed{s}" for s in seeds}


def check_fresh(recipe: Recipe, resume: bool, overwrite: bool) -> None:
    """Never overwrite a finished run's checkpoints by accident."""
    if resume or overwrite:
        return
    for name in run_names(recipe).values():
        existing = Path(recipe.output.checkpoints_dir) / name / "best.safetensors"
        if existing.exists():
            raise SeqrecError(
                f"{existing} already exists; continue it with --resume, start over with "
                f"--overwrite, or choose another name (-o name=...)"
            )


def summarise(results: list[FitResult]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and std (population, ddof=0) per split and metric across seeds."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for split in ("valid", "test"):
        names = list(getattr(results[0], split))
        out[split] = {}
        for name in names:
            values = np.array([getattr(r, split)[name] for r in results], dtype=float)
            out[split][name] = {"mean": float(values.mean()), "std": float(values.std())}
    return out


def seeds_table(results: list[FitResult], summary: dict, title: str) -> Table:
    table = Table(title=title)
    table.add_column("test metric")
    for r in results:
        table.add_column(f"seed {r.seed}", justify="right")
    table.add_column("mean ± std", justify="right")
    for name, agg in summary["test"].items():
        table.add_row(
            name,
            *(f"{r.test[name]:.4f}" for r in results),
            f"{agg['mean']:.4f} ± {agg['std']:.4f}",
        )
    return table


def show_samples(
    console: Console,
    model: Any,
    data: SequenceData,
    device: torch.device,
    n_users: int = 3,
    k: int = 10,
) -> None:
    """Top-``k`` for a few users, by title, after training."""
    from seqrec_core.checkpoint import item_metadata
    from seqrec_core.recommend import Catalogue, recommendation_table, top_k

    meta = item_metadata(data)
    catalogue = Catalogue(meta["item_ids"], meta["titles"])
    users = data.eval_users("test")[:n_users]
    model.eval()
    for u in users:
        start, end = data.history_bounds("test", np.array([u]))
        history = data.items[start[0] : end[0]].tolist()
        recs = top_k(model, history, k, catalogue=catalogue, device=device)
        raw = data.user_map.to_raw(u)
        console.print(recommendation_table(recs, history, catalogue, f"top-{k} for user {raw}"))


def run_recipe(
    recipe: Recipe,
    registry: Registry,
    console: Console | None = None,
    resume: bool = False,
    overwrite: bool = False,
    samples: int = 3,
) -> RunResult:
    """Run ``recipe`` (every seed). Under ``torchrun`` every rank calls this; the
    process group lives as long as the call."""
    device = resolve_device(recipe.train.device)
    with distributed.session(device) as world:
        if not world.is_main:
            console = Console(stderr=True, quiet=True)
        return _run_recipe(
            recipe, registry, console or Console(stderr=True), resume, overwrite, samples, device
        )


def _run_recipe(
    recipe: Recipe,
    registry: Registry,
    console: Console,
    resume: bool,
    overwrite: bool,
    samples: int,
    device: torch.device,
) -> RunResult:
    main = distributed.is_main()
    distributed.everywhere(lambda: check_fresh(recipe, resume, overwrite), "checking checkpoints")
    run_dir = Path(recipe.output.runs_dir) / recipe.name

    def write_recipe() -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "recipe.yaml", recipe.to_yaml())

    distributed.on_main(write_recipe, f"writing {run_dir}/recipe.yaml")
    console.print(f"[bold]recipe[/] {recipe.source} → {run_dir}/recipe.yaml")
    console.print(recipe.to_yaml(), markup=False, highlight=False)

    t0 = time.perf_counter()
    # Each node's first rank builds the processed-data cache; the others then read it.
    data = distributed.local_main_first(
        lambda: load_dataset(recipe, registry, log=console.print), "loading the dataset"
    )
    stats = data.stats()
    console.print(stats_table(stats))
    console.print(f"data ready in {time.perf_counter() - t0:.2f}s")
    device = distributed.local_device(device)

    results: list[FitResult] = []
    trainer = None
    for seed, name in run_names(recipe).items():
        callbacks = build_callbacks(recipe, registry) if main else []
        trainer = Trainer(recipe, registry, data, seed, name, device, callbacks)
        res = trainer.fit(resume=resume)
        results.append(res)
        context = run_context(trainer.model, device)
        distributed.on_main(
            lambda name=name, res=res, context=context: atomic_write_text(
                Path(recipe.output.runs_dir) / name / "metrics.json",
                json.dumps(_payload(recipe, stats, res) | context, indent=2),
            ),
            f"writing {name}/metrics.json",
        )
        console.print(
            metrics_table(
                {"valid": res.valid, "test": res.test}, f"{name}: best epoch {res.best_epoch}"
            )
        )

    summary = summarise(results)
    result = RunResult(
        recipe.name,
        run_dir,
        stats,
        {s: {k: v["mean"] for k, v in summary[s].items()} for s in summary},
    )
    if len(results) > 1:
        console.print(seeds_table(results, summary, f"{recipe.name}: {len(results)} seeds"))
    distributed.on_main(
        lambda: atomic_write_text(
            run_dir / "summary.json",
            json.dumps(
                {
                    **_payload(recipe, stats, None),
                    "seeds": [r.seed for r in results],
                    "runs": [_payload(recipe, stats, r) for r in results],
                    "summary": summary,
                },
                indent=2,
            ),
        ),
        f"writing {run_dir}/summary.json",
    )
    if samples and trainer is not None and main:
        show_samples(console, trainer.model, data, device, samples)
    console.print(f"wrote {run_dir}/summary.json; best model: {results[-1].checkpoint}")
    return result


def run_context(model: Any, device: torch.device) -> dict[str, Any]:
    """Parameter count, device and how many runs shared it (metrics.json)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {"params": model.num_parameters(), "device": name, "concurrent_runs": concurrent_runs()}


def _payload(recipe: Recipe, stats: dict, res: FitResult | None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "name": recipe.name,
        "model": recipe.model.name,
        "dataset": recipe.dataset.name,
        "protocol": "F (seen items filtered)" if recipe.eval.filter_seen else "U (all items)",
        "stats": stats,
    }
    if res is not None:
        payload.update(
            run=res.run,
            seed=res.seed,
            status=res.status,
            best_epoch=res.best_epoch,
            epochs_run=res.epochs_run,
            total_time=res.total_time,
            checkpoint=str(res.checkpoint),
            metrics={"valid": res.valid, "test": res.test},
        )
    return payload
