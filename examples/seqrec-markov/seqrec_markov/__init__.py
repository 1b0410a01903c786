"""Markov: a first-order Markov chain next-item recommender, as a third-party seqrec plugin.

The whole plugin is this module plus one entry point in ``pyproject.toml``::

    [project.entry-points.seqrec]
    markov = "seqrec_markov"

The model counts item → next-item transitions ``C[i, j]`` in the training part
of every user's sequence and scores the next item from the user's most recent
item ``i`` alone::

    P(j | i) = (C[i, j] + smoothing) / (sum_k C[i, k] + smoothing * n_items)
    p(j)     = (1 - pop_weight) * P(j | i) + pop_weight * pop(j)
    score(j) = log p(j)

where ``pop(j)`` is item ``j``'s share of training interactions. Smoothing keeps
unseen transitions possible; popularity orders them (without it they all tie).
``p`` sums to 1 over the items; scores are its logarithm because seqrec treats
scores as logits (``seqrec recommend`` shows their softmax, here exactly ``p``).
There is nothing to train (``objective = "none"``): :meth:`Markov.prepare` does
all the work, and the counts are buffers, so a saved model scores identically.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from seqrec_core import hookimpl
from seqrec_core.data import SequenceData
from seqrec_core.errors import SeqrecError
from seqrec_core.model import Recommender

__version__ = "0.1.0"

#: The transition matrix is dense, ``[n_items + 1]²`` float32: 20,000 items take 1.6 GB.
MAX_ITEMS = 20_000


class MarkovOptions(BaseModel):
    """Recipe options: ``model: {name: markov, smoothing: 0.5, pop_weight: 0.1}``."""

    # Unknown keys are rejected, so a typo such as `smoothin` gets a "did you mean".
    model_config = ConfigDict(extra="forbid")

    smoothing: float = Field(
        1.0, ge=0.0, description="add-alpha smoothing of the transition counts (0 = none)"
    )
    pop_weight: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="weight of training popularity mixed into the scores; orders unseen "
        "transitions",
    )


def train_transitions(data: SequenceData) -> tuple[np.ndarray, np.ndarray]:
    """``(src, dst)`` item ids of every consecutive pair inside each user's training
    history — never crossing into the validation or test targets."""
    start, end = data.history_bounds("train", np.arange(data.n_users))
    pairs = np.maximum(end - start - 1, 0)
    # Each user contributes the positions start, start+1, …, end-2 (one per pair).
    first_of_user = np.repeat(start, pairs)
    step = np.arange(pairs.sum()) - np.repeat(np.cumsum(pairs) - pairs, pairs)
    first = first_of_user + step
    return data.items[first], data.items[first + 1]


class Markov(Recommender):
    name = "markov"
    Options = MarkovOptions
    objective = "none"

    def __init__(self, options: MarkovOptions, n_items: int):
        super().__init__(options, n_items)
        if n_items > MAX_ITEMS:
            raise SeqrecError(
                f"model 'markov' keeps a dense item × item transition matrix and supports at "
                f"most {MAX_ITEMS:,} items, but this dataset has {n_items:,}; raise "
                "dataset.item_core to drop rare items, or use another model"
            )
        # Row i: how often each item followed item i. Row 0 (padding) stays zero.
        self.register_buffer("counts", torch.zeros(n_items + 1, n_items + 1))
        self.register_buffer("popularity", torch.zeros(n_items + 1))

    @property
    def max_len(self) -> int:
        # Only the last item matters. Evaluation with filter_seen still masks the
        # whole history: it pads the full history separately for the mask.
        return 1

    def prepare(self, data: SequenceData) -> None:
        src, dst = train_transitions(data)
        device = self.counts.device
        self.counts.zero_()
        self.counts.index_put_(
            (torch.from_numpy(src).to(device), torch.from_numpy(dst).to(device)),
            torch.ones(len(src), device=device),
            accumulate=True,  # repeated (src, dst) pairs add up
        )
        self.popularity.copy_(torch.as_tensor(data.train_item_counts(), dtype=torch.float32))

    def predict(self, seqs: torch.Tensor) -> torch.Tensor:
        alpha = self.options.smoothing
        weight = self.options.pop_weight
        last = seqs[:, -1].to(self.counts.device)  # left-padded: most recent item is last
        rows = self.counts[last]  # [B, n_items + 1]; an empty history (0) gives a zero row
        # With smoothing 0, an item never followed by anything has a zero row and
        # denominator: clamp so its Markov part is 0 and popularity alone decides.
        denom = (rows[:, 1:].sum(dim=1, keepdim=True) + alpha * self.n_items).clamp_min(1e-12)
        markov = (rows + alpha) / denom
        pop = self.popularity / self.popularity.sum().clamp_min(1.0)
        scores = torch.log((1.0 - weight) * markov + weight * pop)
        scores[:, 0] = -torch.inf  # padding is never recommended
        return scores


@hookimpl
def register_models(register):
    register(Markov)
