"""Built-in ranking metrics: HR, Recall, NDCG, MRR (at K and full), Precision, Coverage.

All use the single held-out target per user of leave-one-out evaluation; see
``docs/protocol.md``. Each metric is ``compute(result, k) -> float`` over the
ranks in a :class:`seqrec_core.evaluate.RankingResult`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqrec_core import hookimpl
from seqrec_core.evaluate import RankingResult


def _hits(result: RankingResult, k: int) -> np.ndarray:
    return result.ranks <= k


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else 0.0


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    at_k: bool
    description: str

    def compute(self, result: RankingResult, k: int | None) -> float:  # pragma: no cover
        raise NotImplementedError


class HitRate(Metric):
    def compute(self, result, k):
        return _mean(_hits(result, k).astype(float))


class NDCG(Metric):
    def compute(self, result, k):
        gain = 1.0 / np.log2(result.ranks.astype(float) + 1.0)
        return _mean(np.where(_hits(result, k), gain, 0.0))


class MRR(Metric):
    def compute(self, result, k):
        rr = 1.0 / result.ranks.astype(float)
        return _mean(rr if k is None else np.where(_hits(result, k), rr, 0.0))


class Precision(Metric):
    def compute(self, result, k):
        return _mean(_hits(result, k).astype(float)) / k


class Coverage(Metric):
    def compute(self, result, k):
        if result.n_items == 0 or len(result.topk) == 0:
            return 0.0
        listed = np.unique(result.topk[:, :k])
        return int((listed != 0).sum()) / result.n_items


METRICS = [
    HitRate("hr", "HR", True, "share of users whose target is in the top K"),
    HitRate("recall", "Recall", True, "= HR@K with one held-out target per user"),
    NDCG("ndcg", "NDCG", True, "1/log2(rank+1) if rank <= K, else 0; averaged"),
    MRR("mrr_at_k", "MRR", True, "1/rank if rank <= K, else 0; averaged"),
    MRR("mrr", "MRR", False, "1/rank over the full ranking; averaged"),
    Precision("precision", "Precision", True, "HR@K / K with one target"),
    Coverage("coverage", "Coverage", True, "distinct items in all users' top K / n_items"),
]


@hookimpl
def register_metrics(register):
    for metric in METRICS:
        register(metric)
