"""The fast paths are exact: the fused linear + CE equals the plain one (values
and gradients), and SASRec's right-padded causal attention equals the masked
left-padded formulation."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import seqrec_sasrec
from seqrec_core.losses import full_ce, fused_ce
from seqrec_core.nn import TransformerBlock


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
@pytest.mark.parametrize("n_items", [29, 127, 200])  # catalogue widths below, at and above ALIGN
def test_fused_ce_equals_full_ce_values_and_gradients(chunk, n_items):
    torch.manual_seed(0)
    h = torch.randn(50, 16, requires_grad=True)
    w = torch.randn(n_items + 1, 16, requires_grad=True)
    t = torch.randint(1, n_items + 1, (50,))
    a = full_ce(h, t, w)
    ga = torch.autograd.grad(a, (h, w))
    b = fused_ce(h, t, w, chunk=chunk)
    gb = torch.autograd.grad(b, (h, w))
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(ga[0], gb[0], atol=1e-6)
    assert torch.allclose(ga[1], gb[1], atol=1e-6)
    assert gb[1].shape == w.shape and gb[1][0].abs().max() == 0  # padding row: no gradient


def test_fused_ce_ignores_target_zero_and_scales_with_the_upstream_gradient():
    torch.manual_seed(2)
    h = torch.randn(20, 8, requires_grad=True)
    w = torch.randn(12, 8, requires_grad=True)
    t = torch.randint(1, 12, (20,))
    t[::3] = 0
    live = t != 0
    ref = F.cross_entropy(
        torch.cat([torch.full((20, 1), -torch.inf), (h @ w.t())[:, 1:]], 1), t, ignore_index=0
    )
    got = fused_ce(h, t, w, chunk=6)
    assert torch.allclose(got, ref, atol=1e-6)
    assert torch.allclose(full_ce(h, t, w), ref, atol=1e-6)  # the plain path ignores them too
    ga = torch.autograd.grad(3.0 * ref, (h, w))
    gb = torch.autograd.grad(3.0 * got, (h, w))
    assert torch.allclose(ga[0], gb[0], atol=1e-6) and torch.allclose(ga[1], gb[1], atol=1e-6)
    assert gb[0][~live].abs().max() == 0


def test_fused_ce_without_grad_gives_the_loss_only():
    h, w = torch.randn(9, 4), torch.randn(7, 4)
    t = torch.randint(1, 7, (9,))
    assert torch.allclose(fused_ce(h, t, w), full_ce(h, t, w), atol=1e-6)


def test_fused_ce_under_bf16_autocast_matches_the_plain_autocast_loss():
    torch.manual_seed(1)
    h = torch.randn(40, 32, requires_grad=True)
    w = torch.randn(25, 32, requires_grad=True)
    t = torch.randint(1, 25, (40,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hb = h * 1.0
        a = full_ce(hb, t, w)
        b = fused_ce(hb, t, w, chunk=9)
    assert torch.allclose(a.float(), b.float(), rtol=1e-2)
    ga = torch.autograd.grad(a, (h, w), retain_graph=True)
    gb = torch.autograd.grad(b, (h, w))
    assert gb[0].dtype == h.dtype and gb[1].dtype == w.dtype
    for x, y in zip(ga, gb, strict=True):
        assert torch.allclose(x, y, atol=2e-2, rtol=5e-2)


TRITON_CHECK = """
import torch
from seqrec_core.losses import fused_ce
torch.manual_seed(0)
for n_items, chunk in ((29, 7), (300, 64)):
    h = torch.randn(37, 16, requires_grad=True)
    w = torch.randn(n_items + 1, 16, requires_grad=True)
    t = torch.randint(0, n_items + 1, (37,))
    a = fused_ce(h, t, w, chunk=chunk, triton=False)
    ga = torch.autograd.grad(a, (h, w))
    b = fused_ce(h, t, w, chunk=chunk, triton=True)
    gb = torch.autograd.grad(b, (h, w))
    assert torch.allclose(a, b, atol=1e-5), (a, b)
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(ga, gb)), "grads differ"
print("ok")
"""


def test_triton_row_kernel_equals_the_pytorch_rows_in_the_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run(
        [sys.executable, "-c", TRITON_CHECK], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_ce_on_cuda_matches_plain_autocast_ce():
    torch.manual_seed(0)
    h = torch.randn(3000, 64, device="cuda", requires_grad=True)
    w = (torch.randn(3417, 64, device="cuda") * 0.1).requires_grad_()
    t = torch.randint(1, 3417, (3000,), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        a = full_ce(h, t, w)
        b = fused_ce(h, t, w, chunk=1024)
    assert torch.allclose(a.float(), b.float(), rtol=2e-3)
    ga = torch.autograd.grad(a, (h, w))
    gb = torch.autograd.grad(b, (h, w))
    for x, y in zip(ga, gb, strict=True):
        assert (x - y).abs().max() <= 1e-2 * x.abs().max()


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


def test_sasrec_untied_output_scores_against_its_own_table():
    torch.manual_seed(0)
    opts = dict(max_len=8, dim=16, heads=2, blocks=1, dropout=0.0)
    tied = seqrec_sasrec.SASRec(seqrec_sasrec.SASRecOptions(**opts), 30).eval()
    untied = seqrec_sasrec.SASRec(seqrec_sasrec.SASRecOptions(**opts, tie_output=False), 30)
    untied.eval()
    assert untied.output_embeddings() is untied.out_emb.weight
    assert tied.output_embeddings() is tied.item_emb.weight
    assert untied.num_parameters() == tied.num_parameters() + 31 * 16
    seqs = torch.randint(1, 31, (3, 8))
    with torch.no_grad():
        h = untied.encode(seqs)[:, -1]
        assert torch.allclose(untied.predict(seqs)[:, 1:], (h @ untied.out_emb.weight.t())[:, 1:])
