"""Helpers shared by the benchmark scripts of this folder (``from benchtools import …``
works because Python puts a script's folder on ``sys.path``)."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

#: Benchmark argument → the model option names that mean it.
ARCH = {"dim": ("dim",), "blocks": ("blocks", "layers"), "heads": ("heads",)}


def build_model(cls: Any, args: Any, max_len: int | None = None, n_items: int | None = None):
    """A model plugin's class built with the benchmark's size arguments (``dim``,
    ``blocks``/``layers``, ``heads``, ``max_len``, ``chunk_size`` where the model has
    them); ``max_len`` / ``n_items`` default to ``args.max_len`` / ``args.items``."""
    fields = cls.Options.model_fields
    opts: dict[str, Any] = {}
    if "max_len" in fields:
        opts["max_len"] = max_len or args.max_len
    for key, names in ARCH.items():
        for name in names:
            if name in fields:
                opts[name] = getattr(args, key)
    if "chunk_size" in fields and getattr(args, "chunk_size", None):
        opts["chunk_size"] = args.chunk_size
    return cls(cls.Options(**opts), n_items or args.items)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, warmup: int = 3, repeat: int = 10) -> float:
    """Median wall time of ``fn()`` over ``repeat`` synchronised calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
