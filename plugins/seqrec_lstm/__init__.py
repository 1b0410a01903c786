"""LSTM / GRU4Rec: a recurrent network over the item sequence.

``cell: lstm`` is an LSTM next-item model; ``cell: gru`` is GRU4Rec (Hidasi et
al., ICLR 2016) trained with the same losses as every other model. Both use
``torch.nn.LSTM`` / ``torch.nn.GRU`` (cuDNN on a GPU), tied input/output item
embeddings and a linear map from the recurrent output to the embedding space.
Position ``t`` predicts item ``t + 1``.

Padding: histories arrive left-padded, but an RNN that starts from a zero state
and reads padding steps first ends in a different state (the gate biases move it
even on a zero input). :meth:`LSTMRec.encode` therefore rotates each row so its
items start at column 0, runs the RNN — trailing padding cannot reach earlier
outputs of a causal RNN — and rotates back. The result: padding never changes a
real position's output, and there is no ``pack_padded_sequence`` (whose lengths
must be copied to the CPU every batch).

Streaming: :meth:`LSTMRec.init_state` runs the RNN over the last ``max_len``
items of a history, :meth:`LSTMRec.step` advances the recurrent state by one
item in O(1). The scores equal :meth:`predict` on the whole history while it
has at most ``max_len`` items; beyond that the state still carries the older
items, which :meth:`predict` (a window of ``max_len``) cuts off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from seqrec_core import hookimpl
from seqrec_core.model import SequentialModel

#: The recurrent state nn.LSTM / nn.GRU take: ``(h, c)`` or ``h``, ``[layers, 1, dim]``.
Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class LSTMOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cell: Literal["lstm", "gru"] = Field("lstm", description="recurrent cell; gru gives GRU4Rec")
    max_len: int = Field(200, ge=1, description="most recent items the model reads")
    dim: int = Field(64, ge=1, description="embedding / hidden size")
    layers: int = Field(1, ge=1, description="stacked recurrent layers")
    dropout: float = Field(
        0.2, ge=0.0, lt=1.0, description="dropout on the item embeddings and between layers"
    )


@dataclass
class RecurrentState:
    """Streaming state of one user: the RNN state after the items seen so far and
    the last recurrent output (``None`` before the first item)."""

    hidden: Hidden | None
    output: torch.Tensor | None


class LSTMRec(SequentialModel):
    name = "lstm"
    Options = LSTMOptions
    objective = "causal"

    def __init__(self, options: LSTMOptions, n_items: int):
        super().__init__(options, n_items)
        d = options.dim
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.drop = nn.Dropout(options.dropout)
        rnn = nn.LSTM if options.cell == "lstm" else nn.GRU
        self.rnn = rnn(
            d,
            d,
            num_layers=options.layers,
            batch_first=True,
            dropout=options.dropout if options.layers > 1 else 0.0,
        )
        # The RNN output is bounded (tanh); a linear map lets scores reach the scale
        # of the tied item embeddings.
        self.proj = nn.Linear(d, d)
        nn.init.normal_(self.item_emb.weight, std=d**-0.5)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def _run(self, seqs: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        """Right-padded (or unpadded) ids → projected outputs and the final RNN state."""
        out, hidden = self.rnn(self.drop(self.item_emb(seqs)), hidden)
        return self.proj(out), hidden

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        seqs = seqs[:, -self.options.max_len :]
        n = seqs.shape[1]
        keep = seqs != 0
        pads = n - keep.sum(1, keepdim=True)
        cols = torch.arange(n, device=seqs.device)
        # Rotate left by the padding count: items first, padding last.
        out, _ = self._run(seqs.gather(1, (cols + pads) % n))
        back = ((cols - pads) % n).unsqueeze(-1).expand(-1, -1, out.shape[-1])
        return out.gather(1, back) * keep.unsqueeze(-1)

    # ---------------------------------------------------------- streaming inference
    def _device(self) -> torch.device:
        return self.item_emb.weight.device

    @torch.no_grad()
    def init_state(self, history: torch.Tensor) -> RecurrentState:
        items = torch.as_tensor(history, dtype=torch.long).flatten()
        items = items[items != 0][-self.options.max_len :]
        if not len(items):
            return RecurrentState(None, None)
        out, hidden = self._run(items.to(self._device()).unsqueeze(0))
        return RecurrentState(hidden, out[0, -1])

    @torch.no_grad()
    def step(self, state: RecurrentState, item: int) -> tuple[RecurrentState, torch.Tensor]:
        seq = torch.tensor([[int(item)]], dtype=torch.long, device=self._device())
        out, hidden = self._run(seq, state.hidden)
        output = out[0, -1]
        scores = self.score(output).float()
        scores[0] = -torch.inf
        return RecurrentState(hidden, output), scores


@hookimpl
def register_models(register):
    register(LSTMRec)
