"""The training dashboard: progress, plots, per-epoch table, early stopping.

:class:`Dashboard` follows one or more ``events.jsonl`` files (several seeds of
a recipe run one after the other) by polling every half second, folds new
events into a :class:`~seqrec_tui.state.RunState` held in a reactive, and each
small widget redraws itself from that state. If the run was started from the
TUI, the dashboard also watches the subprocess, so a run that dies before
logging anything (a data error, say) shows the error instead of "waiting".
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable, Label, ProgressBar, Sparkline, Static

from seqrec_tui.process import RunProcess
from seqrec_tui.state import (
    LogFollower,
    RunState,
    fmt_duration,
    fmt_rate,
    fmt_seconds,
    fmt_value,
)

POLL_S = 0.5


class Line(Static):
    """A one-line Static whose plain text tests (and people) can read."""

    def show(self, text: str | Text) -> None:
        self.text = text.plain if isinstance(text, Text) else text
        self.update(text)

    text: str = ""


class RunHeader(Line):
    DEFAULT_CSS = "RunHeader { height: 1; text-style: bold; }"

    def refresh_state(self, s: RunState, label: str, part: str = "") -> None:
        if not s.events and not s.message:
            self.show(f"{label}{part}: waiting for events…")
            return
        params = f" · {s.params:,} params" if s.params else ""
        seed = f" · seed {s.seed}" if s.seed is not None else ""
        status = s.status.replace("_", " ")
        self.show(
            Text.assemble(
                (s.run or label, "bold"),
                part,
                f" · {s.model} on {s.dataset} · {s.device}{params}{seed} · ",
                (status, _status_style(s.status)),
            )
        )


def _status_style(status: str) -> str:
    return {
        "running": "bold cyan",
        "completed": "bold green",
        "early_stopped": "bold green",
        "interrupted": "bold yellow",
        "failed": "bold red",
    }.get(status, "")


class ProgressRow(Horizontal):
    """``label [bar] n/N  ETA``."""

    DEFAULT_CSS = """
    ProgressRow { height: 1; }
    ProgressRow > .label { width: 7; }
    ProgressRow > ProgressBar { width: 1fr; }
    ProgressRow > ProgressBar > Bar { width: 1fr; }
    ProgressRow > .info { width: 26; text-align: right; }
    """

    def __init__(self, label: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self._label = label

    def compose(self) -> ComposeResult:
        yield Label(self._label, classes="label")
        yield ProgressBar(total=None, show_eta=False, show_percentage=True)
        yield Line(classes="info")

    def set(self, done: int, total: int, eta: float | None, finished: bool) -> None:
        bar = self.query_one(ProgressBar)
        if total:
            bar.update(total=total, progress=min(done, total))
        eta_text = "" if finished or eta is None else f"  ETA {fmt_duration(eta)}"
        self.query_one(".info", Line).show(f"{done}/{total or '?'}{eta_text}")


class EarlyStopPanel(Static):
    DEFAULT_CSS = """
    EarlyStopPanel {
        width: 40; height: 6; border: round $accent; padding: 0 1;
        border-title-color: $accent;
    }
    EarlyStopPanel.-stopped { border: round $success; }
    """
    text: str = ""

    def on_mount(self) -> None:
        self.border_title = "early stopping"

    def refresh_state(self, s: RunState) -> None:
        lines = s.early_stop_lines()
        self.text = "\n".join(lines)
        text = Text("\n".join(lines))
        if s.stopped_early_at is not None:
            text.highlight_words([lines[-1]], "bold green")
        self.set_class(s.stopped_early_at is not None, "-stopped")
        self.update(text)


class Plots(Vertical):
    """Loss and the monitored metric over epochs."""

    DEFAULT_CSS = """
    Plots { width: 1fr; height: 6; padding: 0 1 0 0; }
    Plots > Line { height: 1; }
    Plots > Sparkline { height: 2; }
    """

    def compose(self) -> ComposeResult:
        yield Line("loss", id="loss-label")
        yield Sparkline([], id="loss-plot")
        yield Line("metric", id="metric-label")
        yield Sparkline([], id="metric-plot")

    def refresh_state(self, s: RunState) -> None:
        losses = s.series("loss")
        self.query_one("#loss-plot", Sparkline).data = losses
        last = fmt_value(losses[-1]) if losses else "—"
        self.query_one("#loss-label", Line).show(f"train loss  last {last}")
        name = s.monitor or "metric"
        values = s.series(name)
        self.query_one("#metric-plot", Sparkline).data = values
        self.query_one("#metric-label", Line).show(
            f"valid {name}  last {fmt_value(values[-1]) if values else '—'}"
        )


class MetricsTable(DataTable):
    """One row per epoch; the best epoch in bold green with a star."""

    DEFAULT_CSS = "MetricsTable { height: 1fr; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._signature: tuple = ()

    def refresh_state(self, s: RunState) -> None:
        names = s.metric_names()
        signature = (tuple(names), s.best_epoch, len(s.rows), s.rows[-1] if s.rows else None)
        if signature == self._signature:
            return
        self._signature = signature
        self.clear(columns=True)
        self.add_column("epoch", key="epoch")
        self.add_column("loss", key="loss")
        if names:
            self.add_column(names[0], key=names[0])
        self.add_column("time", key="time")
        self.add_column("tok/s", key="tok/s")
        for name in names[1:]:
            self.add_column(name, key=name)
        for row in s.rows:
            best = row.epoch == s.best_epoch
            style = "bold green" if best else ""
            cells = [f"{'★' if best else ' '}{row.epoch}", fmt_value(row.train_loss)]
            if names:
                cells.append(fmt_value(row.metrics.get(names[0])))
            cells += [
                fmt_seconds(row.epoch_time),
                "—" if row.tokens_per_s is None else f"{row.tokens_per_s:,.0f}",
            ]
            cells += [fmt_value(row.metrics.get(n)) for n in names[1:]]
            self.add_row(
                *(Text(c, style=style, justify="right") for c in cells), key=str(row.epoch)
            )
        if s.rows:
            self.move_cursor(row=len(s.rows) - 1)

    def best_row_index(self) -> int | None:
        """Where the starred (best) row is, if any."""
        for index in range(self.row_count):
            if str(self.get_row_at(index)[0]).startswith("★"):
                return index
        return None


class Dashboard(Vertical):
    """Follows a run's event log(s) and shows it."""

    DEFAULT_CSS = """
    Dashboard { height: 1fr; }
    Dashboard > #stats { height: 1; color: $text-muted; }
    Dashboard > #middle { height: 6; }
    Dashboard > #message { height: auto; max-height: 4; color: $error; display: none; }
    Dashboard > #message.-shown { display: block; }
    """

    BINDINGS = [Binding("s", "stop_run", "Stop run")]

    state: reactive[RunState] = reactive(RunState, always_update=True, init=False)

    class StopRequested(Message):
        """The user asked to stop the followed subprocess run."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.followers: list[LogFollower] = []
        self.current = 0
        self.process: RunProcess | None = None
        self.label = "no run"
        self.gpu_text = ""
        self._timer = None
        self._exit_seen = False

    def compose(self) -> ComposeResult:
        yield RunHeader("no run yet — start one from Home (1), or attach to a run there")
        yield ProgressRow("epoch", id="epoch-row")
        yield ProgressRow("batch", id="batch-row")
        yield Line(id="stats")
        with Horizontal(id="middle"):
            yield Plots()
            yield EarlyStopPanel()
        yield Line(id="message")
        yield MetricsTable(id="epochs")

    def on_mount(self) -> None:
        self._timer = self.set_interval(POLL_S, self.poll, pause=True)

    # ------------------------------------------------------------------ following
    def follow(
        self,
        paths: list[Path],
        offsets: list[int] | None = None,
        process: RunProcess | None = None,
        label: str = "",
    ) -> None:
        """Start following ``paths`` in order (the next when one logs ``fit_end``)."""
        offsets = offsets or [0] * len(paths)
        self.followers = [LogFollower(p, o) for p, o in zip(paths, offsets, strict=True)]
        self.current = 0
        self.process = process
        self.label = label or (paths[0].parent.name if paths else "run")
        self._exit_seen = False
        self.state = RunState()
        self.poll()
        if self._timer is not None:
            self._timer.resume()

    def poll(self) -> None:
        """Read new events (and the subprocess's exit) into the state."""
        if not self.followers:
            return
        state = self.state
        changed = False
        while True:
            follower = self.followers[self.current]
            events = follower.poll()
            if follower.restarted:
                state, changed = RunState(), True
            for event in events:
                state.apply(event)
                changed = True
            more = self.current + 1 < len(self.followers)
            # The next seed's log takes over once it exists; until then the last
            # seed's final numbers stay up.
            if state.finished and more and self.followers[self.current + 1].exists:
                self.current += 1
                state, changed = RunState(), True
                continue
            break
        if self.process is not None and not self._exit_seen:
            code = self.process.poll()
            if code is not None:
                self._exit_seen = True
                changed = True
                if not state.finished:
                    state.status = "interrupted" if self.process.stop_requested else "failed"
                    detail = self.process.error_text()
                    state.message = f"the run exited with code {code}" + (
                        f":\n{detail}" if detail else ""
                    )
                elif code not in (0, 130):
                    state.message = self.process.error_text()
        if changed:
            self.state = state
        elif state.status == "running":
            self._refresh_etas(state)

    def watch_state(self, state: RunState) -> None:
        if not self.query(RunHeader):
            return  # the app is exiting and has removed the widgets: nothing to show
        part = f" ({self.current + 1}/{len(self.followers)})" if len(self.followers) > 1 else ""
        self.query_one(RunHeader).refresh_state(state, self.label, part)
        self._refresh_etas(state)
        self.query_one(Plots).refresh_state(state)
        self.query_one(EarlyStopPanel).refresh_state(state)
        self.query_one(MetricsTable).refresh_state(state)
        message = self.query_one("#message", Line)
        message.show(state.message)
        message.set_class(bool(state.message), "-shown")

    def _refresh_etas(self, s: RunState) -> None:
        if not self.query("#epoch-row"):
            return  # widgets removed (the app is exiting)
        now = time.time()
        done = s.epochs_done if s.epoch == s.epochs_done or s.finished else s.epoch - 1
        self.query_one("#epoch-row", ProgressRow).set(done, s.epochs, s.run_eta(now), s.finished)
        self.query_one("#batch-row", ProgressRow).set(
            s.batch, s.batches, s.batch_eta(now), s.finished
        )
        parts = [
            f"loss {fmt_value(s.loss)}",
            fmt_rate(s.tokens_per_s),
            f"epoch {fmt_seconds(s.epoch_time)}",
        ]
        if s.total_time is not None:
            parts.append(f"total {fmt_duration(s.total_time)}")
        if s.test and s.monitor in s.test:
            parts.append(f"test {s.monitor} {s.test[s.monitor]:.4f}")
        if self.gpu_text:
            parts.append(self.gpu_text)
        self.query_one("#stats", Line).show(" · ".join(parts))

    def set_gpu_text(self, text: str) -> None:
        self.gpu_text = text

    # ------------------------------------------------------------------ actions
    def action_stop_run(self) -> None:
        if self.process is not None and self.process.running:
            self.post_message(self.StopRequested())
        else:
            self.app.notify("no run started from here is running", severity="warning")
