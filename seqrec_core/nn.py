"""Neural building blocks shared by model plugins (no model is named here).

* :class:`TransformerBlock` — pre-LayerNorm self-attention + feed-forward block
  on ``torch.nn.functional.scaled_dot_product_attention`` with a boolean mask;
  causal (SASRec) and bidirectional (BERT4Rec) models differ only in the mask.
* :class:`TransformerOptions`, :func:`transformer_blocks` — the options and
  block stack Transformer plugins share.
* :func:`init_weights` — Xavier linears, N(0, 1/dim) or Xavier-normal
  embeddings with the padding row zeroed.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class TransformerOptions(BaseModel):
    """Options shared by Transformer model plugins (each adds ``max_len`` and its
    own defaults)."""

    model_config = ConfigDict(extra="forbid")
    dim: int = Field(64, ge=1, description="embedding / hidden size")
    blocks: int = Field(2, ge=1, description="Transformer blocks")
    heads: int = Field(1, ge=1, description="attention heads (must divide dim)")
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    ffn_factor: int = Field(1, ge=1, description="feed-forward width = ffn_factor * dim")
    norm: Literal["pre", "post", "sasrec"] = Field(
        "pre",
        description="block layout: pre-LN (x + f(LN(x))), post-LN (LN(x + f(x)), BERT) or the "
        "original SASRec code's (residual from the normalised input, keys from the raw one)",
    )
    emb_init: Literal["normal", "xavier"] = Field(
        "normal",
        description="embedding init: N(0, 1/dim) or Xavier-normal (reference SASRec code)",
    )

    def model_post_init(self, _ctx) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")


def transformer_blocks(options: TransformerOptions) -> nn.ModuleList:
    d = options.dim
    return nn.ModuleList(
        TransformerBlock(d, options.heads, options.dropout, options.ffn_factor * d, options.norm)
        for _ in range(options.blocks)
    )


class TransformerBlock(nn.Module):
    """Transformer block, pre-LN by default (``norm``: see
    :class:`TransformerOptions`). Attention is masked by ``mask`` (boolean
    ``[B, 1, L, L]``, True = attend) or, with ``is_causal`` and no mask,
    causally — which lets PyTorch pick its flash-attention kernel."""

    def __init__(self, dim: int, heads: int, dropout: float, ffn: int, norm: str = "pre"):
        super().__init__()
        if norm not in ("pre", "post", "sasrec"):
            raise ValueError(f"norm must be 'pre', 'post' or 'sasrec', not {norm!r}")
        self.heads = heads
        self.norm = norm
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, ffn), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn, dim)
        )
        self.dropout = dropout
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        b, n, d = x.shape
        if self.norm == "sasrec":
            # Kang & McAuley's code: queries (and the residual) from LN(x), keys and values from x.
            xq = self.ln1(x)
            q = F.linear(xq, self.qkv.weight[:d], self.qkv.bias[:d])
            kv = F.linear(x, self.qkv.weight[d:], self.qkv.bias[d:])
            qkv = torch.cat([q, kv], dim=-1)
        else:
            xq = self.ln1(x) if self.norm == "pre" else x
            qkv = self.qkv(xq)
        q, k, v = qkv.view(b, n, 3, self.heads, d // self.heads).unbind(2)
        att = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal and mask is None,
        )
        att = self.drop(self.proj(att.transpose(1, 2).reshape(b, n, d)))
        if self.norm == "pre":
            x = x + att
            return x + self.drop(self.ff(self.ln2(x)))
        if self.norm == "post":
            x = self.ln1(x + att)
            return self.ln2(x + self.drop(self.ff(x)))
        x = self.ln2(xq + att)
        return x + self.drop(self.ff(x))


def init_weights(module: nn.Module, embeddings: str = "normal") -> None:
    """Xavier-uniform linears; embeddings N(0, 1/dim) (``"normal"``) or
    Xavier-normal (``"xavier"``, as the reference SASRec code does), padding row
    zeroed. Use as ``model.apply(partial(init_weights, embeddings=...))``."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        if embeddings == "xavier":
            nn.init.xavier_normal_(module.weight)
        else:
            nn.init.normal_(module.weight, std=module.embedding_dim**-0.5)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
