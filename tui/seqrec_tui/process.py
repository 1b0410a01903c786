"""Starting and stopping a training run as a subprocess.

The TUI never trains in its own process: it runs ``python -m seqrec_core run``
(exactly what ``seqrec run`` does) in a new session, with its output in
``runs/<recipe>/tui.log``, and follows the run's ``events.jsonl``. Stopping
sends SIGINT: the trainer logs ``fit_end`` with status ``interrupted`` and
exits, keeping ``last.safetensors`` from its last finished epoch. A run left
running when the TUI quits goes on; attach to it later.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqrec_core.errors import SeqrecError
from seqrec_core.events import EVENTS_FILE

LOG_FILE = "tui.log"


@dataclass
class StartRequest:
    """What the start dialog asks for."""

    recipe: Path
    overrides: list[str] = field(default_factory=list)
    resume: bool = False
    overwrite: bool = False


@dataclass
class PreparedRun:
    """A validated recipe, ready to start: the command and the logs it will write."""

    request: StartRequest
    name: str
    run_names: list[str]
    events: list[Path]
    offsets: list[int]
    log_path: Path
    command: list[str]
    cwd: Path


def parse_overrides(text: str) -> list[str]:
    """``"train.lr=0.01 -o model.dim=64"`` → ``["train.lr=0.01", "model.dim=64"]``."""
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise SeqrecError(f"overrides: {exc}") from None
    out = []
    for token in tokens:
        if token in ("-o", "--override"):
            continue
        if "=" not in token:
            raise SeqrecError(f"override {token!r} is not KEY=VALUE (e.g. train.lr=0.001)")
        out.append(token)
    return out


def prepare_run(
    request: StartRequest,
    registry: Any,
    runs_dir: str | Path,
    checkpoints_dir: str | Path,
) -> PreparedRun:
    """Validate the recipe as ``seqrec run`` will (raises :class:`SeqrecError`
    with the recipe's own message) and work out where its events will appear."""
    from seqrec_core.recipe import load_recipe
    from seqrec_core.run import check_fresh, run_names

    overrides = [
        f"output.runs_dir={runs_dir}",
        f"output.checkpoints_dir={checkpoints_dir}",
        *request.overrides,  # the user's own -o come last and win
    ]
    recipe = load_recipe(request.recipe, registry, overrides)
    check_fresh(recipe, request.resume, request.overwrite)
    cwd = Path.cwd()
    out_dir = cwd / recipe.output.runs_dir
    names = list(run_names(recipe).values())
    events = [out_dir / name / EVENTS_FILE for name in names]
    # The event log is appended to; a fresh run is followed from today's end of
    # file, a resumed one from the start so the earlier epochs show too.
    offsets = [0 if request.resume or not p.is_file() else p.stat().st_size for p in events]
    command = [sys.executable, "-m", "seqrec_core", "run", str(request.recipe), "--samples", "0"]
    for text in overrides:
        command += ["-o", text]
    if request.resume:
        command.append("--resume")
    if request.overwrite:
        command.append("--overwrite")
    return PreparedRun(
        request=request,
        name=recipe.name,
        run_names=names,
        events=events,
        offsets=offsets,
        log_path=out_dir / recipe.name / LOG_FILE,
        command=command,
        cwd=cwd,
    )


class RunProcess:
    """One ``seqrec run`` subprocess."""

    def __init__(self, prepared: PreparedRun):
        self.prepared = prepared
        self.proc: subprocess.Popen | None = None
        self.stop_requested = False
        self.log_offset = 0

    def start(self) -> RunProcess:
        log_path = self.prepared.log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.log_offset = log.tell()
            self.proc = subprocess.Popen(
                self.prepared.command,
                cwd=self.prepared.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the TUI; Ctrl-C there is not ours
            )
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def poll(self) -> int | None:
        """The exit code, or ``None`` while running."""
        return None if self.proc is None else self.proc.poll()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Ask the run to stop (SIGINT, like Ctrl-C in its terminal)."""
        self.stop_requested = True
        self._signal(signal.SIGINT)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if not self.running:
            return
        try:
            os.killpg(self.proc.pid, sig)  # the whole session: any helpers too
        except (ProcessLookupError, PermissionError):
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def error_text(self, lines: int = 6) -> str:
        """The end of the run's output, preferring its ``seqrec: error:`` line."""
        try:
            with open(self.prepared.log_path, "rb") as fh:
                fh.seek(self.log_offset)
                text = fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        tail = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
        errors = [ln for ln in tail if ln.startswith("seqrec: ")]
        return errors[-1] if errors else "\n".join(tail[-lines:])
