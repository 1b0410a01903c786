"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

A causal Transformer over the item sequence with learned absolute positions,
pre-LayerNorm blocks and tied input/output item embeddings. Position ``t``
predicts item ``t + 1``. Histories are left-padded; padding never influences a
real position (key-padding mask) and no position sees the future (causal mask).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Literal

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
    emb_init: Literal["normal", "xavier"] = Field(
        "normal",
        description="embedding init: N(0, 1/dim) or Xavier-normal (reference SASRec code)",
    )

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
        self.apply(partial(init_weights, embeddings=options.emb_init))

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        max_len = self.options.max_len
        seqs = seqs[:, -max_len:]
        n = seqs.shape[1]
        ar = torch.arange(n, device=seqs.device)
        lengths = (seqs != 0).sum(1, keepdim=True)
        pads = n - lengths
        # Work right-padded (real items first): then plain causal attention never
        # lets a real position see padding, and needs no mask tensor (flash kernel).
        right = seqs.gather(1, (ar + pads) % n)
        keep = (ar < lengths).unsqueeze(-1)
        # Learned positions stay right-aligned: the newest item is always max_len - 1.
        pos = (max_len - lengths + ar).clamp(max=max_len - 1)
        x = self.item_emb(right) * math.sqrt(self.options.dim) + self.pos_emb(pos)
        x = self.drop(x) * keep
        for block in self.blocks:
            x = block(x, is_causal=True) * keep
        x = self.ln(x)
        back = ((ar - pads) % n).unsqueeze(-1).expand(-1, -1, x.shape[-1])
        return x.gather(1, back)


@hookimpl
def register_models(register):
    register(SASRec)
