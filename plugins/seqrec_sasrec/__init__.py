"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

A causal Transformer over the item sequence with learned absolute positions,
pre-LayerNorm blocks and tied input/output item embeddings. Position ``t``
predicts item ``t + 1``. Histories are left-padded; padding never influences a
real position (key-padding mask) and no position sees the future (causal mask).
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from seqrec_core import hookimpl
from seqrec_core.model import SequentialModel
from seqrec_core.nn import TransformerBlock, init_weights


class SASRecOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_len: int = Field(200, ge=1, description="most recent items the model reads")
    dim: int = Field(64, ge=1, description="embedding / hidden size")
    blocks: int = Field(2, ge=1, description="Transformer blocks")
    heads: int = Field(1, ge=1, description="attention heads (must divide dim)")
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    ffn_factor: int = Field(1, ge=1, description="feed-forward width = ffn_factor * dim")

    def model_post_init(self, _ctx) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")


class SASRec(SequentialModel):
    name = "sasrec"
    Options = SASRecOptions
    objective = "causal"

    def __init__(self, options: SASRecOptions, n_items: int):
        super().__init__(options, n_items)
        d = options.dim
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(options.max_len, d)
        self.drop = nn.Dropout(options.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(d, options.heads, options.dropout, options.ffn_factor * d)
            for _ in range(options.blocks)
        )
        self.ln = nn.LayerNorm(d)
        self.apply(init_weights)

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        seqs = seqs[:, -self.options.max_len :]
        n = seqs.shape[1]
        keep = seqs != 0
        pos = torch.arange(self.options.max_len - n, self.options.max_len, device=seqs.device)
        x = self.item_emb(seqs) * math.sqrt(self.options.dim) + self.pos_emb(pos)
        x = self.drop(x) * keep.unsqueeze(-1)
        causal = torch.ones(n, n, dtype=torch.bool, device=seqs.device).tril()
        # A query sees earlier non-padding keys and always itself (so padded rows
        # have a defined softmax; their outputs are never used).
        mask = (causal & keep[:, None, :]) | torch.eye(n, dtype=torch.bool, device=seqs.device)
        mask = mask.unsqueeze(1)
        for block in self.blocks:
            x = block(x, mask) * keep.unsqueeze(-1)
        return self.ln(x)


@hookimpl
def register_models(register):
    register(SASRec)
