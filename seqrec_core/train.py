"""The training loop: windows → loss → optimizer, validation, early stopping,
checkpoints, resume. Callbacks are reached only through the event bus hooks.

One :class:`Trainer` trains one model with one seed. Training windows are cut
on the fly from the CSR sequences, on the training device: the whole training
set lives there as one flat tensor, so data loading is an index operation.

Under ``torchrun`` (see :mod:`seqrec_core.distributed` and
``docs/distributed.md``) the same loop runs on every rank: the training forward
(:class:`LossStep`) is wrapped in ``DistributedDataParallel``, each optimizer
step's global batch of ``batch_size × world_size × grad_accum`` windows is cut
into disjoint per-rank micro-batches, evaluation is sharded and gathered, and
only rank 0 writes checkpoints, events and callbacks' output.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from seqrec_core import checkpoint as ckpt_io
from seqrec_core import distributed
from seqrec_core.data.core import SequenceData
from seqrec_core.errors import SeqrecError
from seqrec_core.evaluate import evaluate
from seqrec_core.events import EVENTS_FILE, EventBus
from seqrec_core.gpu import concurrent_runs
from seqrec_core.losses import compute_loss
from seqrec_core.plugins import Registry
from seqrec_core.recipe import Recipe


@dataclass
class RunContext:
    """What callbacks see as ``run``."""

    name: str
    run_dir: Path
    checkpoint_dir: Path
    recipe: Recipe
    model: Any
    data: SequenceData
    seed: int
    device: torch.device
    optimizer: Any = None


@dataclass
class EarlyStopping:
    """Stop when ``monitor`` has not improved (higher is better) for ``patience`` evaluations."""

    monitor: str
    patience: int
    best_value: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, epoch: int, value: float) -> bool:
        """Record ``value`` for ``epoch``; return whether it is a new best."""
        if value > self.best_value:
            self.best_value, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience


# ------------------------------------------------------------------ windows


def window_bounds(data: SequenceData, width: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """[start, end) item ranges of the training windows (at most ``width`` items).

    ``last``: one window per user, the most recent ``width`` training items.
    ``sliding``: also earlier windows, every ``width - 1`` items, so that every
    training target of a long history is predicted once.
    """
    users = np.arange(data.n_users)
    start, end = data.history_bounds("train", users)
    keep = end - start >= 2  # a window needs an input and a target
    start, end = start[keep], end[keep]
    if mode == "last":
        return start, end
    step = max(1, width - 1)
    n_win = np.maximum(1, np.ceil((end - start - 1) / step).astype(np.int64))
    rep_start = np.repeat(start, n_win)
    offset = np.arange(n_win.sum()) - np.repeat(np.cumsum(n_win) - n_win, n_win)
    rep_end = np.repeat(end, n_win) - offset * step
    return rep_start, rep_end


def gather_windows(
    items: torch.Tensor, start: torch.Tensor, end: torch.Tensor, width: int
) -> torch.Tensor:
    """Left-padded ``[B, width]`` matrix of ``items[max(start, end-width):end]`` rows."""
    pos = end[:, None] - width + torch.arange(width, device=items.device)[None, :]
    valid = pos >= start[:, None]
    return torch.where(
        valid, items[pos.clamp(min=0)], torch.zeros((), dtype=items.dtype, device=items.device)
    )


# ------------------------------------------------------------------ one optimizer step


@dataclass
class MicroBatch:
    """One forward/backward's worth of windows: model inputs, the supervised
    positions ``sel`` (bool, like ``inputs``) and their target ids — or, dense
    (``sel=None``), targets shaped like ``inputs`` with 0 = no target."""

    inputs: torch.Tensor
    sel: torch.Tensor | None
    targets: torch.Tensor

    @property
    def count(self) -> torch.Tensor:
        """Supervised positions, as a device tensor (no host sync)."""
        return (self.targets != 0).sum() if self.sel is None else self.sel.sum()

    @property
    def tokens(self) -> int:
        return int(self.count)


def make_micro_batch(
    model: Any,
    windows: torch.Tensor,
    generator: torch.Generator | None = None,
    dense: bool = False,
) -> MicroBatch:
    """Inputs and targets of ``[B, width]`` windows for the model's objective;
    ``dense``: all positions, no boolean selection (no host sync; CE only)."""
    if dense:
        inputs, targets = dense_batch(model, windows, generator)
        return MicroBatch(inputs, None, targets)
    if model.objective == "masked":
        inputs, labels = model.mask_batch(windows, generator)
        sel = labels != 0
    else:
        inputs, labels = windows[:, :-1], windows[:, 1:]
        sel = (inputs != 0) & (labels != 0)
    return MicroBatch(inputs, sel, labels[sel])


def window_tokens(starts: torch.Tensor, ends: torch.Tensor, width: int) -> torch.Tensor:
    """Supervised positions of each causal window: its items (at most ``width``) minus one."""
    return (ends - starts).clamp(max=width) - 1


def bucket_widths(width: int, buckets: int, multiple: int = 8) -> list[int]:
    """``buckets`` window widths up to ``width``, evenly spaced and rounded up to
    ``multiple`` (the last is ``width``)."""
    widths = {
        min(width, -(-math.ceil(width * k / buckets) // multiple) * multiple)
        for k in range(1, buckets + 1)
    }
    return sorted(widths | {width})


def length_plan(
    order: torch.Tensor,
    lengths: torch.Tensor,
    widths: list[int],
    batch_size: int,
    generator: torch.Generator,
) -> list[tuple[int, torch.Tensor]]:
    """One epoch of length-bucketed batches: ``(width, window indices)``.

    Each window goes to the narrowest of ``widths`` that holds its ``lengths``
    entry; a bucket's windows, in ``order``'s (random) order, are cut into
    batches of ``batch_size``; the batches of all buckets are then shuffled
    together with ``generator``. Every window is used once. A batch is cut at
    its bucket's width, so padding up to ``widths[-1]`` is not computed.
    """
    bucket = torch.bucketize(lengths[order].cpu(), torch.tensor(widths))
    plan: list[tuple[int, torch.Tensor]] = []
    for k, w in enumerate(widths):
        members = order[(bucket == k).to(order.device)]
        plan += [(w, part) for part in members.split(batch_size)]
    return [plan[i] for i in torch.randperm(len(plan), generator=generator).tolist()]


def global_batch(
    order: torch.Tensor, step: int, batch_size: int, world: distributed.World, accum: int
) -> torch.Tensor:
    """Window indices of optimizer step ``step`` over all ranks:
    ``order[step*G:(step+1)*G]`` with ``G = batch_size × world.size × accum``.
    A last, partial batch with fewer windows than ``world.size × accum`` parts
    is filled up with the first windows of ``order``."""
    parts = world.size * accum
    glob = batch_size * parts
    chunk = order[step * glob : (step + 1) * glob]
    if len(chunk) < parts:
        fill = torch.arange(parts - len(chunk), device=order.device) % len(order)
        chunk = torch.cat([chunk, order[fill]])
    return chunk


def step_slices(
    order: torch.Tensor, step: int, batch_size: int, world: distributed.World, accum: int
) -> list[torch.Tensor]:
    """This rank's ``accum`` micro-batches (window indices) of optimizer step ``step``.

    The :func:`global_batch` is cut into ``world.size × accum`` contiguous
    parts; rank ``r`` takes parts ``r*accum … r*accum+accum-1``. Every window of
    ``order`` is used once per epoch, on one rank. The last, partial global
    batch is divided evenly (part sizes differ by at most one); only when it has
    fewer windows than parts are windows repeated to fill them.
    """
    parts = world.size * accum
    chunk = global_batch(order, step, batch_size, world, accum)
    split = torch.tensor_split(chunk, parts) if parts > 1 else (chunk,)
    return list(split[world.rank * accum : (world.rank + 1) * accum])


class LossStep(torch.nn.Module):
    """The training forward as a module — ``encode`` → loss over the supervised
    positions — so that ``DistributedDataParallel`` can wrap it: DDP hooks the
    parameters of its only child, the model, whose ``forward`` is never used."""

    def __init__(self, model: Any, loss_cfg: Any, encode: Any, generator: Any):
        super().__init__()
        self.model = model
        self.loss_cfg = loss_cfg
        self.generator = generator
        self._encode = encode

    def forward(
        self, inputs: torch.Tensor, sel: torch.Tensor | None, targets: torch.Tensor
    ) -> torch.Tensor:
        """Loss of the supervised positions: ``hidden[sel]`` against
        ``targets``, or with ``sel=None`` every position against ``targets``
        shaped like ``inputs`` (0 = no target; full-softmax CE only). The
        latter has static shapes, which CUDA graphs need."""
        hidden = self._encode(inputs)
        if sel is None:
            hidden, targets = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
        else:
            hidden = hidden[sel]
        return compute_loss(
            self.loss_cfg, hidden, targets, self.model.output_embeddings(), self.generator
        )


def dense_batch(
    model: Any, windows: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Model inputs and same-shaped targets (0 = none) of ``[B, width]`` windows:
    :func:`make_micro_batch` without the boolean selection (no host sync)."""
    if model.objective == "masked":
        return model.mask_batch(windows, generator)
    inputs, labels = windows[:, :-1], windows[:, 1:]
    return inputs, torch.where(inputs != 0, labels, 0)


