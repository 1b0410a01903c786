"""The training event stream, defined once.

The trainer calls the :class:`~seqrec_core.hookspecs.CallbackSpec` hooks of the
run's callbacks and then appends the same event, as one JSON object per line,
to ``runs/<run>/events.jsonl``. The TUI (or any tool) follows that file to show
a live run started elsewhere. Every line has ``event`` (the hook name without
``on_``), ``time`` (Unix seconds) and the hook's documented keys.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from seqrec_core import hookspecs
from seqrec_core.plugins import check_hooks

EVENTS_FILE = "events.jsonl"
EVENT_NAMES = (
    "fit_start",
    "epoch_start",
    "batch_end",
    "validation_end",
    "epoch_end",
    "checkpoint_saved",
    "early_stop",
    "fit_end",
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; "no value yet" reads the same
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _jsonable(value.item())
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass
class EventBus:
    """Dispatches lifecycle events to callbacks and appends them to the log.

    ``batch_every`` thins ``batch_end`` lines in the log (callbacks still see
    every batch) so the file stays small on long epochs.
    """

    log_path: Path | None
    callbacks: list[Any] = field(default_factory=list)
    batch_every: int = 10
    run: Any = None

    def __post_init__(self) -> None:
        self.pm = pluggy.PluginManager("seqrec")
        self.pm.add_hookspecs(hookspecs.CallbackSpec)
        for i, cb in enumerate(self.callbacks):
            self.pm.register(cb, name=f"{getattr(cb, 'name', type(cb).__name__)}-{i}")
        check_hooks(self.pm, hookspecs.CallbackSpec, "on_")
        self._fh = None
        self._warned: set[tuple[str, str]] = set()
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115

    def emit(self, name: str, **payload: Any) -> dict:
        """Call every callback's ``on_<name>`` (pluggy order: ``tryfirst`` first),
        then log the event. A callback that raises is reported and skipped — a
        logging failure must not end training; ``BaseException`` (Ctrl-C, a
        kill) still propagates."""
        event = {"event": name, "time": time.time(), **payload}
        for impl in reversed(getattr(self.pm.hook, f"on_{name}").get_hookimpls()):
            try:
                impl.function(run=self.run, event=event)
            except Exception as exc:
                key = (impl.plugin_name, name)
                if key not in self._warned:
                    self._warned.add(key)
                    print(
                        f"seqrec: warning: callback '{impl.plugin_name}' failed in on_{name}: "
                        f"{type(exc).__name__}: {exc}",
                        file=sys.stderr,
                    )
        if self._fh is not None and (
            name != "batch_end"
            or payload.get("batch", 0) % self.batch_every == 0
            or payload.get("batch") == payload.get("batches")
        ):
            self._fh.write(json.dumps(_jsonable(event)) + "\n")
            self._fh.flush()
        return event

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_events(path: str | Path) -> Iterator[dict]:
    """Events of a run log; a half-written last line (a live run) is skipped."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue
