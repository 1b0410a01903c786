"""The fast paths are exact: chunked CE equals the plain one (values and
gradients), and SASRec's right-padded causal attention equals the masked
left-padded formulation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import seqrec_sasrec
from seqrec_core.losses import chunked_ce, full_ce
from seqrec_core.nn import TransformerBlock


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
    scale = math.sqrt(model.options.dim) if model.options.emb_scale else 1.0
    x = model.item_emb(seqs) * scale + model.pos_emb(pos)
    x = x * keep.unsqueeze(-1)
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    mask = ((causal & keep[:, None, :]) | torch.eye(n, dtype=torch.bool)).unsqueeze(1)
    for block in model.blocks:
        x = block(x, mask) * keep.unsqueeze(-1)
    return model.ln(x)


@pytest.mark.parametrize(
    "norm, emb_scale", [("pre", True), ("post", True), ("sasrec", True), ("sasrec", False)]
)
def test_right_padded_causal_sasrec_equals_masked_left_padded(norm, emb_scale):
    torch.manual_seed(0)
    opts = seqrec_sasrec.SASRecOptions(
        max_len=10, dim=16, heads=2, blocks=2, dropout=0.0, norm=norm, emb_scale=emb_scale
    )
    model = seqrec_sasrec.SASRec(opts, 40).eval()
    seqs = torch.randint(1, 41, (6, 10))
    for row, pads in enumerate([0, 1, 3, 5, 9, 10]):
        seqs[row, :pads] = 0
    with torch.no_grad():
        fast = model.encode(seqs)
        ref = masked_reference(model, seqs)
    keep = (seqs != 0).unsqueeze(-1)
    assert torch.allclose(fast * keep, ref * keep, atol=1e-5)


def _block(norm: str) -> TransformerBlock:
    torch.manual_seed(0)
    block = TransformerBlock(8, 2, 0.0, 16, norm).eval()
    with torch.no_grad():  # non-trivial LayerNorm affines, so the layouts can differ
        for ln in (block.ln1, block.ln2):
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.uniform_(-0.5, 0.5)
    return block


def test_block_layouts_follow_their_formulas():
    x = torch.randn(3, 5, 8) * 4 + 1
    blocks = {n: _block(n) for n in ("pre", "post", "sasrec")}
    with torch.no_grad():
        out = {n: b(x, is_causal=True) for n, b in blocks.items()}
        b = blocks["pre"]

        def attn(q_in, kv_in):
            w, bias = b.qkv.weight, b.qkv.bias
            q = F.linear(q_in, w[:8], bias[:8]).view(3, 5, 2, 4).transpose(1, 2)
            k = F.linear(kv_in, w[8:16], bias[8:16]).view(3, 5, 2, 4).transpose(1, 2)
            v = F.linear(kv_in, w[16:], bias[16:]).view(3, 5, 2, 4).transpose(1, 2)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return b.proj(a.transpose(1, 2).reshape(3, 5, 8))

        h = x + attn(b.ln1(x), b.ln1(x))
        pre = h + b.ff(b.ln2(h))
        h = b.ln1(x + attn(x, x))
        post = b.ln2(h + b.ff(h))
        h = b.ln2(b.ln1(x) + attn(b.ln1(x), x))
        sasrec = h + b.ff(h)
    assert torch.allclose(out["pre"], pre, atol=1e-5)
    assert torch.allclose(out["post"], post, atol=1e-5)
    assert torch.allclose(out["sasrec"], sasrec, atol=1e-5)
    assert not torch.allclose(out["pre"], out["sasrec"], atol=1e-3)


@pytest.mark.parametrize("norm", ["pre", "post", "sasrec"])
def test_every_block_layout_is_causal(norm):
    block = _block(norm)
    x = torch.randn(2, 6, 8)
    y = x.clone()
    y[:, 4:] = torch.randn(2, 2, 8)  # change the future of positions 0..3
    with torch.no_grad():
        a, b = block(x, is_causal=True), block(y, is_causal=True)
    assert torch.allclose(a[:, :4], b[:, :4], atol=1e-6)
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_unknown_block_layout_is_rejected():
    with pytest.raises(ValueError, match="norm must be"):
        TransformerBlock(8, 2, 0.0, 16, "sandwich")
