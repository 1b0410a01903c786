"""xLSTM for sequential recommendation, built on the ``xlstm`` package.

A stack of mLSTM blocks (``xlstm.xlstm_large``: pre-RMSNorm mLSTM layer + gated
feed-forward) with optional sLSTM blocks (``xlstm.blocks.slstm``) at the
positions in ``slstm_at``, over tied item embeddings. Position ``t`` predicts
item ``t + 1``.

Kernels: the mLSTM layers run ``mlstm_kernels`` backends chosen from the device
of the input — on CUDA the Triton TFLA chunkwise kernel (``triton_xl_chunk``,
with Triton sequence/step kernels for streaming), on CPU the native PyTorch
kernels — and a log line says which. ``kernel`` forces one.

Padding: recurrent blocks must never see padding before the real items (gate
biases would move the state), so left-padded batches are rolled to right
padding, zero-padded on the right to a multiple of ``chunk_size`` (the kernels
work on whole chunks; the Triton kernels run windows shorter than 128 as one
power-of-two chunk, see :func:`kernel_length`), run, and rolled back. The model is causal, so
trailing padding never changes a real position's output.

Streaming: :meth:`XLSTM.init_state` runs the history once and keeps every
block's recurrent state (mLSTM ``c, n, m``; sLSTM cell + conv state) in fp32;
:meth:`XLSTM.step` advances it by one item in O(1).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from seqrec_core import hookimpl
from seqrec_core.errors import RecipeError
from seqrec_core.model import SequentialModel

log = logging.getLogger("seqrec.xlstm")

KERNELS = {
    "triton": {
        "chunkwise_kernel": "chunkwise--triton_xl_chunk",
        "sequence_kernel": "native_sequence__triton",
        "step_kernel": "triton",
    },
    "native": {
        "chunkwise_kernel": "chunkwise--native_autograd",
        "sequence_kernel": "native_sequence__native",
        "step_kernel": "native",
    },
}


TritonArg = Literal[
    "chunk_size_inter",
    "chunk_size_intra",
    "siz_b_L_parallel",
    "siz_b_L_loop",
    "siz_b_DH_parallel",
    "siz_b_DH_loop",
    "num_warps_intra",
    "num_warps_inter",
    "num_stages_intra",
    "num_stages_inter",
]


#: TFLA launch settings that train on an H200 (Triton 3.6) at q/k, v head sizes
#: 16/32, 32/64 and 64/128 (dim 64/128/256, 2 heads); with mlstm_kernels' own
#: settings the dK backward kernel hits an illegal memory access at 32/64 and
#: Triton's compiler aborts at 64/128 (benchmarks/xlstm_kernel_check.py,
#: README "xLSTM kernels"). Also faster at 16/32: 1.94 vs 2.85 ms per step.
SAFE_TRITON_ARGS = {"num_warps_intra": 2}


class XLSTMOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_len: int = Field(200, ge=1, description="most recent items the model reads")
    dim: int = Field(64, ge=8, description="embedding / hidden size")
    blocks: int = Field(2, ge=1, description="xLSTM blocks")
    heads: int = Field(2, ge=1, description="heads per mLSTM/sLSTM layer (must divide dim)")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="embedding and block-output dropout")
    chunk_size: int = Field(
        16,
        ge=1,
        description="chunk length of the chunkwise mLSTM kernels (exact for any length; 16 "
        "trained fastest on an H200 and passes benchmarks/xlstm_kernel_check.py at dim 64-256)",
    )
    proj_factor: float = Field(2.0, gt=0.0, description="feed-forward width = proj_factor * dim")
    qk_dim_factor: float = Field(0.5, gt=0.0, description="query/key size = qk_dim_factor * dim")
    slstm_at: list[int] = Field(default_factory=list, description="block indices that are sLSTM")
    kernel: Literal["auto", "triton", "native"] = Field(
        "auto", description="mLSTM kernels: auto = Triton TFLA on CUDA, native on CPU"
    )
    slstm_backend: Literal["auto", "cuda", "vanilla"] = Field(
        "auto", description="sLSTM backend: auto = CUDA kernel if a GPU is present, else vanilla"
    )
    triton_args: dict[TritonArg, int] = Field(
        default_factory=lambda: dict(SAFE_TRITON_ARGS),
        description="launch settings passed to the Triton TFLA chunkwise kernel "
        "(benchmarks/xlstm_kernel_check.py finds safe ones); the default "
        "{num_warps_intra: 2} trains at every RQ2 head size on an H200, where "
        "mlstm_kernels' own settings ({}) crash at dim >= 128; ignored by the native kernels",
    )

    def model_post_init(self, _ctx) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        bad = [i for i in self.slstm_at if not 0 <= i < self.blocks]
        if bad:
            raise ValueError(f"slstm_at {bad} outside 0..{self.blocks - 1} (blocks={self.blocks})")
        if self.kernel == "triton" and not triton_chunk_ok(self.chunk_size):
            raise ValueError(TRITON_CHUNKS.format(chunk=self.chunk_size))


#: The Triton TFLA kernels' chunk sizes (block sizes are powers of two of at least
#: 16; chunks of 64 and more are split into blocks of 64).
TRITON_CHUNKS = (
    "chunk_size {chunk} cannot run on the Triton TFLA kernels: use 16, 32 or a multiple of 64"
)


def triton_chunk_ok(chunk: int) -> bool:
    return chunk in (16, 32) or chunk % 64 == 0


@dataclass
class XLSTMState:
    """Streaming state of one user: per block its recurrent state, and the
    number of items seen."""

    blocks: list
    length: int


def _pass_kernel_args(train, inference, opts: XLSTMOptions) -> None:
    """Bind ``opts.triton_args`` into the chunkwise kernel calls of both backends
    (mlstm_kernels builds its call chains in ``mLSTMBackend.__init__``)."""
    from functools import partial

    args = dict(opts.triton_args)
    try:
        train._train_fn = partial(train._train_fn, **args)
        inference._inference_fn = partial(
            inference._inference_fn,
            mlstm_chunkwise_kernel=partial(inference.chunkwise_kernel_fn, **args),
        )
    except AttributeError as exc:  # a mlstm_kernels release that builds its calls otherwise
        raise RuntimeError(
            f"model.triton_args: this mlstm_kernels version has no {exc.name!r} to bind "
            "kernel arguments to; remove model.triton_args"
        ) from None


def _mlstm_block(opts: XLSTMOptions):
    from xlstm.xlstm_large.model import mLSTMBlock, xLSTMLargeConfig

    cfg = xLSTMLargeConfig(
        embedding_dim=opts.dim,
        num_heads=opts.heads,
        num_blocks=opts.blocks,
        vocab_size=1,
        qk_dim_factor=opts.qk_dim_factor,
        ffn_proj_factor=opts.proj_factor,
        ffn_round_up_to_multiple_of=8,
        chunk_size=opts.chunk_size,
        # Train mode with return_last_states=False fails on the native CPU path.
        return_last_states=True,
        mode="train",
        **KERNELS["native"],
    )
    return mLSTMBlock(cfg)


def _slstm_block(opts: XLSTMOptions, idx: int):
    from xlstm.blocks.slstm.block import sLSTMBlock, sLSTMBlockConfig
    from xlstm.blocks.slstm.layer import sLSTMLayerConfig
    from xlstm.components.feedforward import FeedForwardConfig

    backend = opts.slstm_backend
    if backend == "auto":
        backend = "cuda" if torch.cuda.is_available() else "vanilla"

    def build(kind: str):
        cfg = sLSTMBlockConfig(
            slstm=sLSTMLayerConfig(
                backend=kind,
                num_heads=opts.heads,
                conv1d_kernel_size=4,
                bias_init="powerlaw_blockdependent",
                embedding_dim=opts.dim,
            ),
            feedforward=FeedForwardConfig(proj_factor=opts.proj_factor, act_fn="gelu"),
            _num_blocks=opts.blocks,
            _block_idx=idx,
        )
        cfg.feedforward.embedding_dim = opts.dim
        cfg.feedforward.__post_init__()
        return sLSTMBlock(cfg)

    if backend == "cuda":
        try:
            return build("cuda")
        except Exception as exc:  # the CUDA extension is compiled at first use
            warnings.warn(
                f"sLSTM CUDA kernel unavailable ({type(exc).__name__}: {exc}); "
                "falling back to the vanilla PyTorch backend",
                stacklevel=2,
            )
    return build("vanilla")


class XLSTM(SequentialModel):
    name = "xlstm"
    Options = XLSTMOptions
    objective = "causal"
    # Kernel choice, launch settings and chunk length change how the mLSTM is
    # computed (chunkwise is exact for any chunk length), not the model.
    runtime_options = frozenset({"kernel", "triton_args", "slstm_backend", "chunk_size"})

    def __init__(self, options: XLSTMOptions, n_items: int):
        super().__init__(options, n_items)
        from xlstm.xlstm_large.components import RMSNorm

        d = options.dim
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        nn.init.normal_(self.item_emb.weight, std=d**-0.5)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        self.drop = nn.Dropout(options.dropout)
        self.is_slstm = [i in options.slstm_at for i in range(options.blocks)]
        self.blocks = nn.ModuleList(
            _slstm_block(options, i) if s else _mlstm_block(options)
            for i, s in enumerate(self.is_slstm)
        )
        self.out_norm = RMSNorm(num_features=d, eps=1e-6, use_weight=True, use_bias=False)
        self._kernel_device: str | None = None

    # ------------------------------------------------------------ kernels
    def _use_kernels(self, device: torch.device) -> None:
        """Give every mLSTM layer the backend for ``device`` (backends hold no
        weights, so swapping them leaves the state dict untouched)."""
        kind = self.options.kernel
        if kind == "auto":
            kind = "triton" if device.type == "cuda" else "native"
        if self._kernel_device == kind:
            return
        if kind == "triton" and not triton_chunk_ok(self.options.chunk_size):  # kernel: auto
            raise RecipeError("model." + TRITON_CHUNKS.format(chunk=self.options.chunk_size))
        from mlstm_kernels.torch.backend_module import mLSTMBackend, mLSTMBackendConfig

        for block, slstm in zip(self.blocks, self.is_slstm, strict=True):
            if slstm:
                continue
            layer = block.mlstm_layer
            cfg = layer.mlstm_backend.config
            common = dict(
                chunk_size=self.options.chunk_size,
                return_last_states=True,
                autocast_kernel_dtype="bfloat16",
                eps=cfg.eps,
                inference_state_dtype="float32",
                **KERNELS[kind],
            )
            layer.train_backend = mLSTMBackend(mLSTMBackendConfig(mode="train", **common))
            layer.inference_backend = mLSTMBackend(mLSTMBackendConfig(mode="inference", **common))
            if kind == "triton" and self.options.triton_args:
                _pass_kernel_args(layer.train_backend, layer.inference_backend, self.options)
            layer.mlstm_backend = layer.train_backend
        self._kernel_device = kind
        if not torch.compiler.is_compiling():  # a log call inside torch.compile breaks the graph
            log.info(
                "xLSTM: %s mLSTM kernels (%s) on %s",
                kind,
                KERNELS[kind]["chunkwise_kernel"],
                device,
            )

    def _set_mode(self, mode: str) -> None:
        """``train``: chunkwise kernels over whole sequences; ``inference``:
        recurrent fp32 state, step kernel for one item (streaming)."""
        for block, slstm in zip(self.blocks, self.is_slstm, strict=True):
            if not slstm:
                layer = block.mlstm_layer
                layer.mlstm_backend = getattr(layer, f"{mode}_backend")

    @property
    def kernel(self) -> str | None:
        """The mLSTM kernel family in use (``triton`` / ``native``), once chosen."""
        return self._kernel_device

    # ------------------------------------------------------------ forward
    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            # Inference in fp32 even under bf16 autocast: with bf16 gates and kernel
            # inputs, H200 scores drift ~1e-2 (relative) from fp32, and streaming
            # (fp32) and recompute would disagree by that much. See
            # benchmarks/xlstm_numerics.py. Training keeps bf16.
            with torch.autocast(seqs.device.type, enabled=False):
                return self._encode(seqs)
        return self._encode(seqs)

    # The TFLA kernels put batch × heads × chunks in one CUDA grid dimension, whose
    # limit is 65,535 blocks: larger batches (full-ranking evaluation of many users)
    # are encoded in parts. Half the limit, for kernels that tile more finely.
    GRID_ROWS = 32_767

    def _encode(self, seqs: torch.Tensor) -> torch.Tensor:
        seqs = seqs[:, -self.options.max_len :]
        b, n = seqs.shape
        self._use_kernels(seqs.device)
        total = kernel_length(n, self.options.chunk_size, self._kernel_device)
        per_row = self.options.heads * -(-total // self.options.chunk_size)
        if b * per_row > self.GRID_ROWS:
            part = max(1, self.GRID_ROWS // per_row)
            return torch.cat([self._encode(p) for p in seqs.split(part)])
        self._set_mode("train")
        # Left padding → right padding (roll each row), then pad to a length the
        # kernels take.
        pads = (seqs == 0).sum(1, keepdim=True)
        ar = torch.arange(n, device=seqs.device)
        to_right = (ar[None, :] + pads) % n
        right = seqs.gather(1, to_right)
        if total != n:
            right = torch.nn.functional.pad(right, (0, total - n))
        x = self.drop(self.item_emb(right))
        for block, slstm in zip(self.blocks, self.is_slstm, strict=True):
            x = block(x) if slstm else block(x)[0]
            x = self.drop(x)
        x = self.out_norm(x)[:, :n]
        back = (ar[None, :] - pads) % n
        return x.gather(1, back[..., None].expand(-1, -1, x.shape[-1]))

    def predict(self, seqs: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return super().predict(seqs)
        with torch.autocast(seqs.device.type, enabled=False):  # see encode()
            return super().predict(seqs)

    # ------------------------------------------------------------ streaming
    @torch.no_grad()
    def init_state(self, history: torch.Tensor) -> XLSTMState:
        with torch.autocast(self.item_emb.weight.device.type, enabled=False):
            return self._init_state(history)

    @torch.no_grad()
    def step(self, state: XLSTMState, item: int) -> tuple[XLSTMState, torch.Tensor]:
        """One new item: O(1) in the history length. Runs in fp32 whatever the
        autocast context, so it matches an fp32 recompute to ~1e-6."""
        with torch.autocast(self.item_emb.weight.device.type, enabled=False):
            return self._step(state, item)

    def _init_state(self, history: torch.Tensor) -> XLSTMState:
        history = torch.as_tensor(history, dtype=torch.long, device=self.item_emb.weight.device)
        history = history[history != 0][-self.options.max_len :]
        self._use_kernels(history.device)
        self._set_mode("inference")
        x = self.item_emb(history[None, :])
        states = []
        for block, slstm in zip(self.blocks, self.is_slstm, strict=True):
            if slstm:
                u = block.xlstm_norm(x)
                y, st = block.xlstm(u, return_last_state=True)
                # The package returns the last kernel_size - 1 inputs as conv state,
                # but its step() expects the last kernel_size: rebuild it.
                ks = block.xlstm.config.conv1d_kernel_size
                if ks > 0:
                    u = torch.nn.functional.pad(u, (0, 0, max(0, ks - u.shape[1]), 0))
                    st["conv_state"] = (u[:, -ks:].clone(),)
                x = x + y
                x = x + block.ffn(block.ffn_norm(x))
            else:
                x, st = block(x, None)
                st = tuple(t.float() for t in st)
            states.append(st)
        self._set_mode("train")
        return XLSTMState(states, int(history.numel()))

    def _step(self, state: XLSTMState, item: int) -> tuple[XLSTMState, torch.Tensor]:
        self._set_mode("inference")
        x = self.item_emb(torch.tensor([[int(item)]], device=self.item_emb.weight.device))
        new = []
        for block, slstm, st in zip(self.blocks, self.is_slstm, state.blocks, strict=True):
            if slstm:
                x, st = block.step(x, **st)
            else:
                # Copies: the mLSTM block updates a given state in place.
                x, st = block(x, tuple(t.clone() for t in st))
                st = tuple(t.float() for t in st)
            new.append(st)
        self._set_mode("train")
        scores = self.score(self.out_norm(x)[0, -1]).float()
        scores[0] = -torch.inf
        return XLSTMState(new, state.length + 1), scores


def kernel_length(n: int, chunk: int, kernel: str | None) -> int:
    """Length a window of ``n`` items is right-padded to for the mLSTM kernels:
    whole chunks; on the Triton TFLA kernels, which run a window shorter than 128
    as one chunk of its own length, a power of two of at least 16 below 128."""
    total = -(-n // chunk) * chunk
    if kernel == "triton" and total < 128:
        total = max(16, 1 << (total - 1).bit_length())
    return total


@hookimpl
def register_models(register):
    register(XLSTM)
