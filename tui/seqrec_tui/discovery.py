"""What is on disk: recipes, runs (with their best metric) and checkpoints.

Layout written by ``seqrec run`` (see :mod:`seqrec_core.run`)::

    runs/<run>/events.jsonl, metrics.json, recipe.yaml (recipe level), summary.json
    checkpoints/<run>/best.safetensors, last.safetensors, histories.safetensors
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from seqrec_core.events import EVENTS_FILE
from seqrec_tui.state import RunState, summarise_log

CHECKPOINT_KINDS = ("best", "last")
#: A log untouched for this long without ``fit_end`` is not "running" any more.
STALE_AFTER_S = 300.0


@dataclass
class RunInfo:
    name: str
    events: Path
    state: RunState
    modified: float

    @property
    def status(self) -> str:
        if self.state.finished:
            return self.state.status
        if not self.state.events:
            return "empty"
        return "running" if time.time() - self.modified < STALE_AFTER_S else "incomplete"

    @property
    def status_text(self) -> str:
        """Short enough for an 80-column table."""
        return {"completed": "done", "early_stopped": "early stop"}.get(self.status, self.status)

    @property
    def best(self) -> str:
        s = self.state
        return "—" if s.best_value is None else f"{s.monitor} {s.best_value:.4f}"

    @property
    def epochs(self) -> str:
        return f"{s.epochs_done}/{s.epochs}" if (s := self.state).epochs else str(s.epochs_done)


@dataclass
class CheckpointInfo:
    run: str
    kind: str
    path: Path
    size: int
    modified: float


def find_recipes(recipes_dir: str | Path) -> list[Path]:
    root = Path(recipes_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def find_runs(runs_dir: str | Path, cache: dict | None = None) -> list[RunInfo]:
    """Every run with an event log, most recently active first.

    Pass the same ``cache`` dict on every call to re-read only logs that changed.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    cache = {} if cache is None else cache
    runs = []
    for events in root.glob(f"*/{EVENTS_FILE}"):
        try:
            stat = events.stat()
        except OSError:
            continue
        key = (stat.st_mtime_ns, stat.st_size)
        hit = cache.get(events)
        if hit is None or hit[0] != key:
            hit = cache[events] = (key, summarise_log(events))
        runs.append(RunInfo(events.parent.name, events, hit[1], stat.st_mtime))
    return sorted(runs, key=lambda r: r.modified, reverse=True)


def find_checkpoints(checkpoints_dir: str | Path) -> list[CheckpointInfo]:
    """``best`` and ``last`` checkpoints, most recent first."""
    root = Path(checkpoints_dir)
    if not root.is_dir():
        return []
    found = []
    for kind in CHECKPOINT_KINDS:
        for path in root.glob(f"*/{kind}.safetensors"):
            try:
                stat = path.stat()
            except OSError:
                continue
            found.append(CheckpointInfo(path.parent.name, kind, path, stat.st_size, stat.st_mtime))
    return sorted(found, key=lambda c: (-c.modified, c.run, c.kind))


def age(modified: float, now: float | None = None) -> str:
    """``"5s"``, ``"3m"``, ``"2h"``, ``"4d"`` ago."""
    seconds = max(0.0, (time.time() if now is None else now) - modified)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def events_path(path: str | Path) -> Path:
    """A run directory or an ``events.jsonl`` → the log to follow."""
    path = Path(path)
    return path / EVENTS_FILE if path.is_dir() else path