class SharedGrads:
    """The ``.grad`` tensors of a model, allocated once and then only zeroed in
    place, so that several CUDA graphs (one per batch width) and eager steps all
    accumulate into the same memory, which the (eager) optimizer reads.

    Before the first backward nothing exists: :meth:`zero` sets every ``.grad`` to
    ``None`` and that backward allocates them outside any graph's memory pool.
    After it, :meth:`keep` records the tensors the backward produced; from then
    on :meth:`zero` is one in-place ``_foreach_zero_`` (captured into a graph as a
    memset) and every backward adds in place (autograd accumulates into an
    existing ``.grad`` instead of replacing it). Parameters that got no gradient
    keep ``None``, as in eager training."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.grads: list[torch.Tensor] | None = None
        self.users: list[GraphStep] = []  # the graph steps accumulating here

    def reset(self, reason: str) -> None:
        """Give up graphs altogether: every user's graph is dropped (its replays
        would write to tensors the optimizer may no longer read) and the next
        eager backward allocates the gradients afresh."""
        for user in self.users:
            user.graph, user.failed = None, user.failed or reason
        self.grads = None
        self.model.zero_grad(set_to_none=True)

    def zero(self) -> None:
        if self.grads is None:
            self.model.zero_grad(set_to_none=True)
        elif self.grads:
            torch._foreach_zero_(self.grads)

    def keep(self) -> None:
        if self.grads is None:
            self.grads = [p.grad for p in self.model.parameters() if p.grad is not None]

    def check(self) -> None:
        """Raise if something replaced a kept ``.grad`` (a graph would then write
        where the optimizer no longer reads)."""
        if self.grads is None:
            return
        now = [p.grad for p in self.model.parameters() if p.grad is not None]
        if len(now) != len(self.grads) or any(
            a is not b for a, b in zip(now, self.grads, strict=True)
        ):
            raise RuntimeError("a parameter's .grad tensor was replaced after CUDA graph capture")


class GraphStep:
    """Forward and backward of a training step replayed from a CUDA graph.

    The step's inputs live in static buffers of ``[batch, width]`` (a smaller
    last batch is padded with empty windows, which have no targets and add
    nothing to loss or gradients). The first :attr:`WARMUP` calls run eagerly
    (lazy initialisation, kernel autotuning), the next one captures the graph,
    and from then on a call is one graph launch instead of hundreds of kernel
    launches — the same kernels in the same order, so the numbers are those of
    the eager step. Gradients go to ``grads`` (:class:`SharedGrads`), which
    several GraphSteps of different widths (length buckets) share; they are
    left there for the (eager) optimizer step, and nothing may set them to
    ``None``. Dropout draws from the default CUDA generator, which graphs
    advance on every replay. If capture fails (a model doing host work in
    ``encode``), :attr:`failed` says why and calls keep running eagerly.

    With ``weighted`` (length buckets) each call passes a ``weight`` for the
    step's loss (a device scalar, copied into a static buffer the graph reads):
    the gradients are those of ``weight ×`` the mean loss; the returned loss is
    the unweighted mean.
    """

    WARMUP = 3

    def __init__(
        self,
        step: torch.nn.Module,
        batch: int,
        width: int,
        device,
        amp: bool,
        grads: SharedGrads | None = None,
        weighted: bool = False,
    ):
        self.step = step
        self.amp = amp
        self.weight = torch.ones((), device=device) if weighted else None
        self.grads = grads or SharedGrads(step.model)
        self.grads.users.append(self)
        self.inputs = torch.zeros(batch, width, dtype=torch.long, device=device)
        self.targets = torch.zeros_like(self.inputs)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.loss: torch.Tensor | None = None
        self.calls = 0
        self.failed: str | None = None

    def _forward_backward(self) -> torch.Tensor:
        """Forward and backward on the static buffers; returns the mean loss."""
        self.grads.zero()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            loss = self.step(self.inputs, None, self.targets)
        (loss if self.weight is None else loss * self.weight).backward()
        return loss.detach()

    def __call__(
        self, inputs: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The step's mean loss (a device tensor; no host sync)."""
        if (weight is None) != (self.weight is None):
            raise ValueError("a weighted GraphStep takes a weight with every call, others none")
        if weight is not None:
            self.weight.copy_(weight)
        n = inputs.shape[0]
        self.inputs[:n].copy_(inputs)
        self.targets[:n].copy_(targets)
        if n < len(self.inputs):
            self.inputs[n:].zero_()
            self.targets[n:].zero_()
        self.calls += 1
        if self.graph is None and self.failed is None and self.calls > self.WARMUP:
            self._capture()
        if self.graph is not None:
            self.graph.replay()
            return self.loss
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the main stream, as capture wants
            loss = self._forward_backward()
        torch.cuda.current_stream().wait_stream(side)
        self.grads.keep()
        return loss

    def _capture(self) -> None:
        self.grads.keep()  # the warm-up steps allocated them, outside the graph's pool
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.loss = self._forward_backward()
            self.grads.check()
        except Exception as exc:  # noqa: BLE001 - any capture failure means: stay eager
            self.failed = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            warnings.warn(
                f"CUDA graph capture failed, training eagerly ({self.failed}); "
                "set train.cuda_graphs: false to skip the attempt",
                stacklevel=2,
            )
            torch.cuda.synchronize()
            # The failed capture may have left .grad tensors allocated in its pool:
            # drop every graph sharing these gradients and start them afresh.
            self.grads.reset(self.failed)
            return
        self.graph = graph


