"""console: live progress bars and one summary line per epoch, on stderr.

Two rich bars — epochs, and the batches of the current epoch with loss, learning
rate, tokens/s and ETA — followed, after each epoch, by a line such as::

    epoch 3/20  loss 5.4321  Recall@10 0.1234  best 0.1250 (epoch 2)  patience 2/3  12.3s

``patience 2/3`` counts the epochs still allowed without improvement. When
patience runs out: ``stopped early at epoch 9 (best epoch 6, Recall@10 0.1302)``.
Off a terminal (CI logs, a file) rich draws no live bars and prints the bars'
final state when the fit ends, so the log stays readable.
"""

from __future__ import annotations

import math
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.errors import LiveError
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from seqrec_core import hookimpl


class ConsoleOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_per_second: float = Field(
        4.0, gt=0.0, description="redraws per second of the progress bars"
    )


def _fmt(value: Any, spec: str = ".4f") -> str:
    if value is None:
        return "–"
    try:
        return format(float(value), spec)
    except (TypeError, ValueError):
        return str(value)


def _finite(value: Any) -> bool:
    """A number worth printing: the trainer reports NaN (not evaluated) and -inf (no best yet)."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _duration(seconds: Any) -> str:
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return "–"
    if s < 60:
        return f"{s:.1f}s"
    minutes, s = divmod(int(round(s)), 60)
    if minutes < 60:
        return f"{minutes}m{s:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def epoch_line(event: dict, epochs: Any = None, saved_best: bool = False) -> str:
    """The one-line summary of an ``epoch_end`` event."""
    epoch = event.get("epoch", "?")
    parts = [f"epoch {epoch}/{epochs}" if epochs else f"epoch {epoch}"]
    parts.append(f"loss {_fmt(event.get('train_loss'))}")
    monitor = event.get("monitor") or "monitor"
    value = event.get("value")
    if _finite(value):
        parts.append(f"{monitor} {_fmt(value)}")
    if _finite(event.get("best_value")):
        parts.append(f"best {_fmt(event['best_value'])} (epoch {event.get('best_epoch', '?')})")
    patience = event.get("patience")
    if patience:
        left = max(int(patience) - int(event.get("bad_epochs") or 0), 0)
        parts.append(f"patience {left}/{patience}")
    if event.get("epoch_time") is not None:
        parts.append(_duration(event["epoch_time"]))
    if event.get("tokens_per_s"):
        parts.append(f"{float(event['tokens_per_s']):,.0f} tok/s")
    if saved_best:
        parts.append("saved best")
    return "  ".join(parts)


class ConsoleCallback:
    name = "console"
    Options = ConsoleOptions
    #: Enabled when a recipe has no ``callbacks:`` key.
    default = True

    def __init__(self, options: ConsoleOptions | None = None) -> None:
        self.options = options or ConsoleOptions()
        #: where output goes; tests (or a host app) may set their own before the fit
        self.console: Console | None = None
        self.progress: Progress | None = None
        self._epoch_task: TaskID | None = None
        self._batch_task: TaskID | None = None
        self._epochs: Any = None
        self._epoch_started = 0.0
        self._tokens = 0
        self._saved_best = False
        self._monitor = "monitor"

    def _print(self, text: str) -> None:
        target = self.progress.console if self.progress is not None else self.console
        if target is not None:
            target.print(text, highlight=False, markup=False)

    def _stop(self) -> None:
        progress, self.progress = self.progress, None
        if progress is not None:
            progress.stop()

    @hookimpl
    def on_fit_start(self, run: Any, event: dict) -> None:
        self._stop()
        if self.console is None:
            self.console = Console(stderr=True)
        self._epochs = event.get("epochs")
        self._monitor = event.get("monitor") or self._monitor
        params = event.get("params")
        header = [f"run {event.get('run') or getattr(run, 'name', '?')}"]
        if event.get("model"):
            header.append(f"model {event['model']}")
        if isinstance(params, int):
            header.append(f"{params:,} parameters")
        if event.get("dataset"):
            header.append(f"dataset {event['dataset']}")
        if event.get("device"):
            header.append(f"device {event['device']}")
        if event.get("seed") is not None:
            header.append(f"seed {event['seed']}")
        self.console.print("  ".join(header), highlight=False, markup=False)

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
            refresh_per_second=self.options.refresh_per_second,
        )
        total = self._epochs if isinstance(self._epochs, int) else None
        self._epoch_task = self.progress.add_task("epochs", total=total, info="")
        self._batch_task = None
        try:
            self.progress.start()
        except LiveError:  # the host app already shows a live display: summary lines only
            self.progress = None

    @hookimpl
    def on_epoch_start(self, run: Any, event: dict) -> None:
        if self.progress is None:
            return
        self._epoch_started, self._tokens, self._saved_best = time.perf_counter(), 0, False
        description = f"epoch {event.get('epoch', '?')}"
        total = event.get("batches") or None
        if self._batch_task is None:
            self._batch_task = self.progress.add_task(description, total=total, info="")
        else:
            self.progress.reset(self._batch_task, total=total, description=description, info="")

    @hookimpl
    def on_batch_end(self, run: Any, event: dict) -> None:
        if self.progress is None or self._batch_task is None:
            return
        self._tokens += int(event.get("tokens") or 0)
        elapsed = time.perf_counter() - self._epoch_started
        info = [f"loss {_fmt(event.get('loss'))}"]
        if event.get("lr") is not None:
            info.append(f"lr {_fmt(event['lr'], '.2e')}")
        if self._tokens and elapsed > 0:
            info.append(f"{self._tokens / elapsed:,.0f} tok/s")
        self.progress.update(
            self._batch_task,
            completed=event.get("batch") or 0,
            total=event.get("batches") or None,
            info="  ".join(info),
        )

    @hookimpl
    def on_checkpoint_saved(self, run: Any, event: dict) -> None:
        if event.get("kind") == "best":
            self._saved_best = True

    @hookimpl
    def on_epoch_end(self, run: Any, event: dict) -> None:
        if self.progress is not None and self._epoch_task is not None:
            self.progress.update(self._epoch_task, completed=event.get("epoch") or 0)
        self._print(epoch_line(event, self._epochs, self._saved_best))

    @hookimpl
    def on_early_stop(self, run: Any, event: dict) -> None:
        monitor = event.get("monitor") or self._monitor
        self._print(
            f"stopped early at epoch {event.get('epoch', '?')} "
            f"(best epoch {event.get('best_epoch', '?')}, {monitor} {_fmt(event.get('best_value'))})"
        )

    @hookimpl
    def on_fit_end(self, run: Any, event: dict) -> None:
        self._stop()
        if self.console is None:
            return
        status = event.get("status") or "finished"
        line = f"fit {status} in {_duration(event.get('total_time'))}"
        if event.get("best_epoch"):
            line += f", best epoch {event['best_epoch']}"
        test = event.get("test") or {}
        value = test.get(self._monitor)
        if _finite(value):
            line += f", test {self._monitor} {_fmt(value)}"
        self.console.print(line, highlight=False, markup=False)


@hookimpl
def register_callbacks(register):
    register(ConsoleCallback)
