"""Checkpoints: safetensors weights + one JSON metadata block. No pickle anywhere.

A checkpoint is enough to rebuild the model for inference and to map item ids
to titles, without the recipe file or the dataset files:

* tensors ``model.*`` — the model's ``state_dict``;
* ``last`` checkpoints add ``optim.*`` (optimizer state tensors) and ``rng.*``
  (RNG states), with the rest of the trainer state in the metadata, for resume;
* metadata key ``seqrec`` — JSON: format, kind, model name/options, item map
  (raw ids, titles, digest), dataset name and sizes, metrics, epoch, seed,
  library versions, the resolved recipe.

Every write goes to a temporary file in the same directory and is renamed into
place, so a crash never leaves a half-written checkpoint behind.

:class:`CheckpointWriter` takes a snapshot of the tensors (host copies) and the
metadata (JSON text) when a checkpoint is submitted and writes the file in a
background thread, in submission order, so training does not wait for the
serialisation and the disk.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from seqrec_core import __version__
from seqrec_core.errors import SeqrecError

FORMAT = "seqrec-checkpoint/1"
META_KEY = "seqrec"


@dataclass
class Checkpoint:
    path: Path
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    def prefixed(self, prefix: str) -> dict[str, torch.Tensor]:
        n = len(prefix)
        return {k[n:]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    @property
    def model_state(self) -> dict[str, torch.Tensor]:
        return self.prefixed("model.")


def versions() -> dict[str, str]:
    import safetensors

    return {
        "seqrec": __version__,
        "torch": torch.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def item_metadata(data: Any) -> dict[str, Any]:
    """What a checkpoint stores about the item catalogue."""
    ids = data.item_map.raw.tolist()
    return {
        "name": data.name,
        "n_users": data.n_users,
        "n_items": data.n_items,
        "item_map_digest": data.item_map.digest(),
        "item_ids": ids,
        "titles": data.titles(np.arange(1, data.n_items + 1)),
    }


def save_checkpoint(
    path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> Path:
    """Write a checkpoint now (the caller waits)."""
    return write_snapshot(Path(path), snapshot(tensors, copy=False), _meta_text(meta))


def snapshot(tensors: dict[str, torch.Tensor], copy: bool = True) -> dict[str, torch.Tensor]:
    """Contiguous host tensors with the values of ``tensors`` now; host tensors
    are cloned when ``copy`` (training goes on changing them while a background
    write reads the snapshot). Device tensors are copied into ordinary (pageable)
    host memory: a pinned buffer would be released by the writer thread through
    CUDA calls, which a CUDA-graph capture in the training thread does not allow."""
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        value = value.detach()
        if value.device.type != "cpu":
            out[key] = value.to("cpu").contiguous()
        elif copy:
            out[key] = value.clone(memory_format=torch.contiguous_format)
        else:
            out[key] = value.contiguous()
    return out


def _meta_text(meta: dict[str, Any]) -> str:
    return json.dumps({"format": FORMAT, "versions": versions(), **meta})


def write_snapshot(path: Path, flat: dict[str, torch.Tensor], meta_text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(flat, tmp, metadata={META_KEY: meta_text})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class CheckpointWriter:
    """Checkpoints written in a background thread, one at a time, in the order
    they were submitted.

    :meth:`submit` snapshots the tensors and the metadata at once (the caller
    may change them right after) and queues the write; ``done`` — e.g. emitting
    a ``checkpoint_saved`` event — runs in the caller's thread once the file is
    in place, from the next :meth:`submit`, :meth:`poll` or :meth:`flush`. A
    write that failed raises :class:`CheckpointWriteError` (naming the file)
    from the next of those calls; the file it would have replaced is untouched.
    At most ``max_pending`` writes wait: a submit beyond that first waits for the
    oldest, so host memory holds at most that many snapshots. With
    ``background=False`` every submit writes before it returns (``train.
    async_checkpoints: false``)."""

    def __init__(self, background: bool = True, max_pending: int = 2) -> None:
        self.background = background
        self.max_pending = max(1, max_pending)
        self._pool = (
            ThreadPoolExecutor(1, thread_name_prefix="seqrec-checkpoint") if background else None
        )
        self._pending: deque[tuple[Future, Path, Callable[[], None] | None]] = deque()

    def submit(
        self,
        path: str | Path,
        tensors: dict[str, torch.Tensor],
        meta: dict[str, Any],
        done: Callable[[], None] | None = None,
    ) -> None:
        self.poll()
        path = Path(path)
        flat, text = snapshot(tensors, copy=self.background), _meta_text(meta)
        if self._pool is None:
            write_snapshot(path, flat, text)
            if done is not None:
                done()
            return
        while len(self._pending) >= self.max_pending:
            self._finish_oldest()
        self._pending.append((self._pool.submit(write_snapshot, path, flat, text), path, done))

    def poll(self) -> None:
        """Finish the writes that are done (their ``done`` callbacks run, in order)."""
        while self._pending and self._pending[0][0].done():
            self._finish_oldest()

    def flush(self) -> None:
        """Wait for every queued write; their ``done`` callbacks run, in order."""
        while self._pending:
            self._finish_oldest()

    def close(self) -> None:
        """Wait for the queued writes and stop the thread (callbacks of writes
        still queued are not run: use :meth:`flush` first for those)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pending.clear()

    def _finish_oldest(self) -> None:
        future, path, done = self._pending.popleft()
        try:
            future.result()
        except Exception as exc:
            raise CheckpointWriteError(f"writing {path}: {exc}") from exc
        if done is not None:
            done()


