"""Training losses over the positions that have a target.

All take hidden states ``h`` ``[N, D]`` (one row per supervised position), the
target ids ``[N]`` and the model (for its output embeddings), so a loss never
needs the full ``[B, L, n_items]`` logits unless it is the full softmax.

* ``ce`` — full softmax cross-entropy over all items (padding excluded);
  with ``loss.chunked`` computed chunk by chunk so the ``[N, V]`` logits are
  never materialised — same value and gradients, bounded memory. It is off by
  default: without a fused kernel the recomputation costs more time than the
  saved memory traffic (benchmarks/model_bench.py: 0.76x on an H200).
* ``sampled_softmax`` — softmax over the target and ``negatives`` uniform
  negatives shared by the batch (accidental hits masked out).
* ``bce`` — binary cross-entropy, one positive vs ``negatives`` uniform
  negatives per position (original SASRec uses 1).
* ``gbce`` — gSASRec's generalised BCE: the positive term is raised to the
  power β = α (t (1 − 1/α) + 1/α), α = negatives / (n_items − 1), which
  counteracts the overconfidence negative sampling induces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def full_ce(h: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Plain full-softmax CE: materialises all ``[N, n_items + 1]`` logits in fp32."""
    logits = (h @ weight.t()).float()
    logits[:, 0] = -torch.inf
    return F.cross_entropy(logits, targets)


def _chunk_rows(n_items: int) -> int:
    # About 64M logits (256 MB in fp32) per chunk.
    return max(256, 2**26 // max(1, n_items))


class _ChunkedCE(torch.autograd.Function):
    """Full-softmax CE that never holds more than one chunk of logits.

    Forward keeps only the per-row log-sum-exp; backward recomputes each chunk's
    logits and turns them into gradients at once. Matmuls run in ``h``'s dtype
    (bf16 under autocast) with fp32 softmax statistics — the same arithmetic as
    :func:`full_ce` under autocast, without the ``[N, V]`` fp32 buffers.
    """

    @staticmethod
    def forward(ctx, h, weight, targets, chunk):
        w = weight.to(h.dtype)
        n = h.shape[0]
        lse = torch.empty(n, dtype=torch.float32, device=h.device)
        target_logit = torch.empty(n, dtype=torch.float32, device=h.device)
        for s in range(0, n, chunk):
            logits = (h[s : s + chunk] @ w.t()).float()
            logits[:, 0] = -torch.inf
            lse[s : s + chunk] = torch.logsumexp(logits, dim=1)
            target_logit[s : s + chunk] = logits.gather(1, targets[s : s + chunk, None])[:, 0]
        ctx.save_for_backward(h, weight, targets, lse)
        ctx.chunk = chunk
        return (lse - target_logit).mean()

    @staticmethod
    def backward(ctx, grad_out):
        h, weight, targets, lse = ctx.saved_tensors
        w = weight.to(h.dtype)
        n = h.shape[0]
        scale = grad_out.float() / n
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        rows = torch.arange(min(n, ctx.chunk), device=h.device)
        for s in range(0, n, ctx.chunk):
            hc = h[s : s + ctx.chunk]
            logits = (hc @ w.t()).float()
            logits[:, 0] = -torch.inf
            probs = torch.exp(logits - lse[s : s + ctx.chunk, None])
            probs[rows[: hc.shape[0]], targets[s : s + ctx.chunk]] -= 1.0
            probs = (probs * scale).to(h.dtype)
            grad_h[s : s + ctx.chunk] = probs @ w
            grad_w += (probs.t() @ hc).float()
        return grad_h, grad_w.to(weight.dtype), None, None


def chunked_ce(
    h: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, chunk: int | None = None
) -> torch.Tensor:
    """Same value and gradients as :func:`full_ce`, with memory bounded by ``chunk`` rows."""
    return _ChunkedCE.apply(h, weight, targets, chunk or _chunk_rows(weight.shape[0]))


def _negatives(n_items: int, shape: tuple[int, ...], device, generator) -> torch.Tensor:
    return torch.randint(1, n_items + 1, shape, device=device, generator=generator)


def sampled_softmax(h, targets, weight, negatives, generator=None) -> torch.Tensor:
    neg = _negatives(weight.shape[0] - 1, (negatives,), h.device, generator)
    pos_logit = (h * weight[targets]).sum(-1, keepdim=True).float()
    neg_logits = (h @ weight[neg].t()).float()
    neg_logits = neg_logits.masked_fill(neg[None, :] == targets[:, None], -torch.inf)
    logits = torch.cat([pos_logit, neg_logits], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(targets))


def _pos_neg_logits(h, targets, weight, negatives, generator):
    neg = _negatives(weight.shape[0] - 1, (h.shape[0], negatives), h.device, generator)
    pos = (h * weight[targets]).sum(-1).float()
    negl = torch.einsum("nd,nkd->nk", h, weight[neg]).float()
    return pos, negl, neg != targets[:, None]


def bce(h, targets, weight, negatives, generator=None) -> torch.Tensor:
    pos, neg, valid = _pos_neg_logits(h, targets, weight, negatives, generator)
    neg_term = (F.softplus(neg) * valid).sum(-1)
    return (F.softplus(-pos) + neg_term).mean()


def gbce(h, targets, weight, negatives, t: float, generator=None) -> torch.Tensor:
    n_items = weight.shape[0] - 1
    alpha = negatives / max(1, n_items - 1)
    beta = alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)
    pos, neg, valid = _pos_neg_logits(h, targets, weight, negatives, generator)
    neg_term = (F.softplus(neg) * valid).sum(-1)
    # -log(sigmoid(pos) ** beta) = beta * softplus(-pos)
    return (beta * F.softplus(-pos) + neg_term).mean()


def compute_loss(loss_cfg, h, targets, weight, generator=None) -> torch.Tensor:
    """Dispatch on the recipe's ``loss`` section."""
    if loss_cfg.name == "ce":
        return chunked_ce(h, targets, weight) if loss_cfg.chunked else full_ce(h, targets, weight)
    if loss_cfg.name == "sampled_softmax":
        return sampled_softmax(h, targets, weight, loss_cfg.negatives, generator)
    if loss_cfg.name == "bce":
        return bce(h, targets, weight, loss_cfg.negatives, generator)
    if loss_cfg.name == "gbce":
        return gbce(h, targets, weight, loss_cfg.negatives, loss_cfg.gbce_t, generator)
    raise ValueError(f"unknown loss {loss_cfg.name!r}")
