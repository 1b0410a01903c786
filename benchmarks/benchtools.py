"""Helpers shared by the benchmark scripts of this folder (``from benchtools import …``
works because Python puts a script's folder on ``sys.path``)."""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace
from typing import Any

import torch

#: Benchmark argument → the model option names that mean it.
ARCH = {"dim": ("dim",), "blocks": ("blocks", "layers"), "heads": ("heads",)}


def build_model(cls: Any, args: Any, max_len: int | None = None, n_items: int | None = None):
    """A model plugin's class built with the benchmark's size arguments (``dim``,
    ``blocks``/``layers``, ``heads``, ``max_len``, ``chunk_size`` where the model has
    them) and its ``--option KEY=VALUE`` options (those the model has);
    ``max_len`` / ``n_items`` default to ``args.max_len`` / ``args.items``."""
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
    extra = getattr(args, "option", None) or {}
    if isinstance(extra, list):  # not yet parsed by check_options
        extra = parse_options(extra)
    opts.update({k: v for k, v in extra.items() if k in fields})
    return cls(cls.Options(**opts), n_items or args.items)


def parse_options(pairs: list[str] | None, models: list[Any] | None = None) -> dict[str, Any]:
    """``["chunk_size=128", "triton_args={num_warps_intra: 4}"]`` → a dict, values
    read as YAML. With ``models`` (plugin classes), a key none of them has is an
    error that names the options they do have."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--option {pair!r}: expected KEY=VALUE, e.g. chunk_size=128")
        out[key.strip()] = yaml.safe_load(value)
    if models:
        known = set().union(*(cls.Options.model_fields for cls in models))
        unknown = sorted(set(out) - known)
        if unknown:
            raise SystemExit(
                f"--option {unknown[0]}: no benchmarked model has it; options: "
                + ", ".join(sorted(known))
            )
    return out


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


#: The optimizer settings every step benchmark uses (``build_optimizer``'s fields).
ADAMW = SimpleNamespace(optimizer="adamw", lr=1e-3, betas=(0.9, 0.98), weight_decay=0.0)


def add_size_args(p: argparse.ArgumentParser, models: list[str] | None = None) -> None:
    """The model / batch size arguments shared by the step benchmarks (the issue's
    reference configuration by default: d=256, 4 blocks, 4 heads, B=128, L=200,
    10.7k items)."""
    p.add_argument("--models", nargs="*", default=models)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--max-len", type=int, default=200)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--items", type=int, default=10_700)
    p.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="a model option for the models that have it (YAML value; repeatable), "
        "e.g. --option chunk_size=128 --option 'triton_args={num_warps_intra: 4}'",
    )


def check_options(args: Any, registry: Any, names: list[str]) -> str:
    """Parse ``args.option`` in place, checked against the models ``names``;
    returns it for a table title (``""`` when there are none)."""
    args.option = parse_options(args.option, [registry.get("models", n) for n in names])
    return "".join(f", {k}={v}" for k, v in args.option.items())


def random_batch(model: Any, args: Any, device: torch.device):
    """A random ``[batch, max_len]`` training batch for ``model``'s objective:
    ``(inputs, labels, sel, targets)`` — labels shaped like inputs (0 = none),
    ``sel`` the supervised positions and ``targets = labels[sel]``."""
    seqs = torch.randint(1, args.items + 1, (args.batch, args.max_len + 1), device=device)
    if model.objective == "masked":
        inputs, labels = model.mask_batch(seqs[:, 1:])
    else:
        inputs, labels = seqs[:, :-1], seqs[:, 1:]
    sel = labels != 0
    return inputs, labels, sel, labels[sel]
