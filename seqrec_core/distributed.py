"""Several processes, one training run: ``torch.distributed`` under ``torchrun``.

``torchrun`` (``python -m torch.distributed.run``) starts one process per GPU
and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``. :func:`session` reads them and creates the process group
(NCCL with ``cuda:LOCAL_RANK`` on CUDA, Gloo on CPU) and destroys it at the
end, also on error. Without those variables, or with ``WORLD_SIZE=1``, nothing
is created: a plain ``seqrec run`` never touches ``torch.distributed``, and every
helper here is a no-op returning the single-process answer.

The helpers are collectives: every rank must call them, in the same order.
Work that only rank 0 does (writing files) goes through :func:`on_main`, which
tells every rank whether it worked, so a failure on rank 0 ends every rank
instead of leaving the others waiting in the next collective.
See ``docs/distributed.md``.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from seqrec_core.errors import SeqrecError

T = TypeVar("T")

#: Longest a rank waits in a collective. Generous because rank 0 may build the
#: data cache (or write a large checkpoint) while the others wait.
TIMEOUT = datetime.timedelta(minutes=30)


class PeerFailed(SeqrecError):
    """Raised on the ranks that did not fail when another rank did."""


@dataclass(frozen=True)
class World:
    """Where this process stands: ``rank`` of ``size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """More than one process: collectives, DDP and sharding are on."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world(environ: dict[str, str] | None = None) -> World:
    """The world ``torchrun`` describes in the environment (one process without it)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return World()
    try:
        size = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", "0"))
    except ValueError:
        raise SeqrecError(
            "WORLD_SIZE, RANK and LOCAL_RANK must be integers; launch with "
            "torchrun --nproc-per-node N seqrec run …"
        ) from None
    if size > 1 and "RANK" not in env:
        raise SeqrecError(
            f"WORLD_SIZE={size} but RANK is not set; launch with torchrun, which sets both"
        )
    if not 0 <= rank < max(size, 1):
        raise SeqrecError(f"RANK={rank} is outside 0..{size - 1} (WORLD_SIZE={size})")
    return World(rank, max(size, 1), local_rank)


def current() -> World:
    """The world of the active process group (one process when there is none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def is_main() -> bool:
    """True on rank 0, and in a single process."""
    return current().is_main


def local_device(device: torch.device) -> torch.device:
    """``cuda`` → ``cuda:LOCAL_RANK`` under a process group; other devices unchanged."""
    if device.type != "cuda" or device.index is not None:
        return device
    world = current()
    return torch.device("cuda", world.local_rank) if world.enabled else device


@contextmanager
def session(device: torch.device | str = "cpu") -> Iterator[World]:
    """Create the process group if ``torchrun`` asked for more than one process.

    NCCL when ``device`` is CUDA (each process on ``cuda:LOCAL_RANK``), Gloo
    otherwise. The group is destroyed on leaving, also on error. A group that
    already exists (created by the caller) is used and left alone.
    """
    world = env_world()
    if not world.enabled or dist.is_initialized():
        yield current()
        return
    device = torch.device(device)
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise SeqrecError(
            f"WORLD_SIZE={world.size} but {' and '.join(missing)} not set; launch with "
            "torchrun --nproc-per-node N seqrec run RECIPE (docs/distributed.md)"
        )
    kwargs: dict[str, Any] = {}
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise SeqrecError(
                f"LOCAL_RANK={world.local_rank} but this node has "
                f"{torch.cuda.device_count()} GPU(s); use --nproc-per-node ≤ the GPU count"
            )
        torch.cuda.set_device(world.local_rank)
        kwargs["device_id"] = torch.device("cuda", world.local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend, rank=world.rank, world_size=world.size, timeout=TIMEOUT, **kwargs
    )
    try:
        yield world
    except BaseException:
        dist.destroy_process_group()
        raise
    # Leave together: a rank that tears Gloo down while its peer is still
    # talking can abort the peer ("terminate called without an active exception").
    dist.barrier()
    dist.destroy_process_group()


# ------------------------------------------------------------------ collectives


def comm_device() -> torch.device:
    """Where collective tensors must live: the rank's GPU for NCCL, else CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if current().enabled:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks, in place (on the communication device)."""
    if current().enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (picklable objects)."""
    if not current().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``module``."""
    if not current().enabled:
        return
    dev = comm_device()
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.device == dev:
                dist.broadcast(tensor, src=src)
            else:
                moved = tensor.to(dev)
                dist.broadcast(moved, src=src)
                tensor.copy_(moved)


def all_gather_rows(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``tensor`` (same trailing shape and dtype; the row counts may
    differ, zero included), in rank order, on the tensor's device."""
    if not current().enabled:
        return [tensor]
    dev, size = comm_device(), dist.get_world_size()
    local = tensor.to(dev)
    rows = torch.tensor([local.shape[0]], dtype=torch.int64, device=dev)
    counts = [torch.zeros_like(rows) for _ in range(size)]
    dist.all_gather(counts, rows)
    n = [int(c) for c in counts]
    longest = max(n)
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: local.shape[0]] = local
    out = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(out, padded)
    return [o[:k].to(tensor.device) for o, k in zip(out, n, strict=True)]


def sync_status(error: BaseException | None, what: str, payload: Any = None) -> Any:
    """Every rank says whether its part of ``what`` failed; return rank 0's ``payload``.

    If any rank failed, every rank raises: the failed one its own error, the
    others :class:`PeerFailed` — so no rank is left waiting in a collective for
    a rank that has stopped.
    """
    if not current().enabled:
        if error is not None:
            raise error
        return payload
    note = None if error is None else f"{type(error).__name__}: {error}"
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (note, payload))
    if error is not None:
        raise error
    failed = [(r, n) for r, (n, _) in enumerate(gathered) if n is not None]
    if failed:
        rank, note = failed[0]
        raise PeerFailed(f"{what} failed on rank {rank} ({note}); stopping every rank")
    return gathered[0][1]


def on_main(fn: Callable[[], T], what: str) -> T | None:
    """Run ``fn`` on rank 0 only (file writes); every rank learns whether it
    worked and raises if not. Returns ``fn``'s result on rank 0, None elsewhere."""
    world = current()
    if not world.enabled:
        return fn()
    result, error = None, None
    if world.is_main:
        try:
            result = fn()
        except Exception as exc:
            error = exc
    sync_status(error, what)
    return result


def everywhere(fn: Callable[[], T], what: str) -> T:
    """Run ``fn`` on every rank; if it raises on any, raise on all."""
    if not current().enabled:
        return fn()
    result, error = None, None
    try:
        result = fn()
    except Exception as exc:
        error = exc
    sync_status(error, what)
    return result  # type: ignore[return-value]


def local_main_first(fn: Callable[[], T], what: str) -> T:
    """Run ``fn`` on each node's local rank 0 first, then on the other ranks
    (e.g. build an on-disk cache once, then read it)."""
    world = current()
    if not world.enabled:
        return fn()
    first = world.local_rank == 0
    result, error = None, None
    if first:
        try:
            result = fn()
        except Exception as exc:
            error = exc
    sync_status(error, what)
    if not first:
        try:
            result = fn()
        except Exception as exc:
            error = exc
    sync_status(error if not first else None, what)
    return result  # type: ignore[return-value]


def rank_seed(seed: int, *keys: int) -> int:
    """A seed for one rank and epoch, derived from the run's seed."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1, np.uint64)[0] % 2**63)
