"""The interface every model plugin implements.

A model plugin registers a subclass of :class:`Recommender` (``name``,
``Options``). The engine builds it as ``cls(options, n_items)``, calls
:meth:`Recommender.prepare` once with the training data (statistics such as
popularity; a no-op for most neural models), trains it if it has trainable
parameters, and asks :meth:`Recommender.predict` for next-item scores.

Items are ``1..n_items``; index 0 is padding and is never recommended.
Histories arrive left-padded: the most recent item is in the last column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel
from torch import nn

from seqrec_core.plugins import NoOptions

Objective = Literal["causal", "masked", "none"]


@dataclass
class HistoryState:
    """Streaming state of models without a recurrent state: the history itself."""

    items: list[int] = field(default_factory=list)


class Recommender(nn.Module):
    """Base class of all models.

    Class attributes a plugin sets:

    * ``name`` — the recipe name (``model: {name: ...}``);
    * ``Options`` — pydantic model of the recipe options;
    * ``objective`` — ``"causal"`` (next item at every position), ``"masked"``
      (cloze) or ``"none"`` (no gradient training, e.g. popularity);
    * ``runtime_options`` — the options that choose *how* the model computes
      (kernels, launch settings), not *what*: two checkpoints that differ only in
      these (and the seed) are runs of the same model, e.g. for the embedding
      geometry's across-seed comparisons.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = NoOptions
    objective: ClassVar[Objective] = "causal"
    runtime_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, options: BaseModel, n_items: int):
        super().__init__()
        self.options = options
        self.n_items = n_items

    @property
    def max_len(self) -> int | None:
        """Longest history the model reads (``None``: the whole history)."""
        return getattr(self.options, "max_len", None)

    def prepare(self, data: Any) -> None:
        """Called once with the :class:`~seqrec_core.data.SequenceData` before training."""

    def predict(self, seqs: torch.Tensor) -> torch.Tensor:
        """Scores for the next item: ``[B, L]`` left-padded ids → ``[B, n_items + 1]``."""
        raise NotImplementedError

    # ---------------------------------------------------------- streaming inference
    def init_state(self, history: torch.Tensor) -> Any:
        """Inference state of one user after ``history`` (``[T]`` item ids, oldest
        first). Recurrent models return their recurrent state (O(1) updates);
        this default keeps the history and recomputes (Transformers, POP)."""
        return HistoryState(list(history.tolist()))

    def step(self, state: Any, item: int) -> tuple[Any, torch.Tensor]:
        """Add one interaction; return the new state and next-item scores
        ``[n_items + 1]`` — the same as :meth:`predict` on the whole history."""
        state = HistoryState([*state.items, int(item)])
        window = state.items[-self.max_len :] if self.max_len else state.items
        device = next((t.device for t in self.buffers()), None) or next(
            (p.device for p in self.parameters()), torch.device("cpu")
        )
        with torch.no_grad():
            scores = self.predict(torch.tensor([window], dtype=torch.long, device=device))[0]
        return state, scores

    def num_parameters(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    @property
    def trainable(self) -> bool:
        return self.objective != "none" and self.num_parameters() > 0


class SequentialModel(Recommender):
    """Base class of neural sequence models with an item embedding table.

    A subclass builds ``self.item_emb`` (``nn.Embedding(n_items + 1, dim,
    padding_idx=0)``) and implements :meth:`encode`. Scoring uses the tied item
    embeddings by default (override :meth:`output_embeddings` to untie).

    * ``objective = "causal"``: position ``t`` of :meth:`encode` predicts item
      ``t + 1``; the trainer applies the loss at every non-padding position.
    * ``objective = "masked"``: the model implements :meth:`mask_batch` (cloze);
      the trainer applies the loss at masked positions only.
    """

    item_emb: nn.Embedding

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` left-padded item ids → hidden states ``[B, L, D]``."""
        raise NotImplementedError

    def item_embeddings(self) -> torch.Tensor:
        """The item embedding table ``[n_items + 1, D]`` (row 0 = padding), for analyses."""
        return self.item_emb.weight

    def output_embeddings(self) -> torch.Tensor:
        """The matrix hidden states are scored against, ``[n_items + 1, D]``."""
        return self.item_embeddings()

    def score(self, hidden: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of hidden states ``[..., D]`` against all items (``[..., n_items + 1]``)
        or against ``candidates`` (``[..., C]`` item ids → ``[..., C]``)."""
        weight = self.output_embeddings()
        if candidates is None:
            return hidden @ weight.t()
        return (hidden.unsqueeze(-2) * weight[candidates]).sum(-1)

    def full_scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 scores of hidden states ``[B, D]`` against every item (``[B, n_items + 1]``,
        column 0 = ``-inf``), for ranking. Autocast is off here: bf16 scores keep 8
        significant bits, so over thousands of items many would tie with the
        target, and ties count against the model (docs/protocol.md section 7)."""
        with torch.autocast(hidden.device.type, enabled=False):
            scores = self.score(hidden.float())
        scores[:, 0] = -torch.inf
        return scores

    def predict(self, seqs: torch.Tensor) -> torch.Tensor:
        return self.full_scores(self.encode(seqs)[:, -1])

    def mask_batch(
        self, seqs: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked objective only: ``(inputs, labels)`` with labels 0 where no loss."""
        raise NotImplementedError
