"""Popularity buckets: how well a model does on head, mid and tail items.

Items are ranked by their number of interactions in the **training part**
(:meth:`~seqrec_core.data.core.SequenceData.train_item_counts`, the counts POP
uses), most popular first, ties by ascending item id (so the split is
deterministic). With cut points ``(a, b)`` (fractions of the catalogue, default
``(0.2, 0.5)``) the first ``round(a·N)`` items are the **head**, the items up to
``round(b·N)`` the **mid** and the rest the **tail**: by default the head is the
top 20 % of items and the tail the bottom half.

Every metric is then computed per bucket *of the target item*: the users whose
held-out target is a tail item form the tail row (from the same ranks as the
overall numbers, :func:`~seqrec_core.evaluate.rank_split`). On top of that the
report has, from the users' top-``k`` lists, the catalogue coverage, the
coverage of each bucket (distinct bucket items recommended / bucket size) and
each bucket's share of the recommended slots (``tail share@10``: the fraction of
all top-10 slots that hold a tail item).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from seqrec_core.data.core import SequenceData
from seqrec_core.errors import SeqrecError
from seqrec_core.evaluate import RankingResult, compute_metrics, rank_split

BUCKETS = ("head", "mid", "tail")
DEFAULT_CUTS = (0.2, 0.5)


def check_cuts(cuts: Sequence[float]) -> tuple[float, float]:
    if len(cuts) != 2 or not 0.0 < cuts[0] < cuts[1] <= 1.0:
        raise SeqrecError(
            f"popularity cut points {list(cuts)}: expected two fractions 0 < head < mid <= 1, "
            "e.g. 0.2 0.5 (head = top 20 % of items, tail = bottom 50 %)"
        )
    return float(cuts[0]), float(cuts[1])


def popularity_buckets(counts: np.ndarray, cuts: Sequence[float] = DEFAULT_CUTS) -> np.ndarray:
    """Bucket of every item: ``counts`` is ``[n_items + 1]`` (index 0 = padding);
    returns int ``[n_items + 1]`` with 0 = head, 1 = mid, 2 = tail, -1 = padding."""
    head, mid = check_cuts(cuts)
    counts = np.asarray(counts)
    n = len(counts) - 1
    ids = np.arange(1, n + 1)
    order = np.lexsort((ids, -counts[1:]))  # most popular first, ties by id
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    bounds = np.array([int(head * n + 0.5), int(mid * n + 0.5)])
    out = np.full(n + 1, -1, dtype=np.int64)
    out[1:] = np.searchsorted(bounds, rank, side="right")
    return out


def subset(result: RankingResult, mask: np.ndarray) -> RankingResult:
    """The ranking result of the users selected by ``mask``."""
    return RankingResult(
        ranks=result.ranks[mask],
        topk=result.topk[mask],
        n_items=result.n_items,
        targets=None if result.targets is None else result.targets[mask],
        users=None if result.users is None else result.users[mask],
    )


def list_shares(topk: np.ndarray, buckets: np.ndarray, k: int) -> dict[str, float]:
    """Coverage and bucket shares of the top-``k`` lists (``0`` entries are empty slots)."""
    lists = topk[:, :k]
    filled = lists[lists > 0]
    n_items = len(buckets) - 1
    out: dict[str, float] = {f"coverage@{k}": len(np.unique(filled)) / max(1, n_items)}
    slot_buckets = buckets[filled]
    distinct = buckets[np.unique(filled)]
    for b, name in enumerate(BUCKETS):
        size = int((buckets == b).sum())
        out[f"{name} share@{k}"] = float((slot_buckets == b).mean()) if len(filled) else 0.0
        out[f"{name} coverage@{k}"] = float((distinct == b).sum() / size) if size else 0.0
    return out


@dataclass
class BucketReport:
    """Per-bucket metrics of one model on one split."""

    cuts: tuple[float, float]
    k: int
    sizes: dict[str, int]  # items per bucket
    users: dict[str, int]  # evaluated users per bucket of their target
    metrics: dict[str, dict[str, float]]  # "overall" and each bucket → metric → value
    lists: dict[str, float] = field(default_factory=dict)  # coverage and shares

    def rows(self) -> list[dict[str, Any]]:
        """One table row per bucket (and ``overall``)."""
        rows = []
        for name in ("overall", *BUCKETS):
            rows.append(
                {
                    "bucket": name,
                    "items": self.sizes.get(name, sum(self.sizes.values())),
                    "users": self.users.get(name, sum(self.users.values())),
                    **self.metrics[name],
                }
            )
        return rows

    def flat(self) -> dict[str, float]:
        """``{"NDCG@10[tail]": …, "tail share@10": …}`` for results tables."""
        out: dict[str, float] = {}
        for name in BUCKETS:
            out[f"users[{name}]"] = float(self.users[name])
            for metric, value in self.metrics[name].items():
                out[f"{metric}[{name}]"] = value
        out.update(self.lists)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "cuts": list(self.cuts),
            "k": self.k,
            "sizes": self.sizes,
            "users": self.users,
            "metrics": self.metrics,
            "lists": self.lists,
        }


def bucket_report(
    result: RankingResult,
    buckets: np.ndarray,
    metrics: Sequence[Any],
    ks: Sequence[int],
    k: int = 10,
    cuts: Sequence[float] = DEFAULT_CUTS,
) -> BucketReport:
    """Metrics per bucket of the target item, from ranks already computed."""
    if result.targets is None:
        raise SeqrecError("bucket metrics need the targets of the ranking result")
    target_bucket = buckets[result.targets]
    per: dict[str, dict[str, float]] = {"overall": compute_metrics(result, metrics, ks)}
    users: dict[str, int] = {}
    for b, name in enumerate(BUCKETS):
        mask = target_bucket == b
        users[name] = int(mask.sum())
        per[name] = compute_metrics(subset(result, mask), metrics, ks)
    sizes = {name: int((buckets == b).sum()) for b, name in enumerate(BUCKETS)}
    return BucketReport(
        tuple(check_cuts(cuts)), k, sizes, users, per, list_shares(result.topk, buckets, k)
    )


def analyze_buckets(
    model: Any,
    data: SequenceData,
    metrics: Sequence[Any],
    ks: Sequence[int] = (5, 10, 20),
    split: str = "test",
    k: int = 10,
    cuts: Sequence[float] = DEFAULT_CUTS,
    filter_seen: bool = False,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
) -> BucketReport:
    """Per-bucket metrics of a trained ``model`` on ``data`` (``metrics``: metric
    plugin objects, e.g. ``[registry.get("metrics", m) for m in recipe.eval.metrics]``)."""
    buckets = popularity_buckets(data.train_item_counts(), cuts)
    result = rank_split(
        model,
        data,
        split,
        max(k, *ks),
        filter_seen,
        batch_size,
        device,  # type: ignore[arg-type]
    )
    return bucket_report(result, buckets, metrics, ks, k, cuts)


def plot_buckets(report: BucketReport, metric: str, path, title: str = "") -> Any:
    """Bar chart of ``metric`` per bucket (and overall)."""
    from seqrec_core.research.reports import pyplot, save_figure

    plt = pyplot()
    names = ["overall", *BUCKETS]
    values = [report.metrics[n].get(metric, np.nan) for n in names]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(names, values, color=["#555555", "#c0392b", "#e67e22", "#2980b9"])
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} by popularity bucket of the target")
    for i, n in enumerate(names[1:], start=1):
        ax.annotate(
            f"{report.users[n]} users", (i, values[i]), ha="center", va="bottom", fontsize=7
        )
    return save_figure(fig, path)
