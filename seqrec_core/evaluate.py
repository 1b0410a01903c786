"""Full-ranking evaluation (see ``docs/protocol.md`` for the exact rules).

For each evaluated user the model scores every item ``1..n_items``. The rank of
the target is the number of candidate items whose score is ``>=`` the target's
score (the target itself included), so an item tied with the target counts
against the model and a constant scorer gets no credit. With ``filter_seen``
the user's history items (except the target) are removed from the candidates.
Metrics are plugins that read the ranks (and top-K lists for coverage).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from seqrec_core import distributed as dist_mod
from seqrec_core.data.core import SequenceData, Split


@dataclass
class RankingResult:
    """What metric plugins see."""

    ranks: np.ndarray  # int64 [U], 1 = best
    topk: np.ndarray  # int64 [U, max K], internal item ids, best first
    n_items: int
    targets: np.ndarray | None = None
    users: np.ndarray | None = None


def rank_targets(
    scores: torch.Tensor,
    targets: torch.Tensor,
    exclude: torch.Tensor | None = None,
    k: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks of ``targets`` among candidates, and the top-``k`` candidates.

    ``scores``: ``[B, n_items + 1]`` (column 0 = padding, never a candidate).
    ``exclude``: optional bool ``[B, n_items + 1]``, True = not a candidate; the
    target is always a candidate. NaN scores count as the worst score.
    """
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
        # Fewer candidates than k: the tail holds non-candidates; mark it as padding.
        topk = topk.masked_fill(values == -torch.inf, 0)
    return ranks, topk


def seen_mask(histories: torch.Tensor, n_items: int) -> torch.Tensor:
    """bool ``[B, n_items + 1]``: True where the item occurs in the row's history."""
    mask = torch.zeros(histories.shape[0], n_items + 1, dtype=torch.bool, device=histories.device)
    mask.scatter_(1, histories, True)
    mask[:, 0] = False
    return mask


@torch.no_grad()
def rank_split(
    model: Any,
    data: SequenceData,
    split: Split,
    k: int,
    filter_seen: bool = False,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    users: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
    distributed: bool = False,
) -> RankingResult:
    """Score every evaluated user of ``split`` with ``model.predict`` in batches
    on ``device`` and return their target ranks and top-``k`` lists.

    ``distributed``: under a process group, every rank (all must call this)
    scores every ``world_size``-th batch of ``batch_size`` users and the ranks
    and top-``k`` rows are gathered back in user order. Each user is scored in
    the same batch as in one process, so the result is the single-process one,
    bit for bit: no user is dropped or duplicated (no sampler padding).
    """
    users = data.eval_users(split) if users is None else np.asarray(users)
    targets = data.targets(split, users)
    world = dist_mod.current() if distributed else dist_mod.World()
    n_batches = -(-len(users) // batch_size)
    mine = range(world.rank, n_batches, world.size)
    max_len = getattr(model, "max_len", None)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    ranks, tops = [], []
    try:
        for b in mine:
            start = b * batch_size
            batch = users[start : start + batch_size]
            seqs = torch.from_numpy(data.padded(split, batch, max_len)).to(device)
            scores = model.predict(seqs)
            tgt = torch.from_numpy(targets[start : start + batch_size]).to(scores.device)
            exclude = None
            if filter_seen:
                full = seqs if max_len is None else torch.from_numpy(data.padded(split, batch))
                exclude = seen_mask(full.to(scores.device), data.n_items)
            r, t = rank_targets(scores, tgt, exclude, k)
            ranks.append(r.cpu())
            tops.append(t.cpu())
            if progress:
                progress(min(start + batch_size, len(users)), len(users))
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    width = min(k, data.n_items) if k > 0 else 0
    if world.enabled:
        ranks, tops = _gather_batches(ranks, tops, width, len(users), batch_size)
    return RankingResult(
        ranks=torch.cat(ranks).numpy().astype(np.int64) if ranks else np.zeros(0, np.int64),
        topk=torch.cat(tops).numpy() if tops else np.zeros((0, k), np.int64),
        n_items=data.n_items,
        targets=targets,
        users=users,
    )


def _gather_batches(
    ranks: list[torch.Tensor], tops: list[torch.Tensor], width: int, n_users: int, batch_size: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Every rank's per-batch results, back in batch order (batch ``b`` was
    scored by rank ``b % world_size``; its size follows from ``n_users``)."""
    local = (
        torch.cat(
            [torch.cat([r[:, None].long(), t.long()], 1) for r, t in zip(ranks, tops, strict=True)]
        )
        if ranks
        else torch.zeros(0, 1 + width, dtype=torch.long)
    )
    per_rank = dist_mod.all_gather_rows(local)
    size = len(per_rank)
    offsets = [0] * size
    rows = []
    for b in range(-(-n_users // batch_size)):
        owner, n = b % size, min(batch_size, n_users - b * batch_size)
        rows.append(per_rank[owner][offsets[owner] : offsets[owner] + n])
        offsets[owner] += n
    return [r[:, 0] for r in rows], [r[:, 1:] for r in rows]


def compute_metrics(
    result: RankingResult, metrics: Iterable[Any], ks: Sequence[int]
) -> dict[str, float]:
    """``{"NDCG@10": …, "MRR": …}`` for metric plugins (``name``, ``at_k``, ``compute``)."""
    out: dict[str, float] = {}
    for metric in metrics:
        label = getattr(metric, "label", metric.name)
        if metric.at_k:
            for k in ks:
                out[f"{label}@{k}"] = float(metric.compute(result, k))
        else:
            out[label] = float(metric.compute(result, None))
    return out


def evaluate(
    model: Any,
    data: SequenceData,
    split: Split,
    metrics: Iterable[Any],
    ks: Sequence[int] = (5, 10, 20),
    filter_seen: bool = False,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    distributed: bool = False,
) -> dict[str, float]:
    """Metrics of ``model`` on ``split``; ``distributed``: see :func:`rank_split`."""
    result = rank_split(
        model,
        data,
        split,
        max(ks),
        filter_seen,
        batch_size,
        device,
        progress=progress,
        distributed=distributed,
    )
    return compute_metrics(result, metrics, ks)
