"""Training losses over the positions that have a target.

All take hidden states ``h`` ``[N, D]`` (one row per supervised position), the
target ids ``[N]`` and the model (for its output embeddings), so a loss never
needs the full ``[B, L, n_items]`` logits unless it is the full softmax.

* ``ce`` — full softmax cross-entropy over all items (padding excluded). By
  default (``loss.fused``) the output layer and the softmax are fused
  (:func:`fused_ce`): chunks of logits are made, turned into gradients in
  place by a Triton kernel and consumed by the backward GEMMs, so the
  ``[N, V]`` logits and their fp32 copies never exist; ``loss.fused: false``
  gives the plain :func:`full_ce`.
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
    """Plain full-softmax CE: materialises all ``[N, n_items + 1]`` logits in fp32.
    Rows whose target is 0 (padding) are ignored."""
    logits = (h @ weight.t()).float()
    logits[:, 0] = -torch.inf
    return F.cross_entropy(logits, targets, ignore_index=0)


ALIGN = 128  # catalogue width padded to this for the Hopper GEMM kernels (odd widths fall back)


def _chunk_rows(width: int) -> int:
    # About 128M logits (256 MB in bf16) per chunk; a multiple of 128 rows.
    return max(128, (2**27 // max(1, width)) // 128 * 128)


def _ce_rows_torch(logits: torch.Tensor, targets: torch.Tensor, n_items: int, grad: bool):
    """PyTorch twin of :func:`seqrec_core.kernels.ce_rows` (CPU, or no Triton)."""
    x = logits.float()
    x[:, 0] = -torch.inf
    x[:, n_items + 1 :] = -torch.inf
    lse = torch.logsumexp(x, dim=1)
    live = targets != 0
    loss = torch.where(live, lse - x.gather(1, targets[:, None])[:, 0], 0.0)
    if grad:
        p = torch.exp(x - lse[:, None])
        p[torch.arange(len(targets), device=x.device), targets] -= 1.0
        p[~live] = 0.0
        logits.copy_(p)
    return loss


class _FusedLinearCE(torch.autograd.Function):
    """Full-softmax CE of ``h @ weight.T`` that never holds all ``[N, V]`` logits.

    Rows are processed in chunks: one GEMM gives a chunk's logits (``dtype``:
    bf16 under autocast, as the plain path's autocast matmul), one pass over
    them (Triton on CUDA) gives each row's loss and turns the logits in place
    into ``softmax - onehot``, and two GEMMs turn that into the chunk's
    gradients for ``h`` and ``weight``. The gradients are thus computed in the
    forward pass (nothing is recomputed) and only scaled in backward. The
    catalogue is padded to a multiple of :data:`ALIGN` columns so the GEMMs
    use the GPU's aligned kernels; padded and padding columns are never
    candidates. Targets equal to 0 are ignored; the loss is the mean over the
    others (``F.cross_entropy(..., ignore_index=0)``).
    """

    @staticmethod
    def forward(ctx, h, weight, targets, dtype, chunk, kernel):
        n, d = h.shape
        n_items = weight.shape[0] - 1
        width = -(-weight.shape[0] // ALIGN) * ALIGN
        grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        hc = h.to(dtype).contiguous()
        w = weight.to(dtype)
        if width != weight.shape[0]:
            w = F.pad(w, (0, 0, 0, width - weight.shape[0]))
        chunk = chunk or _chunk_rows(width)
        rows_fn = kernel or _ce_rows_torch
        losses = torch.empty(n, dtype=torch.float32, device=h.device)
        grad_h = torch.empty(n, d, dtype=dtype, device=h.device) if grad else None
        grad_w = torch.zeros(width, d, dtype=torch.float32, device=h.device) if grad else None
        for s in range(0, n, chunk):
            hs = hc[s : s + chunk]
            logits = hs @ w.t()
            losses[s : s + chunk] = rows_fn(logits, targets[s : s + chunk], n_items, grad)
            if grad:
                torch.mm(logits, w, out=grad_h[s : s + chunk])
                grad_w += logits.t() @ hs
        count = (targets != 0).sum().clamp(min=1).float()
        ctx.n_rows = weight.shape[0]
        ctx.dtypes = (h.dtype, weight.dtype)
        if grad:
            ctx.save_for_backward(grad_h, grad_w, count)
        return losses.sum() / count

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, count = ctx.saved_tensors
        scale = grad_out.float() / count
        gh = (grad_h.float() * scale).to(ctx.dtypes[0]) if ctx.needs_input_grad[0] else None
        gw = None
        if ctx.needs_input_grad[1]:
            gw = (grad_w[: ctx.n_rows] * scale).to(ctx.dtypes[1])
        return gh, gw, None, None, None, None


def fused_ce(
    h: torch.Tensor,
    targets: torch.Tensor,
    weight: torch.Tensor,
    chunk: int | None = None,
    triton: bool | None = None,
) -> torch.Tensor:
    """Same value and gradients as :func:`full_ce` (within bf16 rounding under
    autocast), without materialising the ``[N, n_items + 1]`` logits or any
    fp32 copy of them. ``triton``: use the Triton row kernel (default: when
    ``h`` is on CUDA and Triton is installed); ``chunk``: rows per GEMM."""
    from seqrec_core import kernels

    if triton is None:
        triton = kernels.available(h)
    dev = h.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else h.dtype
    with torch.autocast(dev, enabled=False):
        return _FusedLinearCE.apply(
            h, weight, targets, dtype, chunk, kernels.ce_rows if triton else None
        )


def chunked_ce(
    h: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, chunk: int | None = None
) -> torch.Tensor:
    """Alias of :func:`fused_ce` (the name of its slower, recomputing predecessor)."""
    return fused_ce(h, targets, weight, chunk)


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
        return fused_ce(h, targets, weight) if loss_cfg.fused else full_ce(h, targets, weight)
    if loss_cfg.name == "sampled_softmax":
        return sampled_softmax(h, targets, weight, loss_cfg.negatives, generator)
    if loss_cfg.name == "bce":
        return bce(h, targets, weight, loss_cfg.negatives, generator)
    if loss_cfg.name == "gbce":
        return gbce(h, targets, weight, loss_cfg.negatives, loss_cfg.gbce_t, generator)
    raise ValueError(f"unknown loss {loss_cfg.name!r}")