class CheckpointWriteError(SeqrecError):
    """A background checkpoint write failed."""


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint; a missing, corrupt or foreign file gives a clear error."""
    path = Path(path)
    if not path.is_file():
        raise SeqrecError(f"{path}: checkpoint not found")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            raw_meta = (fh.metadata() or {}).get(META_KEY)
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SeqrecError(
            f"{path}: not a readable safetensors file ({str(exc).splitlines()[0]}); "
            "was it truncated or is it another format?"
        ) from None
    if raw_meta is None:
        raise SeqrecError(
            f"{path}: a safetensors file but not a seqrec checkpoint (no '{META_KEY}' metadata)"
        )
    try:
        meta = json.loads(raw_meta)
    except json.JSONDecodeError:
        raise SeqrecError(f"{path}: seqrec metadata is corrupt (invalid JSON)") from None
    if meta.get("format") != FORMAT:
        raise SeqrecError(
            f"{path}: unsupported checkpoint format {meta.get('format')!r}; expected {FORMAT}"
        )
    return Checkpoint(path, meta, tensors)


def build_model(ckpt: Checkpoint, registry: Any) -> Any:
    """Rebuild the checkpoint's model (plugin looked up by name) with its weights."""
    info = ckpt.meta["model"]
    try:
        cls = registry.get("models", info["name"])
    except SeqrecError as exc:
        raise SeqrecError(f"{ckpt.path}: {exc} — install the plugin that provides it") from None
    options = cls.Options.model_validate(info["options"])
    model = cls(options, int(info["n_items"]))
    missing, unexpected = model.load_state_dict(ckpt.model_state, strict=False)
    if missing or unexpected:
        raise SeqrecError(
            f"{ckpt.path}: weights do not fit model '{info['name']}' "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); the plugin version may differ"
        )
    model.eval()
    return model


def check_dataset(ckpt: Checkpoint, data: Any) -> None:
    """Refuse to use a checkpoint on a dataset with a different item catalogue."""
    ds = ckpt.meta.get("dataset", {})
    digest = data.item_map.digest()
    if ds.get("item_map_digest") != digest:
        raise SeqrecError(
            f"{ckpt.path}: trained on dataset '{ds.get('name')}' with {ds.get('n_items')} items, "
            f"but the dataset given has '{data.name}' with {data.n_items} items (item id maps "
            "differ); use a checkpoint trained on this dataset"
        )


# ------------------------------------------------------------------ optimizer / RNG state


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors and JSON (no pickle)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, ckpt: Checkpoint, info: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in ckpt.prefixed("optim.").items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for idx, entry in info["scalars"].items():
        state.setdefault(int(idx), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})
