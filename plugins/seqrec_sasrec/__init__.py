"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

A causal Transformer over the item sequence with learned absolute positions,
pre-LayerNorm blocks and tied input/output item embeddings. Position ``t``
predicts item ``t + 1``. Histories are left-padded; padding never influences a
real position (key-padding mask) and no position sees the future (causal mask).
"""

from __future__ import annotations

import math
from functools import partial

import torch
from pydantic import Field
from torch import nn

from seqrec_core import hookimpl
from seqrec_core.model import SequentialModel
from seqrec_core.nn import TransformerOptions, init_weights, transformer_blocks


class SASRecOptions(TransformerOptions):
    max_len: int = Field(200, ge=1, description="most recent items the model reads")
    emb_scale: bool = Field(True, description="multiply item embeddings by sqrt(dim)")
    tie_output: bool = Field(
        True,
        description="score against the input item embeddings (tied); false: a separate "
        "output embedding table",
    )


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
        self.blocks = transformer_blocks(options)
        self.ln = nn.LayerNorm(d)
        if not options.tie_output:
            self.out_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.apply(partial(init_weights, embeddings=options.emb_init))

    def output_embeddings(self) -> torch.Tensor:
        return self.item_emb.weight if self.options.tie_output else self.out_emb.weight

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
        x = self.item_emb(right)
        if self.options.emb_scale:
            x = x * math.sqrt(self.options.dim)
        x = x + self.pos_emb(pos)
        x = self.drop(x) * keep
        for block in self.blocks:
            x = block(x, is_causal=True) * keep
        x = self.ln(x)
        back = ((ar - pads) % n).unsqueeze(-1).expand(-1, -1, x.shape[-1])
        return x.gather(1, back)


@hookimpl
def register_models(register):
    register(SASRec)
