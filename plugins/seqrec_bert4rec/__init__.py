"""BERT4Rec: bidirectional Transformer trained as a cloze task (Sun et al., CIKM 2019).

Every position attends to every non-padding position (no causal mask), so the
model cannot be trained to predict "the next item" directly. Instead
:meth:`BERT4Rec.mask_batch` replaces random items by a ``[MASK]`` token and the
loss asks for the hidden items back. To recommend, :meth:`BERT4Rec.predict`
appends one ``[MASK]`` after the history and scores its hidden state.

Ids: items ``1..n_items``, padding ``0``, ``[MASK]`` = ``n_items + 1``. The
embedding table has ``n_items + 2`` rows; the ``[MASK]`` row is an input token
only and is never scored (:meth:`item_embeddings` returns rows ``0..n_items``).

Masking follows the BERT4Rec reference implementation's spirit, simplified:
each item is masked with probability ``mask_prob`` and always replaced by
``[MASK]`` (no BERT 80/10/10 random/keep split — recommendation inputs gain
little from it); padding is never masked, and a non-empty row in which no item
was drawn gets its most recent item masked, so every row contributes a loss
term and the last position — the one :meth:`predict` uses — is trained often.
With ``last_mask_prob`` a share of the rows is masked exactly as :meth:`predict`
sees a history: only the most recent item, all earlier ones visible.

Pre-LayerNorm blocks, learned absolute positions aligned to the right (the
most recent item, or the appended ``[MASK]``, is always at the last position),
tied input/output item embeddings. Streaming uses the engine's recompute
fallback (:meth:`~seqrec_core.model.Recommender.step` calls :meth:`predict`).
"""

from __future__ import annotations

from functools import partial

import torch
from pydantic import Field
from torch import nn

from seqrec_core import hookimpl
from seqrec_core.model import SequentialModel
from seqrec_core.nn import TransformerOptions, init_weights, transformer_blocks


class BERT4RecOptions(TransformerOptions):
    max_len: int = Field(
        200, ge=2, description="positions the model reads; predict uses max_len - 1 items + [MASK]"
    )
    heads: int = Field(2, ge=1, description="attention heads (must divide dim)")
    ffn_factor: int = Field(4, ge=1, description="feed-forward width = ffn_factor * dim")
    mask_prob: float = Field(
        0.2, gt=0.0, le=1.0, description="chance that a training item is replaced by [MASK]"
    )
    last_mask_prob: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="share of training rows masked as at inference instead: only the most "
        "recent item, every earlier one visible (0 = off)",
    )


class BERT4Rec(SequentialModel):
    name = "bert4rec"
    Options = BERT4RecOptions
    objective = "masked"

    def __init__(self, options: BERT4RecOptions, n_items: int):
        super().__init__(options, n_items)
        d = options.dim
        self.mask_id = n_items + 1
        self.item_emb = nn.Embedding(n_items + 2, d, padding_idx=0)
        self.pos_emb = nn.Embedding(options.max_len, d)
        self.drop = nn.Dropout(options.dropout)
        self.blocks = transformer_blocks(options)
        self.ln = nn.LayerNorm(d)
        self.apply(partial(init_weights, embeddings=options.emb_init))

    def item_embeddings(self) -> torch.Tensor:
        return self.item_emb.weight[: self.n_items + 1]  # without the [MASK] row

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        seqs = seqs[:, -self.options.max_len :]
        n = seqs.shape[1]
        keep = seqs != 0
        pos = torch.arange(self.options.max_len - n, self.options.max_len, device=seqs.device)
        x = self.item_emb(seqs) * self.options.dim**0.5 + self.pos_emb(pos)
        x = self.drop(x) * keep.unsqueeze(-1)
        # Every query sees all non-padding keys, and always itself (so an all-padding
        # row has a defined softmax; its outputs are never used).
        eye = torch.eye(n, dtype=torch.bool, device=seqs.device)
        mask = (keep[:, None, :] | eye).unsqueeze(1)
        for block in self.blocks:
            x = block(x, mask) * keep.unsqueeze(-1)
        return self.ln(x)

    def mask_batch(
        self, seqs: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        real = seqs != 0
        draw = torch.rand(seqs.shape, generator=generator, device=seqs.device)
        masked = (draw < self.options.mask_prob) & real
        last = real.cumsum(1).argmax(1, keepdim=True)  # first column holding the row's last item
        if self.options.last_mask_prob > 0:
            # Rows trained as at inference: the most recent item only.
            row = torch.rand((seqs.shape[0], 1), generator=generator, device=seqs.device)
            masked &= ~(row < self.options.last_mask_prob)
        # A non-empty row with nothing drawn (or chosen above): mask its most recent item.
        none = (~masked.any(1, keepdim=True)) & real.any(1, keepdim=True)
        masked.scatter_(1, last, masked.gather(1, last) | none)
        inputs = seqs.masked_fill(masked, self.mask_id)
        labels = seqs.masked_fill(~masked, 0)
        return inputs, labels

    def predict(self, seqs: torch.Tensor) -> torch.Tensor:
        keep = self.options.max_len - 1  # columns left for the history beside the [MASK]
        seqs = seqs[:, max(0, seqs.shape[1] - keep) :]
        query = torch.full((seqs.shape[0], 1), self.mask_id, dtype=seqs.dtype, device=seqs.device)
        return self.full_scores(self.encode(torch.cat([seqs, query], 1))[:, -1])


@hookimpl
def register_models(register):
    register(BERT4Rec)
