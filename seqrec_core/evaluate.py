"""Full-ranking evaluation (see ``docs/protocol.md`` for the exact rules).

For each evaluated user the model scores every item ``1..n_items``. The rank of
the target is the number of candidate items whose score is ``>=`` the target's
score (the target itself included), so an item tied with the target counts
against the model and a constant scorer gets no credit. With ``filter_seen``
the user's history items (except the target) are removed from the candidates.
Metrics are plugins that read the ranks (and top-K lists for coverage).

Speed (:func:`rank_split`, docs/protocol.md section 7): users are scored in
chunks whose ``[users, n_items + 1]`` score block stays under a budget of
elements, so memory does not grow with the number of users and no users x items
matrix ever exists on the host. By default (``fast``) the split's sequences go
to the device once (CSR), each chunk's histories and seen-item filter are
gathered there, and ranks and top-K rows stay there until one transfer at the
end. All of this is exact: it changes where numbers are computed, not which.
Scores are fp32 (models score outside autocast, see
:meth:`~seqrec_core.model.SequentialModel.full_scores`); ``amp`` (off by
default, not exact) runs only the encoder in bf16.
"""

from __future__ import annotations

import contextlib
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


#: Default ``eval.score_budget``: elements of one chunk's ``[users, n_items + 1]``
#: fp32 score block (2^28: 1 GiB; ranking briefly holds a second copy and a bool mask).
DEFAULT_SCORE_BUDGET = 2**28
#: Most users per chunk on CPU, where larger chunks buy nothing (the old fixed size).
CPU_BATCH_SIZE = 1024
#: Most users per chunk on CUDA: attention kernels (PyTorch's flash / memory-efficient
#: SDPA, pytorch/pytorch#146704) and Triton kernels put the batch (or batch x heads)
#: in a grid dimension limited to 65,535.
CUDA_BATCH_SIZE = 16384


def _nan_to_neg_inf(scores: torch.Tensor) -> torch.Tensor:
    """A copy with NaN → ``-inf`` (infinities kept)."""
    return torch.nan_to_num(scores, nan=-torch.inf, posinf=torch.inf, neginf=-torch.inf)


