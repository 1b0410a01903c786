"""Training losses over the positions that have a target.

All take hidden states ``h`` ``[N, D]`` (one row per supervised position), the
target ids ``[N]`` and the model (for its output embeddings), so a loss never
needs the full ``[B, L, n_items]`` logits unless it is the full softmax.

* ``ce`` — full softmax cross-entropy over all items (padding excluded).
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
    logits = (h @ weight.t()).float()
    logits[:, 0] = -torch.inf
    return F.cross_entropy(logits, targets)


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
        return full_ce(h, targets, weight)
    if loss_cfg.name == "sampled_softmax":
        return sampled_softmax(h, targets, weight, loss_cfg.negatives, generator)
    if loss_cfg.name == "bce":
        return bce(h, targets, weight, loss_cfg.negatives, generator)
    if loss_cfg.name == "gbce":
        return gbce(h, targets, weight, loss_cfg.negatives, loss_cfg.gbce_t, generator)
    raise ValueError(f"unknown loss {loss_cfg.name!r}")
