"""The fast paths are exact: chunked CE equals the plain one (values and
gradients), and SASRec's right-padded causal attention equals the masked
left-padded formulation."""

from __future__ import annotations

import math

import pytest
import torch

import seqrec_sasrec
from seqrec_core.losses import chunked_ce, full_ce


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_chunked_ce_equals_full_ce_values_and_gradients(chunk):
    torch.manual_seed(0)
    h = torch.randn(50, 16, requires_grad=True)
    w = torch.randn(30, 16, requires_grad=True)
    t = torch.randint(1, 30, (50,))
    a = full_ce(h, t, w)
    ga = torch.autograd.grad(a, (h, w))
    b = chunked_ce(h, t, w, chunk=chunk)
    gb = torch.autograd.grad(b, (h, w))
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(ga[0], gb[0], atol=1e-6)
    assert torch.allclose(ga[1], gb[1], atol=1e-6)
    assert gb[1][0].abs().max() == 0  # padding row gets no gradient


def test_chunked_ce_under_bf16_autocast_matches_the_plain_autocast_loss():
    torch.manual_seed(1)
    h = torch.randn(40, 32, requires_grad=True)
    w = torch.randn(25, 32, requires_grad=True)
    t = torch.randint(1, 25, (40,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hb = h * 1.0
        a = full_ce(hb, t, w)
        b = chunked_ce(hb, t, w, chunk=9)
    assert torch.allclose(a.float(), b.float(), rtol=1e-2)
    ga = torch.autograd.grad(a, w)[0]
    gb = torch.autograd.grad(b, w)[0]
    assert torch.allclose(ga, gb, atol=2e-2, rtol=5e-2)


def masked_reference(model: seqrec_sasrec.SASRec, seqs: torch.Tensor) -> torch.Tensor:
    """SASRec as first written: left padding, explicit key-padding + causal mask."""
    n = seqs.shape[1]
    keep = seqs != 0
    max_len = model.options.max_len
    pos = torch.arange(max_len - n, max_len)
    x = model.item_emb(seqs) * math.sqrt(model.options.dim) + model.pos_emb(pos)
    x = x * keep.unsqueeze(-1)
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    mask = ((causal & keep[:, None, :]) | torch.eye(n, dtype=torch.bool)).unsqueeze(1)
    for block in model.blocks:
        x = block(x, mask) * keep.unsqueeze(-1)
    return model.ln(x)


def test_right_padded_causal_sasrec_equals_masked_left_padded():
    torch.manual_seed(0)
    model = seqrec_sasrec.SASRec(
        seqrec_sasrec.SASRecOptions(max_len=10, dim=16, heads=2, blocks=2, dropout=0.0), 40
    ).eval()
    seqs = torch.randint(1, 41, (6, 10))
    for row, pads in enumerate([0, 1, 3, 5, 9, 10]):
        seqs[row, :pads] = 0
    with torch.no_grad():
        fast = model.encode(seqs)
        ref = masked_reference(model, seqs)
    keep = (seqs != 0).unsqueeze(-1)
    assert torch.allclose(fast * keep, ref * keep, atol=1e-5)
