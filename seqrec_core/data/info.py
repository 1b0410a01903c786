"""``seqrec data info``: what a dataset looks like after filtering and splitting.

Sizes, density, the distribution of sequence lengths, how concentrated item
popularity is (share of all interactions that go to the most popular items,
and to the less popular half), the split, the time span and the metadata
columns. :func:`data_recipe` turns ``seqrec data info`` arguments (a recipe
file, a downloadable name such as ``ml-1m`` or a dataset plugin name, plus
``-o dataset.…``/``-o split.…`` overrides) into what :func:`load_dataset` needs.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import numpy as np

from seqrec_core.data.core import SequenceData
from seqrec_core.data.download import known_downloads
from seqrec_core.errors import SeqrecError

PERCENTILES = (5, 25, 50, 75, 95, 99)
HEAD_SHARES = (0.01, 0.1, 0.2)


def dataset_info(data: SequenceData) -> dict[str, Any]:
    """Plain-data summary of ``data`` (JSON-able)."""
    lengths = data.lengths
    counts = np.bincount(data.items, minlength=data.n_items + 1)[1:]
    ranked = np.sort(counts)[::-1]
    total = max(1, int(counts.sum()))
    n = data.n_items
    popularity: dict[str, Any] = {
        f"top {p:.0%} items": float(ranked[: max(1, math.ceil(p * n))].sum() / total)
        for p in HEAD_SHARES
    }
    popularity["bottom 50% items"] = float(ranked[n - n // 2 :].sum() / total) if n > 1 else 0.0
    popularity["items with < 5 interactions"] = int((counts < 5).sum())
    popularity["gini"] = _gini(counts)
    split = data.split
    split_info: dict[str, Any] = {
        "name": split.name,
        "train interactions": int(data.train_lengths.sum()),
        "valid users": int((split.valid_pos >= 0).sum()),
        "test users": int((split.test_pos >= 0).sum()),
    }
    for key in ("valid_quantile", "test_quantile"):
        if key in split.info:
            split_info[key.replace("_", " ")] = split.info[key]
    for key in ("valid_cutoff", "test_cutoff"):
        if key in split.info:
            split_info[key.replace("_", " ")] = _when(split.info[key])
    info: dict[str, Any] = {
        "dataset": data.name,
        "users": data.n_users,
        "items": n,
        "interactions": int(len(data.items)),
        "density": len(data.items) / max(1, data.n_users * n),
        "sequence length": {
            "mean": float(lengths.mean()) if len(lengths) else 0.0,
            "min": int(lengths.min()) if len(lengths) else 0,
            **{f"p{p}": float(np.percentile(lengths, p)) for p in PERCENTILES},
            "max": int(lengths.max(initial=0)),
        },
        "popularity": popularity,
        "split": split_info,
    }
    if data.timestamps is not None and len(data.timestamps):
        info["time"] = {
            "first": _when(float(np.min(data.timestamps))),
            "last": _when(float(np.max(data.timestamps))),
        }
    info["item metadata"] = [str(c) for c in data.item_meta.columns]
    info["user metadata"] = [str(c) for c in data.user_meta.columns]
    return info


def _gini(counts: np.ndarray) -> float:
    """Gini coefficient of item popularity (0: uniform, → 1: one item has all)."""
    if len(counts) == 0 or counts.sum() == 0:
        return 0.0
    x = np.sort(counts).astype(np.float64)
    n = len(x)
    return float((2 * np.arange(1, n + 1) - n - 1).dot(x) / (n * x.sum()))


def _when(seconds: float) -> str:
    """Epoch seconds as an ISO UTC time (numbers outside the calendar as is)."""
    try:
        moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return f"{seconds:g}"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def info_table(info: dict[str, Any]):
    """A rich table of :func:`dataset_info`."""
    from rich.table import Table

    table = Table(title=f"dataset {info['dataset']}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", justify="right")
    for key, value in info.items():
        if key == "dataset":
            continue
        if isinstance(value, dict):
            table.add_section()
            table.add_row(f"[underline]{key}[/]", "")
            for sub, v in value.items():
                table.add_row(f"  {sub}", _fmt(sub, v))
        else:
            table.add_row(key, _fmt(key, value))
    return table


def _fmt(key: str, value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(value) or "—"
    if isinstance(value, float):
        if key.startswith(("top", "bottom")):
            return f"{value:.1%}"
        if key == "density":
            return f"{value:.4%}"
        return f"{value:,.2f}" if value >= 1 or value == 0 else f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# ----------------------------------------------------------------- arguments → recipe


def data_recipe(target: str, overrides: list[str], registry: Any) -> Any:
    """What ``load_dataset`` needs, from a recipe file or a dataset name.

    ``target`` is a recipe path (``*.yaml``/``*.yml`` or an existing file), a
    downloadable name (``ml-1m``, ``steam``: their plugin with ``path: auto``)
    or a dataset plugin name (``synthetic``). ``overrides`` are ``-o`` values for
    ``dataset.*`` and ``split.*``."""
    from seqrec_core.recipe import load_data_sections, load_recipe

    if target.endswith((".yaml", ".yml")) or Path(target).is_file():
        return load_recipe(target, registry, overrides)
    downloads = known_downloads(registry)
    if target in downloads:
        section = dict(downloads[target].dataset)
    elif target in registry.names("datasets"):
        section = {"name": target}
    else:
        from seqrec_core.plugins import did_you_mean

        known = sorted({*downloads, *registry.names("datasets")})
        raise SeqrecError(
            f"'{target}' is not a recipe file, a downloadable dataset or a dataset plugin"
            f"{did_you_mean(target, known)}; known: {', '.join(known)}"
        )
    return load_data_sections(section, registry, overrides, source=target)
