"""Inference latency vs sequence length (``seqrec bench latency``).

Every model is built with the same width (``dim``), depth (``blocks`` /
``layers``), ``heads`` and catalogue size, with random weights, once per
sequence length ``L`` (``max_len = L``). One call is ``predict`` on a batch of
full-length random histories followed by the top-10 — what serving a request
costs. Timing: after ``warmup`` calls, ``repeat`` calls each timed with CUDA
events on a GPU (``perf_counter`` around the call and a synchronisation on a
CPU); the median is reported.

The exponent ``α`` of ``latency ∝ L^α`` is the least-squares slope of
``log latency`` on ``log L``, with its ``R²``. ``α ≈ 1`` means the time is
proportional to the work of a linear-in-L model, ``α ≈ 2`` the quadratic
attention term dominates, and ``α ≪ 1`` means the call is bound by something
that does not grow with ``L`` (kernel launches, the output layer over the
catalogue, Python): the model is not yet using the device. The fit is also
reported over the upper half of the lengths, where that fixed cost matters
least.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqrec_core.errors import SeqrecError

#: Architecture knobs set alike in every model, by option name (first that exists).
ARCH_OPTIONS = {
    "dim": ("dim",),
    "blocks": ("blocks", "layers"),
    "heads": ("heads",),
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], Any], device: torch.device, warmup: int = 3, repeat: int = 10
) -> list[float]:
    """Seconds of ``repeat`` calls of ``fn`` after ``warmup`` untimed ones."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def median_time(fn: Callable[[], Any], device: torch.device, warmup: int = 3, repeat: int = 10):
    return statistics.median(time_call(fn, device, warmup, repeat))


