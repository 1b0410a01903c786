"""How much a model recommends what the user already has (``seqrec analyze seen``).

Under protocol U (all items ranked) a history item in a user's top-K is a slot
lost whenever, as on MovieLens, users do not come back to items: the gap between
the U and F scores of a model is made of such slots. This measures it directly
from the model's unfiltered top-K lists:

* ``seen share@K`` — mean share of the top-K that are items of the user's history;
* ``top-1 seen`` — share of users whose first recommendation is a history item;
* ``last item@K`` — share of users whose most recent item is in their top-K
  (the tied-embedding "repeat the last item" failure);
* ``target seen`` — share of users whose target itself is in their history
  (how often repeating would be right; 0 on MovieLens).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from seqrec_core.data.core import SequenceData, Split
from seqrec_core.evaluate import rank_split

CHUNK = 4096  # users per membership test (U x K x history bools)


def seen_in_top(topk: np.ndarray, histories: np.ndarray) -> np.ndarray:
    """bool ``[U, K]``: whether each top-K item occurs in the row's history
    (``histories`` left-padded with 0; padding ``0`` entries of ``topk`` never count)."""
    out = np.zeros(topk.shape, dtype=bool)
    for lo in range(0, len(topk), CHUNK):
        t, h = topk[lo : lo + CHUNK], histories[lo : lo + CHUNK]
        out[lo : lo + CHUNK] = (t[:, :, None] == h[:, None, :]).any(-1) & (t != 0)
    return out


def seen_report(
    model: Any,
    data: SequenceData,
    split: Split = "test",
    ks: Sequence[int] = (1, 10),
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """The measures of the module docstring on ``split``, unfiltered ranking."""
    k = max(ks)
    result = rank_split(model, data, split, k, False, batch_size, device)
    users = result.users if result.users is not None else data.eval_users(split)
    histories = data.padded(split, users)
    seen = seen_in_top(result.topk, histories)
    last = histories[:, -1]
    report: dict[str, float] = {"users": float(len(users))}
    for kk in sorted(set(ks)):
        report[f"seen share@{kk}"] = float(seen[:, :kk].mean()) if len(seen) else float("nan")
    report["top-1 seen"] = float(seen[:, 0].mean()) if len(seen) else float("nan")
    in_top = (result.topk == last[:, None]).any(1) & (last != 0)
    report[f"last item@{k}"] = float(in_top.mean()) if len(seen) else float("nan")
    targets = result.targets if result.targets is not None else data.targets(split, users)
    report["target seen"] = float(
        np.mean([t in set(h[h != 0]) for t, h in zip(targets, histories, strict=True)])
        if len(users)
        else float("nan")
    )
    return report