def _rank_marked(
    s: torch.Tensor, targets: torch.Tensor, k: int, mark: Callable[[torch.Tensor], Any] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks and top-``k`` of fp32 scores ``s`` that the caller owns (overwritten)
    and that hold no NaN. ``mark(s)`` sets non-candidates (seen items) to NaN.

    Non-candidates become NaN, which compares false with everything, so one
    ``>=`` counts exactly the candidates at or above the target: no
    ``[B, n_items + 1]`` candidate mask. Then NaN → ``-inf`` in place for top-K.
    """
    rows = torch.arange(s.shape[0], device=s.device)
    target_scores = s[rows, targets]
    s[:, 0] = torch.nan
    if mark is not None:
        mark(s)
    s[rows, targets] = target_scores  # the target is always a candidate
    ranks = (s >= target_scores[:, None]).sum(dim=1)
    topk = torch.empty(s.shape[0], 0, dtype=torch.long, device=s.device)
    if k > 0:
        s.nan_to_num_(nan=-torch.inf, posinf=torch.inf, neginf=-torch.inf)
        values, topk = s.topk(min(k, s.shape[1] - 1), dim=1)
        # Fewer candidates than k: the tail holds non-candidates; mark it as padding.
        topk.masked_fill_(values == -torch.inf, 0)
    return ranks, topk


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
    s = _nan_to_neg_inf(scores.float())  # a copy: ``scores`` is left alone
    mark = None if exclude is None else (lambda t: t.masked_fill_(exclude, torch.nan))
    return _rank_marked(s, targets, k, mark)


def seen_mask(histories: torch.Tensor, n_items: int) -> torch.Tensor:
    """bool ``[B, n_items + 1]``: True where the item occurs in the row's history."""
    mask = torch.zeros(histories.shape[0], n_items + 1, dtype=torch.bool, device=histories.device)
    mask.scatter_(1, histories, True)
    mask[:, 0] = False
    return mask


def eval_batch_size(
    model: Any,
    n_items: int,
    device: torch.device | str,
    score_budget: int = DEFAULT_SCORE_BUDGET,
) -> int:
    """Users per chunk when ``eval.batch_size`` is not set: as many as keep both
    the chunk's score block (``n_items + 1`` per user) and one ``[L, D]``
    activation of the encoder per user within ``score_budget`` elements; at most
    :data:`CUDA_BATCH_SIZE` on CUDA, :data:`CPU_BATCH_SIZE` elsewhere. Depends on
    nothing that differs between processes, so every rank of a process group
    picks the same chunks."""
    per_user = n_items + 1
    max_len = getattr(model, "max_len", None)
    emb = getattr(model, "item_emb", None)
    if max_len and emb is not None and hasattr(emb, "embedding_dim"):
        per_user = max(per_user, max_len * emb.embedding_dim)
    size = max(1, score_budget // per_user)
    cuda = torch.device(device).type == "cuda"
    return min(size, CUDA_BATCH_SIZE if cuda else CPU_BATCH_SIZE)


class _HostHistories:
    """The straightforward path (``fast=False``): each batch padded with numpy on
    the host and copied to the device; the seen-item filter as a bool mask."""

    def __init__(self, data: SequenceData, split: Split, users: np.ndarray, device: torch.device):
        self.data, self.split, self.users, self.device = data, split, users, device

    def inputs(self, lo: int, hi: int, max_len: int | None) -> torch.Tensor:
        batch = self.users[lo:hi]
        return torch.from_numpy(self.data.padded(self.split, batch, max_len)).to(self.device)

    def seen(self, lo: int, hi: int, device: torch.device) -> Callable[[torch.Tensor], Any]:
        full = torch.from_numpy(self.data.padded(self.split, self.users[lo:hi])).to(device)
        mask = seen_mask(full, self.data.n_items)
        return lambda s: s.masked_fill_(mask, torch.nan)


class _DeviceHistories:
    """The fast path: the split's sequences (CSR) on the device once; each
    chunk's left-padded inputs and its seen items gathered there, with sizes
    known on the host, so building a chunk never waits for the device."""

    def __init__(self, data: SequenceData, split: Split, users: np.ndarray, device: torch.device):
        start, end = data.history_bounds(split, users)
        self.lengths = end - start  # host copy: chunk widths and seen counts
        self.items = torch.from_numpy(data.items).to(device)
        self.start = torch.from_numpy(start).to(device)
        self.end = torch.from_numpy(end).to(device)
        self.device_lengths = torch.from_numpy(self.lengths).to(device)

    def inputs(self, lo: int, hi: int, max_len: int | None) -> torch.Tensor:
        # As train.gather_windows (and data.padded): the last ``width`` items, left-padded.
        width = max_len or int(self.lengths[lo:hi].max(initial=1))
        start, end = self.start[lo:hi], self.end[lo:hi]
        pos = end[:, None] - width + torch.arange(width, device=end.device)[None, :]
        valid = pos >= start[:, None]
        return torch.where(valid, self.items[pos.clamp(min=0)], 0)

    def seen(self, lo: int, hi: int, device: torch.device) -> Callable[[torch.Tensor], Any]:
        # (row, item) of every history item of the chunk: the whole history, not max_len.
        total = int(self.lengths[lo:hi].sum())
        lengths = self.device_lengths[lo:hi]
        rows = torch.repeat_interleave(
            torch.arange(hi - lo, device=lengths.device), lengths, output_size=total
        )
        first = torch.cumsum(lengths, 0) - lengths
        pos = self.start[lo:hi][rows] + torch.arange(total, device=rows.device) - first[rows]
        index = (rows.to(device), self.items[pos].to(device))
        nan = torch.tensor(torch.nan, device=device)
        return lambda s: s.index_put_(index, nan)


@torch.no_grad()
def rank_split(
    model: Any,
    data: SequenceData,
    split: Split,
    k: int,
    filter_seen: bool = False,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    users: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
    distributed: bool = False,
    *,
    fast: bool = True,
    score_budget: int = DEFAULT_SCORE_BUDGET,
    amp: bool = False,
) -> RankingResult:
    """Score every evaluated user of ``split`` with ``model.predict`` in chunks
    on ``device`` and return their target ranks and top-``k`` lists.

    ``batch_size``: users per chunk; ``None``: :func:`eval_batch_size` (memory
    bounded by ``score_budget`` elements). ``fast`` (default): histories built,
    ranks and top-K rows kept on the device, one transfer at the end; ``False``:
    numpy padding and a transfer per chunk. Both give the same result, bit for
    bit. ``amp``: bf16 autocast around ``predict`` on CUDA (the encoder; scores
    stay fp32). Not exact, so off by default: hidden states round to bf16 and
    the metrics move accordingly (README, "Benchmarks").

    ``distributed``: under a process group, every rank (all must call this)
    scores every ``world_size``-th chunk and the ranks and top-``k`` rows are
    gathered back in user order. Each user is scored in the same chunk as in one
    process, so the result is the single-process one, bit for bit: no user is
    dropped or duplicated (no sampler padding).
    """
    users = data.eval_users(split) if users is None else np.asarray(users)
    targets = data.targets(split, users)
    device = torch.device(device)
    world = dist_mod.current() if distributed else dist_mod.World()
    chunk = batch_size or eval_batch_size(model, data.n_items, device, score_budget)
    n_batches = -(-len(users) // chunk)
    max_len = getattr(model, "max_len", None)
    width = min(k, data.n_items) if k > 0 else 0
    source = (_DeviceHistories if fast else _HostHistories)(data, split, users, device)
    all_targets = torch.from_numpy(targets).to(device) if fast else None
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if amp and device.type == "cuda"
        else contextlib.nullcontext()
    )
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    ranks, tops = [], []
    try:
        for b in range(world.rank, n_batches, world.size):
            lo, hi = b * chunk, min((b + 1) * chunk, len(users))
            seqs = source.inputs(lo, hi, max_len)
            with autocast:
                scores = model.predict(seqs)
            del seqs
            s = _nan_to_neg_inf(scores.float())  # ours to overwrite: predict's may be shared
            del scores
            tgt = (
                all_targets[lo:hi].to(s.device)
                if all_targets is not None
                else torch.from_numpy(targets[lo:hi]).to(s.device)
            )
            mark = source.seen(lo, hi, s.device) if filter_seen else None
            r, t = _rank_marked(s, tgt, k, mark)
            del s
            ranks.append(r if fast else r.cpu())
            tops.append(t if fast else t.cpu())
            if progress:
                progress(hi, len(users))
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    if ranks:
        local_ranks, local_tops = torch.cat(ranks), torch.cat(tops)
    else:
        local_ranks = torch.zeros(0, dtype=torch.long)
        local_tops = torch.zeros(0, width, dtype=torch.long)
    if world.enabled:
        local_ranks, local_tops = _gather_batches(local_ranks, local_tops, len(users), chunk)
    return RankingResult(
        ranks=local_ranks.cpu().numpy().astype(np.int64),
        topk=local_tops.cpu().numpy(),
        n_items=data.n_items,
        targets=targets,
        users=users,
    )


def _gather_batches(
    ranks: torch.Tensor, tops: torch.Tensor, n_users: int, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's chunks, back in chunk order (chunk ``b`` was scored by rank
    ``b % world_size``; its size follows from ``n_users``)."""
    local = torch.cat([ranks[:, None].long(), tops.long().to(ranks.device)], 1)
    per_rank = dist_mod.all_gather_rows(local)
    size = len(per_rank)
    offsets = [0] * size
    rows = []
    for b in range(-(-n_users // batch_size)):
        owner, n = b % size, min(batch_size, n_users - b * batch_size)
        rows.append(per_rank[owner][offsets[owner] : offsets[owner] + n])
        offsets[owner] += n
    whole = torch.cat(rows) if rows else local[:0]
    return whole[:, 0], whole[:, 1:]


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
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    distributed: bool = False,
    *,
    fast: bool = True,
    score_budget: int = DEFAULT_SCORE_BUDGET,
    amp: bool = False,
) -> dict[str, float]:
    """Metrics of ``model`` on ``split``; the other arguments: see :func:`rank_split`
    (``**recipe.eval.speed()`` passes the recipe's ``fast``, ``score_budget``, ``amp``)."""
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
        fast=fast,
        score_budget=score_budget,
        amp=amp,
    )
    return compute_metrics(result, metrics, ks)
