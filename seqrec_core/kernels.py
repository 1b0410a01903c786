"""Triton kernels (CUDA only; imported lazily, absent Triton means the PyTorch path).

:func:`ce_rows` is the softmax part of the fused linear + cross-entropy in
:mod:`seqrec_core.losses`: for each row of a logits chunk it computes the
row's loss ``logsumexp - logit[target]`` over the candidate columns
``1 .. n_items`` (column 0 is padding, columns past ``n_items`` pad the
catalogue to an aligned width), and — when gradients are wanted — overwrites
the row in place with ``softmax - onehot(target)``. A row whose target is 0
is ignored (loss 0, gradient 0). Statistics are fp32 whatever the logits'
dtype, as in ``F.cross_entropy(logits.float(), …)``.

Set ``TRITON_INTERPRET=1`` before importing to run the kernel on the CPU
(slow; used by the tests to check it against the PyTorch path).
"""

from __future__ import annotations

import os

import torch

try:  # Triton ships with CUDA builds of PyTorch; CPU-only installs lack it.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def available(t: torch.Tensor) -> bool:
    """Whether :func:`ce_rows` can run on ``t`` (a CUDA tensor, or the interpreter)."""
    return triton is not None and (t.is_cuda or INTERPRET)


if triton is not None:

    @triton.jit
    def _ce_rows_kernel(
        logits_ptr,
        stride,
        targets_ptr,
        loss_ptr,
        n_items,
        N_COLS: tl.constexpr,
        GRAD: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        ptr = logits_ptr + row * stride
        target = tl.load(targets_ptr + row).to(tl.int64)
        offs = tl.arange(0, BLOCK)
        m = tl.full((), -1e30, tl.float32)
        s = tl.zeros((), tl.float32)
        for start in range(0, N_COLS, BLOCK):
            cols = start + offs
            ok = (cols >= 1) & (cols <= n_items)
            x = tl.load(ptr + cols, mask=ok, other=-float("inf")).to(tl.float32)
            m_new = tl.maximum(m, tl.max(x, 0))
            s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), 0)
            m = m_new
        lse = m + tl.log(s)
        live = target != 0
        t_logit = tl.load(ptr + target, mask=live, other=0.0).to(tl.float32)
        tl.store(loss_ptr + row, tl.where(live, lse - t_logit, 0.0))
        if GRAD:
            for start in range(0, N_COLS, BLOCK):
                cols = start + offs
                ok = (cols >= 1) & (cols <= n_items)
                x = tl.load(ptr + cols, mask=ok, other=-float("inf")).to(tl.float32)
                p = tl.exp(x - lse) - tl.where(cols == target, 1.0, 0.0)
                p = tl.where(live & ok, p, 0.0)
                tl.store(ptr + cols, p.to(logits_ptr.dtype.element_ty), mask=cols < N_COLS)


def ce_rows(logits: torch.Tensor, targets: torch.Tensor, n_items: int, grad: bool) -> torch.Tensor:
    """Per-row CE losses (fp32 ``[rows]``) of a contiguous ``[rows, cols]``
    logits chunk; with ``grad`` the chunk is overwritten by its gradient."""
    rows, cols = logits.shape
    loss = torch.empty(rows, dtype=torch.float32, device=logits.device)
    if rows:
        block = min(2048, triton.next_power_of_2(cols))
        _ce_rows_kernel[(rows,)](
            logits,
            logits.stride(0),
            targets,
            loss,
            n_items,
            N_COLS=cols,
            GRAD=grad,
            BLOCK=block,
            num_warps=8 if block >= 2048 else 4,
        )
    return loss
