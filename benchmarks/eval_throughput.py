"""Full-ranking evaluation throughput: the straightforward loop vs seqrec's evaluation.

    python benchmarks/eval_throughput.py                   # ML-20M-sized, 4 models, GPU
    python benchmarks/eval_throughput.py --filter-seen     # protocol F (seen items removed)
    python benchmarks/eval_throughput.py --models sasrec --dim 256 --blocks 4
    python benchmarks/eval_throughput.py --device cpu --users 2000 --items 500   # smoke test

Data: random CSR sequences with the shape of MovieLens-20M (138,000 users,
27,000 items, at least 20 and on average 145 interactions per user, skewed
item popularity), leave-one-out split, made directly with numpy in a few
seconds. Models: freshly initialised (seeded) SASRec, BERT4Rec, LSTM and
xLSTM (``--dim``, ``--blocks``, ``--max-len``; the weights do not change the
work). Every user of the ``--split`` is ranked against all items.

Configurations, each on the same model and data:

* ``plain`` — the straightforward loop evaluation used before issue 8,
  re-implemented here verbatim: ``--plain-batch`` users per batch, histories
  padded with numpy on the host and copied over, ranks by a candidate mask,
  ranks and top-K copied back after every batch; fp32.
* ``fast`` — :func:`seqrec_core.evaluate.rank_split` with its defaults:
  sequences on the device once, histories and seen filter gathered there,
  chunks sized by ``eval.score_budget``, one transfer at the end; fp32.
  Exact: the ranks must equal ``plain``'s (up to fp32 rounding of a batch of
  another size).
* ``fast+amp`` (CUDA) — the same under bf16 autocast (``eval.amp``): the
  encoder in bf16, the scores still fp32. Not exact; the table shows by how
  much it moves the ranks and NDCG@10.

Timings: wall clock of the whole call (upload and final transfer included),
CUDA-synchronised, median of ``--repeat`` runs after one warm-up run. Peak GiB:
``torch.cuda.max_memory_allocated`` during the timed runs (model, CSR
sequences, one chunk's scores and the encoder's activations). A second table
times the scores matmul alone for all users in fp32 and bf16 and counts the
users whose rank bf16 scores would change (random hidden states and a random
target per user): the evidence for keeping the scores fp32.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial
from typing import Any

import numpy as np
import torch

from seqrec_core.data.core import IdMap, SequenceData
from seqrec_core.evaluate import (
    RankingResult,
    compute_metrics,
    eval_batch_size,
    rank_split,
    seen_mask,
)
from seqrec_core.plugins import load_plugins

ML20M = {"users": 138_000, "items": 27_000, "mean_length": 145}
MODELS = ["sasrec", "bert4rec", "lstm", "xlstm"]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--users", type=int, default=ML20M["users"])
    p.add_argument("--items", type=int, default=ML20M["items"])
    p.add_argument("--mean-length", type=int, default=ML20M["mean_length"])
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--blocks", type=int, default=2, help="blocks (LSTM: layers)")
    p.add_argument("--heads", type=int, default=None, help="default: each model's own")
    p.add_argument("--max-len", type=int, default=200)
    p.add_argument("--split", default="valid", choices=["valid", "test"])
    p.add_argument("--filter-seen", action="store_true", help="protocol F")
    p.add_argument("--k", type=int, default=10, help="NDCG@k and the top-K list length")
    p.add_argument("--plain-batch", type=int, default=1024, help="users per plain batch")
    p.add_argument("--batch-size", type=int, default=None, help="fast: users per chunk")
    p.add_argument("--score-budget", type=int, default=2**28, help="fast: eval.score_budget")
    p.add_argument("--no-amp", action="store_true", help="skip the fast+amp configuration")
    p.add_argument("--no-matmul", action="store_true", help="skip the scores-matmul table")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, …")
    return p.parse_args(argv)


# ------------------------------------------------------------------ data and models


def synthetic_data(users: int, items: int, mean_length: int, seed: int) -> SequenceData:
    """Random sequences with MovieLens' shape: lengths ≥ ``min(20, mean/2)``
    with a long tail (log-normal), items drawn from a Zipf-like popularity."""
    rng = np.random.default_rng(seed)
    low = max(3, min(20, mean_length // 2))
    extra = rng.lognormal(0.0, 1.0, users)
    lengths = low + np.floor(extra * (mean_length - low) / np.exp(0.5)).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    weights = 1.0 / (np.arange(items) + 10.0) ** 0.9
    by_rank = rng.permutation(items) + 1  # the most popular item is not item 1
    drawn = rng.choice(items, size=int(offsets[-1]), p=weights / weights.sum())
    return SequenceData(
        name="synthetic-eval",
        offsets=offsets,
        items=by_rank[drawn].astype(np.int64),
        user_map=IdMap(np.arange(users), 0),
        item_map=IdMap(np.arange(1, items + 1), 1),
    )


def build_model(registry: Any, name: str, args: argparse.Namespace, n_items: int):
    cls = registry.get("models", name)
    fields = cls.Options.model_fields
    opts: dict[str, Any] = {"max_len": args.max_len, "dim": args.dim}
    opts["layers" if "layers" in fields else "blocks"] = args.blocks
    if args.heads is not None and "heads" in fields:
        opts["heads"] = args.heads
    if "chunk_size" in fields and args.max_len < 64:
        opts["chunk_size"] = 16
    torch.manual_seed(args.seed)
    return cls(cls.Options(**opts), n_items)


# ------------------------------------------------------------------ the plain loop


def plain_rank_targets(scores, targets, exclude=None, k=0):
    """``seqrec_core.evaluate.rank_targets`` before issue 8, verbatim."""
    scores = torch.nan_to_num(scores.float(), nan=-torch.inf, posinf=torch.inf, neginf=-torch.inf)
    rows = torch.arange(scores.shape[0], device=scores.device)
    valid = torch.ones_like(scores, dtype=torch.bool)
    valid[:, 0] = False
    if exclude is not None:
        valid &= ~exclude
    valid[rows, targets] = True
    target_scores = scores[rows, targets].unsqueeze(1)
    ranks = ((scores >= target_scores) & valid).sum(dim=1)
    topk = torch.empty(scores.shape[0], 0, dtype=torch.long, device=scores.device)
    if k > 0:
        masked = scores.masked_fill(~valid, -torch.inf)
        values, topk = masked.topk(min(k, scores.shape[1] - 1), dim=1)
        topk = topk.masked_fill(values == -torch.inf, 0)
    return ranks, topk


@torch.no_grad()
def plain_rank_split(model, data, split, k, filter_seen, batch_size, device) -> RankingResult:
    """``seqrec_core.evaluate.rank_split`` before issue 8 (one process), verbatim."""
    users = data.eval_users(split)
    targets = data.targets(split, users)
    max_len = getattr(model, "max_len", None)
    model.eval()
    ranks, tops = [], []
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        seqs = torch.from_numpy(data.padded(split, batch, max_len)).to(device)
        scores = model.predict(seqs)
        tgt = torch.from_numpy(targets[start : start + batch_size]).to(scores.device)
        exclude = None
        if filter_seen:
            full = seqs if max_len is None else torch.from_numpy(data.padded(split, batch))
            exclude = seen_mask(full.to(scores.device), data.n_items)
        r, t = plain_rank_targets(scores, tgt, exclude, k)
        ranks.append(r.cpu())
        tops.append(t.cpu())
    return RankingResult(
        ranks=torch.cat(ranks).numpy().astype(np.int64),
        topk=torch.cat(tops).numpy(),
        n_items=data.n_items,
        targets=targets,
        users=users,
    )


# ------------------------------------------------------------------ timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeat: int) -> tuple[Any, float, float]:
    """(result, median seconds, peak GiB) of ``fn()`` after one warm-up call."""
    result = fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return result, statistics.median(times), peak


def bench_model(name, registry, data, args, device) -> list[dict]:
    model = build_model(registry, name, args, data.n_items).to(device).eval()
    ndcg = [registry.get("metrics", "ndcg")]
    chunk = args.batch_size or eval_batch_size(model, data.n_items, device, args.score_budget)
    configs = [
        (
            f"plain b={args.plain_batch:,}",
            lambda: plain_rank_split(
                model, data, args.split, args.k, args.filter_seen, args.plain_batch, device
            ),
        ),
        (f"fast b={chunk:,}", lambda: fast(model, data, args, device, amp=False)),
    ]
    if device.type == "cuda" and not args.no_amp:
        configs.append((f"fast+amp b={chunk:,}", lambda: fast(model, data, args, device, amp=True)))
    rows, base = [], None
    for config, fn in configs:
        result, seconds, peak = timed(fn, device, args.repeat)
        metric = compute_metrics(result, ndcg, [args.k])[f"NDCG@{args.k}"]
        row = {
            "model": name,
            "config": config,
            "users": len(result.ranks),
            "items": data.n_items,
            "seconds": seconds,
            "users_per_s": len(result.ranks) / seconds,
            "peak_gib": peak,
            "ndcg": metric,
        }
        if base is None:
            base = (result, seconds, metric)
        row["speedup"] = base[1] / seconds
        row["ranks_differ"] = int((result.ranks != base[0].ranks).sum())
        row["topk_differ"] = int((result.topk != base[0].topk).any(axis=1).sum())
        row["metric_equal"] = metric == base[2]
        rows.append(row)
    return rows


def fast(model, data, args, device, amp: bool) -> RankingResult:
    return rank_split(
        model,
        data,
        args.split,
        args.k,
        args.filter_seen,
        args.batch_size,
        device,
        score_budget=args.score_budget,
        amp=amp,
    )


@torch.no_grad()
def bench_matmul(data, args, device) -> list[dict]:
    """Scores matmul alone, all users, fp32 vs bf16, with the rank each gives
    a random target (against fp32: how many users a bf16 score block would move)."""
    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    n_users = len(data.eval_users(args.split))
    weight = (torch.randn(data.n_items + 1, args.dim, generator=gen) / args.dim**0.5).to(device)
    hidden = torch.randn(n_users, args.dim, generator=gen).to(device)
    targets = torch.randint(1, data.n_items + 1, (n_users,), generator=gen).to(device)
    chunk = args.batch_size or eval_batch_size(None, data.n_items, device, args.score_budget)

    def ranks_of(dtype: torch.dtype) -> torch.Tensor:
        w, ranks = weight.to(dtype), []
        for lo in range(0, n_users, chunk):
            s = (hidden[lo : lo + chunk].to(dtype) @ w.t()).float()
            s[:, 0] = torch.nan  # padding: never counted
            t = s[torch.arange(s.shape[0], device=device), targets[lo : lo + chunk]]
            ranks.append((s >= t[:, None]).sum(1))
        return torch.cat(ranks).cpu()

    def scores_only(dtype: torch.dtype) -> None:
        w = weight.to(dtype)
        for lo in range(0, n_users, chunk):
            hidden[lo : lo + chunk].to(dtype) @ w.t()

    out = []
    ranks_fp32 = ranks_of(torch.float32)
    for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        ranks = ranks_of(dtype)
        _, seconds, _ = timed(partial(scores_only, dtype), device, args.repeat)
        out.append(
            {
                "scores": label,
                "users": n_users,
                "items": data.n_items,
                "ms": seconds * 1e3,
                "ranks_differ": int((ranks != ranks_fp32).sum()),
                "mean_rank_shift": float((ranks - ranks_fp32).float().mean()),
            }
        )
    return out


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> dict[str, list[dict]]:
    """Run the benchmark, print the tables; returns their rows (for tests)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    args = parse(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    registry = load_plugins()
    t0 = time.perf_counter()
    data = synthetic_data(args.users, args.items, args.mean_length, args.seed)
    made = time.perf_counter() - t0
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    console = Console(width=200)
    console.print(
        f"data: {data.n_users:,} users, {data.n_items:,} items, {len(data.items):,} "
        f"interactions (made in {made:.1f} s); {where}, torch {torch.__version__}"
    )

    rows = []
    for name in args.models:
        rows += bench_model(name, registry, data, args, device)
    protocol = "F (seen filtered)" if args.filter_seen else "U (all items)"
    table = Table(
        title=(
            f"Full-ranking evaluation, {args.split} split, protocol {protocol}, on {where}: "
            f"d={args.dim}, blocks={args.blocks}, L={args.max_len}, top-{args.k}; "
            f"median of {args.repeat}"
        )
    )
    for col in (
        "model",
        "config",
        "users",
        "items",
        "seconds",
        "users/s",
        "peak GiB",
        "speed-up",
        f"NDCG@{args.k}",
        "metric = plain",
        "ranks ≠ plain",
        "top-K ≠ plain",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["model"],
            r["config"],
            f"{r['users']:,}",
            f"{r['items']:,}",
            f"{r['seconds']:.3f}",
            f"{r['users_per_s']:,.0f}",
            "n/a" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}",
            f"{r['speedup']:.1f}x",
            f"{r['ndcg']:.6f}",
            "yes" if r["metric_equal"] else "NO",
            f"{r['ranks_differ']:,}",
            f"{r['topk_differ']:,}",
        )
    console.print(table)

    matmul = [] if args.no_matmul else bench_matmul(data, args, device)
    if matmul:
        mt = Table(
            title=escape(
                f"Scores matmul alone ([users, {args.dim}] x [{args.dim}, items + 1] in chunks), "
                "fp32 vs bf16; ranks of a random target vs fp32"
            )
        )
        for col in ("scores", "users", "items", "ms", "ranks ≠ fp32", "mean rank shift"):
            mt.add_column(col, justify="right")
        for r in matmul:
            mt.add_row(
                r["scores"],
                f"{r['users']:,}",
                f"{r['items']:,}",
                f"{r['ms']:.1f}",
                f"{r['ranks_differ']:,}",
                f"{r['mean_rank_shift']:+.2f}",
            )
        console.print(mt)
    return {"eval": rows, "matmul": matmul}


if __name__ == "__main__":
    main()