def backward_step(
    step: torch.nn.Module,
    micro: list[MicroBatch],
    world: distributed.World,
    amp: bool = False,
    total_tokens: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward of one optimizer step; gradients are left in ``.grad``.

    The gradients are those of the mean loss over every supervised position of
    the step — this rank's micro-batches and, with ``world.size > 1``, every
    other rank's (``step`` is then the DDP module, which averages gradients over
    ranks; only the last micro-batch synchronises). Each micro-batch's mean
    loss is weighted by its share of the step's positions, so a step on several
    ranks has the gradients of one process on the whole global batch.

    ``total_tokens``: the step's position count over all ranks, if the caller
    knows it (saves a collective); otherwise it is summed over ranks here.

    ``weight`` (one process, one micro-batch: length buckets): the gradients are
    those of ``weight ×`` the mean loss; the returned loss is the unweighted mean.

    Returns the step's mean loss and position count over all ranks, as device
    tensors: nothing here waits for the GPU. The caller checks the loss (every
    ``train.log_every`` steps); with several ranks every rank holds the same
    all-reduced value, so every rank takes the same decision.
    """
    device = micro[0].inputs.device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)
    counts = [m.count for m in micro]
    if not world.enabled and len(micro) == 1:
        # One process, no accumulation: the plain step.
        with autocast:
            loss = step(micro[0].inputs, micro[0].sel, micro[0].targets)
        (loss if weight is None else loss * weight).backward()
        return loss.detach(), counts[0]
    if weight is not None:
        raise ValueError("backward_step: weight is for one process and one micro-batch")
    comm = distributed.comm_device()
    if total_tokens is None:
        total = torch.stack(counts).sum().double().reshape(1).to(comm)
        distributed.all_reduce_sum(total)
    else:
        total = total_tokens.double().reshape(1).to(comm)
    # DDP divides the summed gradients by world.size; undo that, weight by positions.
    scale = (world.size / total[0]).float().to(device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for i, (m, n) in enumerate(zip(micro, counts, strict=True)):
        last = i == len(micro) - 1
        sync = step.no_sync() if isinstance(step, DistributedDataParallel) and not last else None
        with sync or nullcontext():
            with autocast:
                loss = step(m.inputs, m.sel, m.targets)
            (loss * (scale * n)).backward()
        loss_sum += loss.detach().double() * n
    loss_all = distributed.all_reduce_sum(loss_sum.to(comm).reshape(1))
    return (loss_all / total.clamp(min=1.0))[0].to(device), total[0].to(device)


# ------------------------------------------------------------------ schedulers


class LRSchedule:
    """The recipe's scheduler with linear warm-up, stepped per batch (and per
    validation for ``plateau``)."""

    def __init__(
        self, cfg: Any, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int
    ):
        self.cfg = cfg
        self.warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
        total = max(1, steps_per_epoch * epochs)
        self.step_count = 0
        sched = torch.optim.lr_scheduler
        self.plateau = None
        if cfg.name == "onecycle":
            pct = self.warmup / total if self.warmup else 0.3
            self.per_step = sched.OneCycleLR(
                optimizer,
                max_lr=[g["lr"] for g in optimizer.param_groups],
                total_steps=total + 1,
                pct_start=min(max(pct, 1e-3), 0.99),
                cycle_momentum=False,
            )
            return
        base_lr = optimizer.param_groups[0]["lr"]
        min_ratio = cfg.min_lr / base_lr if base_lr else 0.0

        def factor(step: int) -> float:
            warm = min(1.0, (step + 1) / self.warmup) if self.warmup else 1.0
            if cfg.name == "step":
                return warm * cfg.gamma ** ((step // max(1, steps_per_epoch)) // cfg.step_size)
            if cfg.name == "cosine":
                progress = min(1.0, step / total)
                return warm * (
                    min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
                )
            return warm

        if cfg.name == "plateau":
            self.plateau = sched.ReduceLROnPlateau(
                optimizer,
                mode="max",
                factor=cfg.gamma,
                patience=cfg.plateau_patience,
                min_lr=cfg.min_lr,
            )
            # Warm-up only; after it the plateau scheduler owns the learning rate.
            self.per_step = sched.LambdaLR(
                optimizer, lambda s: min(1.0, (s + 1) / self.warmup) if self.warmup else 1.0
            )
        else:
            self.per_step = sched.LambdaLR(optimizer, factor)

    def step_batch(self) -> None:
        self.step_count += 1
        if self.plateau is None or self.step_count <= self.warmup:
            self.per_step.step()

    def step_validation(self, value: float) -> None:
        if self.plateau is not None and self.step_count >= self.warmup:
            self.plateau.step(value)

    def state_dict(self) -> dict:
        return {
            "step_count": self.step_count,
            "per_step": self.per_step.state_dict(),
            "plateau": self.plateau.state_dict() if self.plateau else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.step_count = state["step_count"]
        self.per_step.load_state_dict(state["per_step"])
        if self.plateau is not None and state.get("plateau"):
            self.plateau.load_state_dict(state["plateau"])


def build_optimizer(
    cfg: Any, model: torch.nn.Module, device: torch.device
) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    params = [p for p in model.parameters() if p.requires_grad]
    kwargs: dict[str, Any] = {
        "lr": cfg.lr,
        "betas": tuple(cfg.betas),
        "weight_decay": cfg.weight_decay,
    }
    if device.type == "cuda":
        kwargs["fused"] = True
    return cls(params, **kwargs)


# ------------------------------------------------------------------ trainer


@dataclass
class FitResult:
    run: str
    seed: int
    status: str
    best_epoch: int
    best_value: float
    valid: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    epochs_run: int = 0
    total_time: float = 0.0
    checkpoint: Path | None = None


class Trainer:
    """Trains one model with one seed. Under a process group (``torchrun``) every
    rank builds its own Trainer and runs :meth:`fit`; see the module docstring."""

    def __init__(
        self,
        recipe: Recipe,
        registry: Registry,
        data: SequenceData,
        seed: int,
        run_name: str,
        device: torch.device,
        callbacks: list[Any] | None = None,
        evaluate_test: bool = True,
    ):
        self.world = distributed.current()
        device = distributed.local_device(device)
        self.recipe = recipe
        self.registry = registry
        self.data = data
        self.seed = seed
        self.device = device
        self.cfg = recipe.train
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        model_cls = registry.get("models", recipe.model.name)
        self.model = model_cls(recipe.model_options, data.n_items)
        self.model.prepare(data)
        self.model.to(device)
        self.metrics = [registry.get("metrics", m) for m in recipe.eval.metrics]
        run_dir = Path(recipe.output.runs_dir) / run_name
        self.ctx = RunContext(
            name=run_name,
            run_dir=run_dir,
            checkpoint_dir=Path(recipe.output.checkpoints_dir) / run_name,
            recipe=recipe,
            model=self.model,
            data=data,
            seed=seed,
            device=device,
        )
        # Callbacks (console, TensorBoard, …) run on rank 0 only.
        self.callbacks = (callbacks or []) if self.world.is_main else []
        # False for model selection (seqrec tune): the fit never touches the test split.
        self.evaluate_test = evaluate_test
        self.stopper = EarlyStopping(self.cfg.monitor, self.cfg.patience)
        self._writer = ckpt_io.CheckpointWriter(background=False)  # fit() sets the recipe's
        self.history: list[dict[str, Any]] = []

    # -------------------------------------------------------------- helpers
    @property
    def best_path(self) -> Path:
        return self.ctx.checkpoint_dir / "best.safetensors"

    @property
    def last_path(self) -> Path:
        return self.ctx.checkpoint_dir / "last.safetensors"

    def _meta(self, kind: str, epoch: int, metrics: dict) -> dict[str, Any]:
        return {
            "kind": kind,
            "run": self.ctx.name,
            "model": {
                "name": self.recipe.model.name,
                "options": self.recipe.model_options.model_dump(mode="json"),
                "n_items": self.data.n_items,
                "objective": self.model.objective,
            },
            "dataset": ckpt_io.item_metadata(self.data),
            "recipe": self.recipe.to_dict(),
            "metrics": metrics,
            "epoch": epoch,
            "seed": self.seed,
        }

    def _weights(self) -> dict[str, torch.Tensor]:
        return {f"model.{k}": v for k, v in self.model.state_dict().items()}

    def evaluate(self, split: str, filter_seen: bool | None = None) -> dict[str, float]:
        """Metrics on ``split`` (``filter_seen``: the recipe's protocol unless
        given); under a process group every rank must call it (users are
        sharded and the ranks gathered; every rank gets the metrics). On a GPU
        shared with other runs (``seqrec sweep/tune --jobs``) the evaluation's
        cached memory is handed back afterwards, so its peak — the largest of a
        run — is not held through training while the others need it."""
        metrics = evaluate(
            self.model,
            self.data,
            split,  # type: ignore[arg-type]
            self.metrics,
            self.recipe.eval.ks,
            self.recipe.eval.filter_seen if filter_seen is None else filter_seen,
            self.recipe.eval.batch_size,
            self.device,
            distributed=self.world.enabled,
            **self.recipe.eval.speed(),
        )
        if self.device.type == "cuda" and concurrent_runs() > 1:
            torch.cuda.empty_cache()
        return metrics

    def final_metrics(self, split: str) -> dict[str, float]:
        """The recipe's protocol under the plain names and, with
        ``eval.both_protocols``, both protocols again as ``<metric>/U`` (all
        items ranked) and ``<metric>/F`` (history items filtered out)."""
        metrics = self.evaluate(split)
        if not self.recipe.eval.both_protocols:
            return metrics
        own = "F" if self.recipe.eval.filter_seen else "U"
        other = self.evaluate(split, not self.recipe.eval.filter_seen)
        tagged = {f"{k}/{own}": v for k, v in metrics.items()}
        tagged.update({f"{k}/{'U' if own == 'F' else 'F'}": v for k, v in other.items()})
        return {**metrics, **tagged}

    def _non_finite(self, value: float, epoch: int, batch: int, batches: int) -> SeqrecError:
        return SeqrecError(
            f"loss became {value} at epoch {epoch}, batch {batch + 1}/{batches}; "
            f"stopped. The last good checkpoint is kept in {self.ctx.checkpoint_dir}; "
            "lower train.lr or enable train.grad_clip"
        )

    def _monitor_value(self, metrics: dict[str, float]) -> float:
        if self.cfg.monitor not in metrics:
            raise SeqrecError(
                f"train.monitor '{self.cfg.monitor}' is not among the validation metrics "
                f"({', '.join(metrics)}); pick one of them"
            )
        return metrics[self.cfg.monitor]

    def _save_history(self) -> None:
        """Histories of all users, so the checkpoint can recommend for a user id."""
        path = self.ctx.checkpoint_dir / "histories.safetensors"
        users = self.data.user_map.raw
        meta = {"dataset": self.data.name, "item_map_digest": self.data.item_map.digest()}
        tensors = {
            "offsets": torch.from_numpy(self.data.offsets),
            "items": torch.from_numpy(self.data.items.astype(np.int32)),
        }
        if users.dtype.kind in "iu":
            tensors["user_ids"] = torch.from_numpy(users.astype(np.int64))
        else:
            meta["user_ids"] = users.tolist()
        ckpt_io.save_checkpoint(path, tensors, {"kind": "histories", **meta})

    def _save_last(
        self,
        epoch: int,
        optimizer,
        schedule,
        gen: torch.Generator,
        finished: bool,
        done: Callable[[], None] | None = None,
    ) -> None:
        tensors = self._weights()
        opt_tensors, opt_info = ckpt_io.optimizer_tensors(optimizer)
        tensors.update(opt_tensors)
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.gen"] = gen.get_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        meta = self._meta("last", epoch, self.history[-1]["metrics"] if self.history else {})
        meta["trainer"] = {
            "epoch": epoch,
            "finished": finished,
            "optimizer": opt_info,
            "schedule": schedule.state_dict(),
            "stopper": vars(self.stopper),
            "history": self.history,
            "world_size": self.world.size,
            "grad_accum": self.cfg.grad_accum,
        }
        self._writer.submit(self.last_path, tensors, meta, done=done)

    def _sync_epoch(self, error: BaseException | None, what: str) -> None:
        """End-of-epoch agreement: every rank learns whether rank 0's writes
        worked and takes rank 0's early-stopping state, so all stop together."""
        state = distributed.sync_status(error, what, dict(vars(self.stopper)))
        for key, value in state.items():
            setattr(self.stopper, key, value)

    # -------------------------------------------------------------- fit
    def fit(self, resume: bool = False) -> FitResult:
        t_start = time.perf_counter()
        main = self.world.is_main
        if main:
            self.ctx.run_dir.mkdir(parents=True, exist_ok=True)
            if not resume:  # a fresh run starts a fresh log; --resume appends
                (self.ctx.run_dir / EVENTS_FILE).unlink(missing_ok=True)
        bus = EventBus(
            self.ctx.run_dir / EVENTS_FILE if main else None, self.callbacks, run=self.ctx
        )
        status = "failed"
        result = FitResult(self.ctx.name, self.seed, status, 0, math.nan)
        self._writer = ckpt_io.CheckpointWriter(background=self.cfg.async_checkpoints)
        try:
            result = self._fit(bus, resume, t_start)
            status = result.status
            return result
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            if status in ("failed", "interrupted"):
                # A run that stops early still gets its queued checkpoint files (and
                # their checkpoint_saved events) before its fit_end.
                try:
                    self._writer.flush()
                except Exception as exc:  # the error that stopped the run matters more
                    warnings.warn(f"{exc} (while stopping)", stacklevel=1)
            self._writer.close()
            if status in ("failed", "interrupted"):
                bus.emit(
                    "fit_end",
                    status=status,
                    best_epoch=self.stopper.best_epoch,
                    best_value=self.stopper.best_value,
                    valid={},
                    test={},
                    total_time=time.perf_counter() - t_start,
                    params=self.model.num_parameters(),
                )
            bus.close()

    def _fit(self, bus: EventBus, resume: bool, t_start: float) -> FitResult:
        cfg, model, data, world = self.cfg, self.model, self.data, self.world
        main = world.is_main
        trainable = model.trainable
        epochs = cfg.epochs if trainable else 0
        masked = model.objective == "masked"
        max_len = model.max_len or int(data.train_lengths.max(initial=2))
        width = max_len if masked else max_len + 1
        starts_np, ends_np = window_bounds(data, width, cfg.windows)
        n_windows = len(starts_np)
        accum = cfg.grad_accum
        per_step = cfg.batch_size * world.size * accum  # windows per optimizer step
        batches = math.ceil(n_windows / per_step) if trainable else 0  # optimizer steps
        if trainable and n_windows == 0:
            raise SeqrecError("no training windows: every user has fewer than 2 training items")
        items = torch.from_numpy(data.items).to(self.device)
        starts = torch.from_numpy(starts_np).to(self.device)
        ends = torch.from_numpy(ends_np).to(self.device)
        widths: list[int] = []
        if trainable and cfg.length_buckets > 1 and not world.enabled and accum == 1:
            # Length-bucketed batches: the number of batches per bucket is the same
            # every epoch (bucket sizes depend on the window lengths only).
            lengths = torch.from_numpy(np.minimum(ends_np - starts_np, width))
            widths = bucket_widths(width, cfg.length_buckets)
            sizes = torch.bincount(torch.bucketize(lengths, torch.tensor(widths)))
            batches = sum(math.ceil(int(n) / cfg.batch_size) for n in sizes)
            lengths = lengths.to(self.device)
        # Supervised positions per window, known in advance for the causal objective.
        tokens_of = None if masked else window_tokens(starts, ends, width)
        # Bucketed batches hold very different numbers of positions (a batch of short
        # windows a fraction of one of long windows). Each step's mean loss is weighted
        # by its positions over the average step's, so every position weighs the same,
        # as in random batches; unweighted, short windows' positions counted several
        # times more (measured: 0.132 vs 0.148 NDCG@10 on ML-1M). Masked objectives
        # weight by window positions (their expected masked count is proportional).
        bucket_weights: torch.Tensor | None = None
        if widths:
            bucket_weights = (tokens_of if tokens_of is not None else lengths).float()
            bucket_weights = bucket_weights / (bucket_weights.sum() / batches)

        optimizer = build_optimizer(cfg, model, self.device) if trainable else None
        self.ctx.optimizer = optimizer
        schedule = LRSchedule(cfg.scheduler, optimizer, batches, epochs) if trainable else None
        gen = torch.Generator().manual_seed(self.seed)  # shuffling (CPU; the same on every rank)
        if world.enabled:
            # Sampling (masks, negatives) must differ between ranks; it is reseeded
            # per epoch and rank below, so it never shares the shuffling generator.
            dev_gen = torch.Generator(self.device)
        elif self.device.type == "cpu":
            dev_gen = gen
        else:
            dev_gen = torch.Generator(self.device).manual_seed(self.seed)
        encode = getattr(model, "encode", None)
        if cfg.compile and trainable:
            encode = torch.compile(encode)
        amp = cfg.amp and self.device.type == "cuda"

        first_epoch = 1
        if resume:
            first_epoch = distributed.everywhere(
                lambda: self._resume(optimizer, schedule, gen), "--resume"
            )

        def prepare_files() -> None:
            self.ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            if first_epoch == 1:
                self._save_history()

        distributed.on_main(prepare_files, "writing histories.safetensors")

        # One CUDA graph per batch width (max_len, or each length bucket's), all
        # accumulating into the same .grad tensors (SharedGrads); one process only:
        # DDP steps are eager (docs/distributed.md says why).
        graphs = (
            trainable
            and cfg.cuda_graphs
            and self.device.type == "cuda"
            and not world.enabled
            and accum == 1
            and self.recipe.loss.name == "ce"
        )
        step_module: torch.nn.Module | None = None
        if trainable:
            step_module = LossStep(model, self.recipe.loss, encode, dev_gen)
            if world.enabled:  # also makes every rank start from rank 0's weights
                step_module = DistributedDataParallel(
                    step_module,
                    device_ids=[self.device.index] if self.device.type == "cuda" else None,
                )

        graph_steps: dict[int, GraphStep] | None = None
        if graphs:
            graph_steps = {}
            shared_grads = SharedGrads(model)

        log_every = cfg.log_every or (1 if self.device.type == "cpu" else 20)
        # Dense batches (every position, 0 = no target) need no boolean selection,
        # whose size the host would have to wait for; on CPU that wait is free and
        # the selection skips the padded positions' logits.
        dense = self.device.type == "cuda" and self.recipe.loss.name == "ce"

        bus.emit(
            "fit_start",
            run=self.ctx.name,
            model=self.recipe.model.name,
            dataset=self.recipe.dataset.name,
            stats=data.stats(),
            params=model.num_parameters(),
            epochs=epochs,
            batches=batches,
            seed=self.seed,
            device=str(self.device),
            monitor=cfg.monitor,
            patience=cfg.patience,
            start_epoch=first_epoch,
        )
        status = "completed"
        if epochs == 0 and first_epoch == 1:  # nothing to train: evaluate the model as it is
            metrics = self.evaluate("valid")
            self.stopper.update(0, self._monitor_value(metrics))
            self.history.append({"epoch": 0, "metrics": metrics})
            bus.emit("validation_end", epoch=0, metrics=metrics)

            def save_best0() -> None:
                ckpt_io.save_checkpoint(
                    self.best_path, self._weights(), self._meta("best", 0, metrics)
                )
                bus.emit("checkpoint_saved", kind="best", path=str(self.best_path), epoch=0)

            distributed.on_main(save_best0, "saving best.safetensors")

        epoch = first_epoch - 1
        for epoch in range(first_epoch, epochs + 1):
            if self.stopper.should_stop:
                break
            model.train()
            if world.enabled:
                torch.manual_seed(distributed.rank_seed(self.seed, epoch, world.rank))  # dropout
                dev_gen.manual_seed(distributed.rank_seed(self.seed, epoch, world.rank, 1))
            bus.emit("epoch_start", epoch=epoch, batches=batches)
            t0 = time.perf_counter()
            order = torch.randperm(n_windows, generator=gen).to(self.device)
            plan = length_plan(order, lengths, widths, cfg.batch_size, gen) if widths else None
            loss_sum, tokens_sum = 0.0, 0
            # Losses stay on the device; every log_every steps one transfer reads
            # them, checks them and feeds the batch_end event.
            batch_losses = torch.zeros(batches, dtype=torch.float64, device=self.device)
            window_tokens_dev = torch.zeros((), dtype=torch.float64, device=self.device)
            window_start = 0
            for b in range(batches):
                try:
                    if graph_steps is None:  # graph steps zero their shared grads in place
                        optimizer.zero_grad(set_to_none=True)
                    w, parts, weight = width, None, None
                    if plan is not None:
                        w, idx = plan[b]
                        parts = [idx]
                        weight = bucket_weights[idx].sum()
                    if graph_steps is not None:
                        (idx,) = parts or step_slices(order, b, cfg.batch_size, world, accum)
                        inputs, targets = dense_batch(
                            model, gather_windows(items, starts[idx], ends[idx], w), dev_gen
                        )
                        graph = graph_steps.get(inputs.shape[1])
                        if graph is None:  # first batch of this width: its own graph
                            graph = graph_steps[inputs.shape[1]] = GraphStep(
                                step_module, cfg.batch_size, inputs.shape[1], self.device, amp,
                                shared_grads, weighted=weight is not None,
                            )  # fmt: skip
                        n_tok = (targets != 0).sum()
                        loss_value = graph(inputs, targets, weight)
                    else:
                        micro = [
                            make_micro_batch(
                                model,
                                gather_windows(items, starts[i], ends[i], w),
                                dev_gen,
                                dense=dense,
                            )
                            for i in parts or step_slices(order, b, cfg.batch_size, world, accum)
                        ]
                        total = None
                        if tokens_of is not None and (world.enabled or accum > 1):
                            # Every rank knows the whole global batch: no collective needed.
                            total = tokens_of[global_batch(order, b, cfg.batch_size, world, accum)]
                            total = total.sum()
                        loss_value, n_tok = backward_step(
                            step_module, micro, world, amp, total, weight
                        )
                    batch_losses[b] = loss_value
                    window_tokens_dev += n_tok
                    if cfg.grad_clip:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    optimizer.step()
                    schedule.step_batch()
                except torch.cuda.OutOfMemoryError:
                    raise SeqrecError(
                        f"CUDA out of memory at epoch {epoch}, batch {b + 1} with batch size "
                        f"{cfg.batch_size}; lower it, e.g. -o train.batch_size={max(1, cfg.batch_size // 2)}"
                    ) from None
                if (b + 1) % log_every and b + 1 < batches:
                    continue
                # One host sync per log_every steps: the losses and positions since the last.
                seen = batch_losses[window_start : b + 1]
                n_window = float(window_tokens_dev)
                window_tokens_dev.zero_()
                steps = seen.tolist()
                bad = next((i for i, v in enumerate(steps) if not math.isfinite(v)), None)
                if bad is not None:
                    raise self._non_finite(steps[bad], epoch, window_start + bad, batches)
                window_loss = sum(steps) / len(steps)
                loss_sum += window_loss * n_window
                tokens_sum += int(n_window)
                window_start = b + 1
                bus.emit(
                    "batch_end",
                    epoch=epoch,
                    batch=b + 1,
                    batches=batches,
                    loss=window_loss,
                    lr=float(optimizer.param_groups[0]["lr"]),
                    tokens=int(n_window),
                    tokens_per_s=tokens_sum / max(time.perf_counter() - t0, 1e-9),
                )
            train_time = time.perf_counter() - t0
            metrics: dict[str, float] = {}
            value = math.nan
            improved = False
            if epoch % cfg.eval_every == 0 or epoch == epochs:
                metrics = self.evaluate("valid")
                bus.emit("validation_end", epoch=epoch, metrics=metrics)
                value = self._monitor_value(metrics)
                improved = self.stopper.update(epoch, value)
                schedule.step_validation(value)
            epoch_time = time.perf_counter() - t0
            self.history.append(
                {"epoch": epoch, "train_loss": loss_sum / max(1, tokens_sum), "metrics": metrics}
            )

            def save_epoch(epoch=epoch, metrics=metrics, improved=improved) -> None:
                # Queued (train.async_checkpoints): an earlier write's error raises here,
                # and each checkpoint_saved event follows once its file is in place.
                def saved(kind: str, path: Path) -> Callable[[], None]:
                    return partial(
                        bus.emit, "checkpoint_saved", kind=kind, path=str(path), epoch=epoch
                    )

                if improved:
                    self._writer.submit(
                        self.best_path,
                        self._weights(),
                        self._meta("best", epoch, metrics),
                        done=saved("best", self.best_path),
                    )
                finished = self.stopper.should_stop or epoch == epochs
                self._save_last(
                    epoch, optimizer, schedule, gen, finished, done=saved("last", self.last_path)
                )

            if world.enabled:
                error = None
                if main:
                    try:
                        save_epoch()
                    except Exception as exc:
                        error = exc
                self._sync_epoch(error, f"saving checkpoints of epoch {epoch}")
            else:
                save_epoch()
            bus.emit(
                "epoch_end",
                epoch=epoch,
                train_loss=loss_sum / max(1, tokens_sum),
                metrics=metrics,
                monitor=cfg.monitor,
                value=value,
                best_value=self.stopper.best_value,
                best_epoch=self.stopper.best_epoch,
                bad_epochs=self.stopper.bad_epochs,
                patience=cfg.patience,
                epoch_time=epoch_time,
                train_time=train_time,
                tokens_per_s=tokens_sum / max(train_time, 1e-9),
                lr=optimizer.param_groups[0]["lr"],
            )
            if self.stopper.should_stop:
                status = "early_stopped"
                bus.emit(
                    "early_stop",
                    epoch=epoch,
                    best_epoch=self.stopper.best_epoch,
                    best_value=self.stopper.best_value,
                    monitor=cfg.monitor,
                )
                break
        if self.stopper.should_stop:
            status = "early_stopped"
        del step_module, graph_steps  # drops DDP's hooks and buffers, the graphs' memory

        distributed.on_main(self._writer.flush, "writing the last checkpoints")
        # Final numbers come from the best checkpoint (rank 0 reads it, then
        # sends the weights to the others: no shared filesystem needed).
        best = distributed.on_main(
            lambda: ckpt_io.load_checkpoint(self.best_path), "loading best.safetensors"
        )
        if best is not None:
            model.load_state_dict(best.model_state)
        distributed.broadcast_module(model)
        valid = self.final_metrics("valid")
        test = self.final_metrics("test") if self.evaluate_test else {}
        total = time.perf_counter() - t_start
        result = FitResult(
            self.ctx.name,
            self.seed,
            status,
            self.stopper.best_epoch,
            self.stopper.best_value,
            valid,
            test,
            epoch,
            total,
            self.best_path,
        )
        bus.emit(
            "fit_end",
            status=status,
            best_epoch=result.best_epoch,
            best_value=result.best_value,
            valid=valid,
            test=test,
            total_time=total,
            params=model.num_parameters(),
        )
        return result

    def _resume(self, optimizer, schedule, gen: torch.Generator) -> int:
        """Restore ``last.safetensors`` (every rank reads it, so under torchrun
        on several nodes ``checkpoints_dir`` must be on a shared filesystem)."""
        if not self.last_path.is_file():
            raise SeqrecError(
                f"--resume: no {self.last_path} to resume from; run without --resume to start"
            )
        last = ckpt_io.load_checkpoint(self.last_path)
        ckpt_io.check_dataset(last, self.data)
        saved = last.meta["model"]
        current = self.recipe.model_options.model_dump(mode="json")
        if saved["name"] != self.recipe.model.name or saved["options"] != current:
            raise SeqrecError(
                f"--resume: {self.last_path} is model '{saved['name']}' {saved['options']}, "
                f"the recipe asks for '{self.recipe.model.name}' {current}; resume with the "
                "same model or start a new run"
            )
        self.model.load_state_dict(last.model_state)
        state = last.meta["trainer"]
        if optimizer is not None:
            ckpt_io.restore_optimizer(optimizer, last, state["optimizer"])
            schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(last.tensors["rng.torch"])
        gen.set_state(last.tensors["rng.gen"])
        if "rng.cuda" in last.tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(last.tensors["rng.cuda"], self.device)
        for key, value in state["stopper"].items():
            setattr(self.stopper, key, value)
        self.history = state["history"]
        return int(state["epoch"]) + 1
