"""What a run looks like, rebuilt from its event stream — no UI here.

:class:`RunState` folds the events of ``runs/<run>/events.jsonl`` (documented
in :class:`seqrec_core.hookspecs.CallbackSpec`) into the numbers the training
dashboard shows. :class:`LogFollower` reads a growing log incrementally by file
offset, holding back a half-written last line until it is complete. Both are
plain Python so they can be tested, and reused, without Textual.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Statuses after which nothing more happens in a run.
FINISHED = ("completed", "early_stopped", "interrupted", "failed")


def _num(value: Any) -> float | None:
    """A finite float, or ``None`` ("no value yet" is logged as ``null``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _int(value: Any, default: int = 0) -> int:
    number = _num(value)
    return int(number) if number is not None else default


@dataclass
class EpochRow:
    """One line of the per-epoch metrics table."""

    epoch: int
    train_loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    value: float | None = None  # the monitored metric this epoch
    epoch_time: float | None = None
    tokens_per_s: float | None = None
    lr: float | None = None


@dataclass
class RunState:
    """A training run as seen through its events. Feed events to :meth:`apply`.

    Unknown events and missing keys are ignored, so a newer engine (or a log
    cut short) never breaks the view. A ``fit_start`` resets the state, except
    that a resumed fit (``start_epoch > 1``) keeps the epochs before it.
    """

    run: str = ""
    model: str = ""
    dataset: str = ""
    device: str = ""
    params: int | None = None
    seed: int | None = None
    epochs: int = 0
    batches: int = 0
    monitor: str = ""
    patience: int | None = None
    start_epoch: int = 1
    status: str = "waiting"
    epoch: int = 0  # the epoch that started last
    batch: int = 0  # the last batch reported in that epoch
    loss: float | None = None  # the last batch's loss
    rows: list[EpochRow] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped_early_at: int | None = None
    valid: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    total_time: float | None = None
    checkpoints: dict[str, tuple[str, int]] = field(default_factory=dict)
    gpu_status: str = ""
    started_at: float | None = None
    epoch_started_at: float | None = None
    last_time: float | None = None
    live_tokens_per_s: float | None = None
    events: int = 0
    message: str = ""  # set by the UI: why a run failed before logging anything
    _last_batch: tuple[int, float] | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ folding
    def apply(self, event: Any) -> None:
        """Fold one event (a dict from ``events.jsonl``) into the state."""
        if not isinstance(event, dict):
            return
        handler = getattr(self, f"_on_{event.get('event')}", None)
        if handler is None:
            return
        self.events += 1
        t = _num(event.get("time"))
        if t is not None:
            self.last_time = t
        handler(event, t)

    def apply_all(self, events: Any) -> RunState:
        for event in events:
            self.apply(event)
        return self

    def _on_fit_start(self, e: dict, t: float | None) -> None:
        start = max(1, _int(e.get("start_epoch"), 1))
        kept = [r for r in self.rows if r.epoch < start] if start > 1 else []
        fresh = RunState(rows=kept, events=self.events, last_time=self.last_time)
        self.__dict__.update(fresh.__dict__)
        self.run = str(e.get("run") or "")
        self.model = str(e.get("model") or "")
        self.dataset = str(e.get("dataset") or "")
        self.device = str(e.get("device") or "")
        self.params = _int(e.get("params")) if e.get("params") is not None else None
        self.seed = _int(e.get("seed")) if e.get("seed") is not None else None
        self.epochs = _int(e.get("epochs"))
        self.batches = _int(e.get("batches"))
        self.monitor = str(e.get("monitor") or "")
        self.patience = _int(e.get("patience")) if e.get("patience") is not None else None
        self.start_epoch = start
        self.epoch = start - 1
        self.status = "running"
        self.started_at = t
        if kept:
            best = max(kept, key=lambda r: -math.inf if r.value is None else r.value)
            if best.value is not None:
                self.best_value, self.best_epoch = best.value, best.epoch

    def _on_epoch_start(self, e: dict, t: float | None) -> None:
        self.status = "running"
        self.epoch = _int(e.get("epoch"), self.epoch + 1)
        self.batches = _int(e.get("batches"), self.batches)
        self.batch = 0
        self.epoch_started_at = t
        self._last_batch = (0, t) if t is not None else None

    def _on_batch_end(self, e: dict, t: float | None) -> None:
        self.epoch = _int(e.get("epoch"), self.epoch)
        batch = _int(e.get("batch"), self.batch)
        self.batches = _int(e.get("batches"), self.batches)
        self.loss = _num(e.get("loss"))
        tokens = _num(e.get("tokens"))
        # The log keeps every n-th batch only: extrapolate this batch's tokens.
        if self._last_batch is not None and t is not None and tokens is not None:
            prev_batch, prev_t = self._last_batch
            if batch > prev_batch and t > prev_t:
                self.live_tokens_per_s = tokens * (batch - prev_batch) / (t - prev_t)
        self.batch = batch
        if t is not None:
            self._last_batch = (batch, t)

    def _on_validation_end(self, e: dict, t: float | None) -> None:
        epoch = _int(e.get("epoch"))
        metrics = _metrics(e.get("metrics"))
        if epoch == 0 and metrics:  # untrained models (popularity) validate once, at 0
            row = self._row(0)
            row.metrics = metrics
            row.value = metrics.get(self.monitor)

    def _on_epoch_end(self, e: dict, t: float | None) -> None:
        epoch = _int(e.get("epoch"), self.epoch)
        row = self._row(epoch)
        row.train_loss = _num(e.get("train_loss"))
        metrics = _metrics(e.get("metrics"))
        if metrics:
            row.metrics = metrics
        row.value = _num(e.get("value"))
        row.epoch_time = _num(e.get("epoch_time"))
        row.tokens_per_s = _num(e.get("tokens_per_s"))
        row.lr = _num(e.get("lr"))
        self.epoch = max(self.epoch, epoch)
        self.batch = self.batches
        self.monitor = str(e.get("monitor") or self.monitor)
        if e.get("patience") is not None:
            self.patience = _int(e.get("patience"))
        self.bad_epochs = _int(e.get("bad_epochs"), self.bad_epochs)
        self._set_best(e)
        if isinstance(e.get("gpu_status"), str):
            self.gpu_status = e["gpu_status"]

    def _on_checkpoint_saved(self, e: dict, t: float | None) -> None:
        kind = str(e.get("kind") or "checkpoint")
        self.checkpoints[kind] = (str(e.get("path") or ""), _int(e.get("epoch")))

    def _on_early_stop(self, e: dict, t: float | None) -> None:
        self.stopped_early_at = _int(e.get("epoch"), self.epoch)
        self.monitor = str(e.get("monitor") or self.monitor)
        self._set_best(e)

    def _on_fit_end(self, e: dict, t: float | None) -> None:
        self.status = str(e.get("status") or "completed")
        self.valid = _metrics(e.get("valid"))
        self.test = _metrics(e.get("test"))
        self.total_time = _num(e.get("total_time"))
        self._set_best(e)
        if self.status == "early_stopped" and self.stopped_early_at is None:
            self.stopped_early_at = self.epoch

    def _set_best(self, e: dict) -> None:
        value = _num(e.get("best_value"))
        if value is not None:
            self.best_value = value
            self.best_epoch = _int(e.get("best_epoch"), self.best_epoch or 0)

    def _row(self, epoch: int) -> EpochRow:
        for row in self.rows:
            if row.epoch == epoch:
                return row
        row = EpochRow(epoch)
        self.rows.append(row)
        self.rows.sort(key=lambda r: r.epoch)
        return row

    # ------------------------------------------------------------------ views
    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def epochs_done(self) -> int:
        return max((r.epoch for r in self.rows), default=0)

    @property
    def best_row(self) -> EpochRow | None:
        for row in self.rows:
            if row.epoch == self.best_epoch:
                return row
        return None

    def series(self, name: str) -> list[float]:
        """Per-epoch values of ``"loss"`` or a validation metric, for plots."""
        values = (r.train_loss if name == "loss" else r.metrics.get(name) for r in self.rows)
        return [v for v in values if v is not None]

    def metric_names(self) -> list[str]:
        """Validation metrics seen so far, the monitored one first."""
        names: list[str] = []
        for row in self.rows:
            names.extend(n for n in row.metrics if n not in names)
        if self.monitor in names:
            names.remove(self.monitor)
            names.insert(0, self.monitor)
        return names

    @property
    def tokens_per_s(self) -> float | None:
        """Live estimate during an epoch, else the last epoch's throughput."""
        if self.status == "running" and self.batch < self.batches and self.live_tokens_per_s:
            return self.live_tokens_per_s
        for row in reversed(self.rows):
            if row.tokens_per_s is not None:
                return row.tokens_per_s
        return self.live_tokens_per_s

    @property
    def epoch_time(self) -> float | None:
        for row in reversed(self.rows):
            if row.epoch_time is not None:
                return row.epoch_time
        return None

    def batch_eta(self, now: float | None = None) -> float | None:
        """Seconds left in the current epoch's training batches."""
        if self.finished or not self.batch or self.epoch_started_at is None:
            return None
        if self.batch >= self.batches:
            return None
        now = time.time() if now is None else now
        per_batch = max(0.0, now - self.epoch_started_at) / self.batch
        return per_batch * (self.batches - self.batch)

    def run_eta(self, now: float | None = None) -> float | None:
        """Seconds left if every epoch runs (early stopping may end sooner)."""
        if self.finished or not self.epochs:
            return None
        times = [r.epoch_time for r in self.rows if r.epoch_time is not None][-5:]
        if not times:
            return None
        per_epoch = sum(times) / len(times)
        left = per_epoch * max(0, self.epochs - self.epochs_done)
        if self.epoch > self.epochs_done and self.epoch_started_at is not None:
            now = time.time() if now is None else now
            left -= min(per_epoch, max(0.0, now - self.epoch_started_at))
        return max(0.0, left)

    def early_stop_lines(self) -> list[str]:
        """The early-stopping panel, as lines of text."""
        if not self.monitor:
            return [self._status_line()] if self.finished else ["waiting for the run to start…"]
        lines = [f"monitor  {self.monitor} (higher is better)"]
        if self.best_value is None:
            lines.append("best     —")
        else:
            lines.append(f"best     {self.best_value:.4f} at epoch {self.best_epoch}")
        patience = "?" if self.patience is None else str(self.patience)
        lines.append(f"no gain  {self.bad_epochs}/{patience} epochs (patience)")
        if self.stopped_early_at is not None:
            lines.append(f"stopped early at epoch {self.stopped_early_at}")
        elif self.finished:
            lines.append(self._status_line())
        return lines

    def _status_line(self) -> str:
        return f"run {self.status.replace('_', ' ')}"


def _metrics(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    out = {}
    for name, v in value.items():
        number = _num(v)
        if number is not None:
            out[str(name)] = number
    return out


# ---------------------------------------------------------------------- following


class LogFollower:
    """Reads new complete lines of a growing JSON-lines file, by byte offset.

    A half-written last line stays buffered until its newline arrives; a line
    that is not JSON is counted in ``bad_lines`` and skipped. If the file is
    replaced or truncated, reading starts over and ``restarted`` is set (the
    caller should reset what it built from the old lines).
    """

    def __init__(self, path: str | Path, offset: int = 0, max_bytes: int = 8 << 20):
        self.path = Path(path)
        self.offset = offset
        self.max_bytes = max_bytes
        self.bad_lines = 0
        self.restarted = False
        self._buffer = b""
        self._inode: int | None = None

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    def poll(self) -> list[dict]:
        """Events appended since the last call (``[]`` if none or no file yet)."""
        self.restarted = False
        try:
            stat = os.stat(self.path)
        except OSError:
            return []
        if (self._inode is not None and stat.st_ino != self._inode) or stat.st_size < self.offset:
            self.offset, self._buffer, self.restarted = 0, b"", True
        self._inode = stat.st_ino
        if stat.st_size == self.offset:
            return []
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read(min(stat.st_size - self.offset, self.max_bytes))
        except OSError:
            return []
        self.offset += len(data)
        lines = (self._buffer + data).split(b"\n")
        self._buffer = lines.pop()  # b"" after a complete line, else the partial one
        events = []
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                self.bad_lines += 1
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    @property
    def pending(self) -> bool:
        """Whether a partial (not yet newline-terminated) line is buffered."""
        return bool(self._buffer)


def summarise_log(path: str | Path, tail_bytes: int = 256 << 10) -> RunState:
    """A run's state from its log's first line and last ``tail_bytes`` — enough
    for the status and best metric without parsing a long log in full."""
    path = Path(path)
    state = RunState()
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.readline()
            start = max(len(head), size - tail_bytes)
            fh.seek(start)
            tail = fh.read()
    except OSError:
        return state
    lines = [head] if head.endswith(b"\n") else []
    chunks = tail.split(b"\n")
    if start > len(head):
        chunks = chunks[1:]  # the cut may have landed mid-line
    lines.extend(chunks[:-1])  # the last chunk is partial (or empty)
    for line in lines:
        try:
            state.apply(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
    return state


# ---------------------------------------------------------------------- formatting


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def fmt_seconds(seconds: float | None) -> str:
    """``0.04s``, ``12.3s``, ``0:12:34`` — short, and never ``0.0s``."""
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 600:
        return f"{seconds:.1f}s"
    return fmt_duration(seconds)


def fmt_rate(tokens_per_s: float | None) -> str:
    if tokens_per_s is None:
        return "—"
    if tokens_per_s >= 1e6:
        return f"{tokens_per_s / 1e6:.2f}M tok/s"
    if tokens_per_s >= 1e4:
        return f"{tokens_per_s / 1e3:.1f}k tok/s"
    return f"{tokens_per_s:,.0f} tok/s"


def fmt_value(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"