@dataclass
class PowerFit:
    alpha: float
    log_c: float
    r2: float
    n: int

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.exp(self.log_c) * np.asarray(x, dtype=float) ** self.alpha


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> PowerFit:
    """Least-squares fit of ``log y = α log x + c`` over the finite, positive points."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        return PowerFit(math.nan, math.nan, math.nan, int(ok.sum()))
    lx, ly = np.log(x[ok]), np.log(y[ok])
    alpha, log_c = np.polyfit(lx, ly, 1)
    resid = ly - (alpha * lx + log_c)
    total = ((ly - ly.mean()) ** 2).sum()
    r2 = 1.0 - (resid**2).sum() / total if total > 0 else 1.0
    return PowerFit(float(alpha), float(log_c), float(r2), int(ok.sum()))


def build_model(
    cls: Any, n_items: int, max_len: int, dim: int, blocks: int, heads: int, extra: dict
) -> Any:
    """``cls`` with the shared architecture knobs (those its options have)."""
    fields = cls.Options.model_fields
    opts: dict[str, Any] = {}
    wanted = {"dim": dim, "blocks": blocks, "heads": heads}
    for key, names in ARCH_OPTIONS.items():
        name = next((n for n in names if n in fields), None)
        if name is not None:
            opts[name] = wanted[key]
    if "max_len" in fields:
        opts["max_len"] = max_len
    if "dropout" in fields:
        opts["dropout"] = 0.0
    opts.update({k: v for k, v in extra.items() if k in fields})
    return cls(cls.Options(**opts), n_items)


@dataclass
class LatencyConfig:
    models: list[str] = field(default_factory=list)  # empty: every trainable model plugin
    dim: int = 64
    blocks: int = 2
    heads: int = 2
    n_items: int = 3416
    lengths: list[int] = field(default_factory=lambda: list(range(64, 1537, 64)))
    batches: list[int] = field(default_factory=lambda: [32, 512])
    warmup: int = 5
    repeat: int = 20
    topk: int = 10
    amp: bool = True  # bf16 autocast on CUDA (as training and model_bench do)
    device: str = "auto"
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # extra model options, if present

    @classmethod
    def tiny(cls, **kw: Any) -> LatencyConfig:
        """A few seconds on a CPU: for tests and smoke checks."""
        base = dict(
            dim=16, blocks=1, heads=2, n_items=50, lengths=[16, 32, 64], batches=[2, 8],
            warmup=1, repeat=3, device="cpu",
        )  # fmt: skip
        base.update(kw)
        return cls(**base)


@dataclass
class LatencyRow:
    model: str
    batch: int
    length: int
    seconds: float  # median; NaN when it did not fit in memory
    params: int

    @property
    def sequences_per_s(self) -> float:
        return self.batch / self.seconds if self.seconds > 0 else math.nan

    @property
    def tokens_per_s(self) -> float:
        return self.batch * self.length / self.seconds if self.seconds > 0 else math.nan


def model_names(registry: Any, wanted: Sequence[str]) -> list[str]:
    """``wanted`` (checked) or every model plugin that has parameters to train."""
    known = registry.names("models")
    for name in wanted:
        if name not in known:
            raise SeqrecError(f"unknown model '{name}'; available: {', '.join(known)}")
    if wanted:
        return list(wanted)
    return [n for n in known if getattr(registry.get("models", n), "objective", "") != "none"]


def run_latency(
    registry: Any, cfg: LatencyConfig, log: Callable[[str], None] | None = None
) -> list[LatencyRow]:
    """Median latency of ``predict`` + top-k per model, batch and length."""
    from seqrec_core.run import resolve_device

    device = resolve_device(cfg.device)
    amp = cfg.amp and device.type == "cuda"
    rows: list[LatencyRow] = []
    for name in model_names(registry, cfg.models):
        cls = registry.get("models", name)
        for length in cfg.lengths:
            torch.manual_seed(cfg.seed)
            model = build_model(
                cls, cfg.n_items, length, cfg.dim, cfg.blocks, cfg.heads, cfg.options
            )
            model = model.to(device).eval()
            params = model.num_parameters()
            for batch in cfg.batches:
                seconds = _time_predict(model, batch, length, cfg, device, amp)
                rows.append(LatencyRow(name, batch, length, seconds, params))
                if log:
                    log(f"{name} B={batch} L={length}: {seconds * 1e3:.3f} ms")
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def _time_predict(model, batch, length, cfg, device, amp) -> float:
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    seqs = torch.randint(1, cfg.n_items + 1, (batch, length), generator=gen).to(device)
    k = min(cfg.topk, cfg.n_items)

    def call():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            return model.predict(seqs).topk(k).indices

    try:
        return median_time(call, device, cfg.warmup, cfg.repeat)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return math.nan


def fits(rows: Sequence[LatencyRow]) -> list[dict[str, Any]]:
    """α per model and batch over all lengths and over the upper half of them."""
    out = []
    for model, batch in dict.fromkeys((r.model, r.batch) for r in rows):
        sel = sorted(
            (r for r in rows if r.model == model and r.batch == batch), key=lambda r: r.length
        )
        x = [r.length for r in sel]
        y = [r.seconds for r in sel]
        full = fit_power_law(x, y)
        half = len(sel) // 2
        upper = (
            fit_power_law(x[half:], y[half:])
            if len(sel) >= 4
            else PowerFit(math.nan, math.nan, math.nan, 0)
        )
        out.append(
            {
                "model": model,
                "batch": batch,
                "alpha": full.alpha,
                "R2": full.r2,
                "upper from L": x[half] if len(sel) >= 4 else math.nan,
                "alpha upper": upper.alpha,
                "R2 upper": upper.r2,
                "ms at min L": y[0] * 1e3 if y else math.nan,
                "ms at max L": y[-1] * 1e3 if y else math.nan,
                "params": sel[0].params if sel else 0,
            }
        )
    return out


def latency_tables(rows: Sequence[LatencyRow]) -> tuple[list[dict], list[dict]]:
    """Wide tables: latency (ms) and throughput (tokens/s), one row per model and
    batch, one column per length."""
    lat, thr = [], []
    for model, batch in dict.fromkeys((r.model, r.batch) for r in rows):
        sel = [r for r in rows if r.model == model and r.batch == batch]
        lat.append(
            {"model": model, "batch": batch, **{f"L={r.length}": r.seconds * 1e3 for r in sel}}
        )
        thr.append(
            {"model": model, "batch": batch, **{f"L={r.length}": r.tokens_per_s for r in sel}}
        )
    return lat, thr


def plot_latency(rows: Sequence[LatencyRow], path: Path, title: str = "") -> Path:
    """Log-log latency vs length, one panel per batch size, with the fitted lines."""
    from matplotlib import ticker

    from seqrec_core.research.reports import pyplot, save_figure

    plt = pyplot()
    batches = sorted({r.batch for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(5.5 * len(batches), 4), squeeze=False)
    for ax, batch in zip(axes[0], batches, strict=True):
        for model in dict.fromkeys(r.model for r in rows):
            sel = sorted(
                (r for r in rows if r.model == model and r.batch == batch), key=lambda r: r.length
            )
            x = np.array([r.length for r in sel], dtype=float)
            y = np.array([r.seconds * 1e3 for r in sel])
            fit = fit_power_law(x, y)
            (line,) = ax.plot(
                x, y, "o", ms=3, label=f"{model}: α={fit.alpha:.2f} (R²={fit.r2:.2f})"
            )
            if math.isfinite(fit.alpha):
                ax.plot(x, fit.predict(x), "-", color=line.get_color(), lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        lengths = sorted({r.length for r in rows})
        ticks = [n for n in lengths if n & (n - 1) == 0 or n == lengths[-1]] or lengths
        ax.set_xticks(ticks, [str(n) for n in ticks])
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("sequence length L")
        ax.set_ylabel("latency (ms, median)")
        ax.set_title(f"batch {batch}")
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def write_latency_report(
    rows: Sequence[LatencyRow], cfg: LatencyConfig, out: Path, prov: dict | None = None
) -> list[Path]:
    """Tables, plot and README of a latency run in ``out``."""
    from seqrec_core.research.reports import markdown_table, write_readme, write_table

    out.mkdir(parents=True, exist_ok=True)
    raw = [
        {
            "model": r.model,
            "batch": r.batch,
            "length": r.length,
            "ms": r.seconds * 1e3,
            "sequences_per_s": r.sequences_per_s,
            "tokens_per_s": r.tokens_per_s,
            "params": r.params,
        }
        for r in rows
    ]
    lat, thr = latency_tables(rows)
    fit_rows = fits(rows)
    files = [
        *write_table(raw, out / "latency_raw"),
        *write_table(lat, out / "latency_ms"),
        *write_table(thr, out / "throughput_tokens_per_s"),
        *write_table(fit_rows, out / "alpha"),
        plot_latency(rows, out / "latency.png", "predict + top-10 latency vs sequence length"),
    ]
    setup = (
        f"Models at dim {cfg.dim}, {cfg.blocks} blocks/layers, {cfg.heads} heads, "
        f"{cfg.n_items:,} items, random weights, dropout 0; lengths {cfg.lengths[0]}…"
        f"{cfg.lengths[-1]}; batches {cfg.batches}; median of {cfg.repeat} calls after "
        f"{cfg.warmup} warm-up calls; {'bf16 autocast' if cfg.amp else 'fp32'} on CUDA."
    )
    body = "\n\n".join(
        [
            setup,
            "## Exponent α (latency ∝ L^α)",
            markdown_table(fit_rows),
            "## Latency (ms)",
            markdown_table(lat),
            "## Throughput (tokens/s)",
            markdown_table(thr),
        ]
    )
    files.append(write_readme(out, "Inference latency vs sequence length", body, files, prov))
    return files
