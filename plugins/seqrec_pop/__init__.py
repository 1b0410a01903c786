"""POP: every user gets the items ranked by training popularity.

The simplest baseline and the first model through the whole pipeline. Counts
come from the training part of the split only (never validation or test
targets) and are stored as a buffer, so a saved POP model scores identically.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict

from seqrec_core import hookimpl
from seqrec_core.model import Recommender


class PopOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Pop(Recommender):
    name = "pop"
    Options = PopOptions
    objective = "none"

    def __init__(self, options: PopOptions, n_items: int):
        super().__init__(options, n_items)
        self.register_buffer("counts", torch.zeros(n_items + 1))

    @property
    def max_len(self) -> int:
        return 1  # the history does not matter; keep evaluation batches tiny

    def prepare(self, data) -> None:
        counts = torch.as_tensor(data.train_item_counts(), dtype=torch.float32)
        self.counts.copy_(counts)

    def predict(self, seqs: torch.Tensor) -> torch.Tensor:
        # Log-popularity: same ranking (and ties) as the counts, and a softmax over
        # it is each item's share of training interactions.
        scores = torch.log(self.counts.to(seqs.device)).expand(seqs.shape[0], -1).clone()
        scores[:, 0] = -torch.inf
        return scores


@hookimpl
def register_models(register):
    register(Pop)
