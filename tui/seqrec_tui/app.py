"""``seqrec-tui``: home, training dashboard, GPU gauges, recommendation console.

Four tabs (keys 1-4). The app owns the one training subprocess it may have
started and asks before quitting while it runs. It talks to ``seqrec_core``
only through its public API; plugins are found by ``load_plugins`` like the CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from pathlib import Path

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, TabbedContent, TabPane

from seqrec_tui.dashboard import Dashboard
from seqrec_tui.dialogs import ChoiceDialog, StartDialog
from seqrec_tui.discovery import events_path
from seqrec_tui.gpu import GpuPanel, summary_line
from seqrec_tui.home import HomePane
from seqrec_tui.process import PreparedRun, RunProcess, StartRequest, prepare_run
from seqrec_tui.recommend import RecommendPane

#: How long to wait for a stopped run to write its last events before killing it.
STOP_GRACE_S = 30.0


class SeqrecApp(App):
    TITLE = "seqrec"
    SUB_TITLE = "sequential recommendation"
    CSS = """
    TabbedContent { height: 1fr; }
    TabPane { padding: 0 1; }
    """

    BINDINGS = [
        Binding("1", "show_tab('home')", "Home"),
        Binding("2", "show_tab('train')", "Train"),
        Binding("3", "show_tab('gpu')", "GPU"),
        Binding("4", "show_tab('recommend')", "Recommend"),
        Binding("q", "quit", "Quit"),
        Binding("escape", "leave_field", "Leave field", show=False),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(
        self,
        runs_dir: str | Path = "runs",
        checkpoints_dir: str | Path = "checkpoints",
        recipes_dir: str | Path = "recipes",
        attach: str | Path | None = None,
        checkpoint: str | Path | None = None,
        gpu_interval: float = 1.0,
    ) -> None:
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.checkpoints_dir = Path(checkpoints_dir)
        self.recipes_dir = Path(recipes_dir)
        self.initial_attach = Path(attach) if attach else None
        self.initial_checkpoint = Path(checkpoint) if checkpoint else None
        self.gpu_interval = gpu_interval
        self.process: RunProcess | None = None
        # The panes live on the first screen; keep them at hand while a dialog is up.
        self.home = HomePane(self.runs_dir, self.checkpoints_dir, self.recipes_dir)
        self.dashboard = Dashboard()
        self.gpu_panel = GpuPanel(interval=gpu_interval)
        self.recommender = RecommendPane(self.registry)
        self._plugins = None
        self._plugins_lock = threading.Lock()

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="tabs", initial="home"):
            with TabPane("Home", id="home"):
                yield self.home
            with TabPane("Train", id="train"):
                yield self.dashboard
            with TabPane("GPU", id="gpu"):
                yield self.gpu_panel
            with TabPane("Recommend", id="recommend"):
                yield self.recommender
        yield Footer()

    def on_mount(self) -> None:
        # After the first refresh: the screen's auto-focus would pull us back to Home.
        self.call_after_refresh(self._open_initial)

    def _open_initial(self) -> None:
        if self.initial_attach is not None:
            self.attach(events_path(self.initial_attach))
        if self.initial_checkpoint is not None:
            self.open_checkpoint(self.initial_checkpoint)

    def registry(self):
        """The plugin registry, loaded once (the first call may take a moment)."""
        with self._plugins_lock:
            if self._plugins is None:
                from seqrec_core.plugins import load_plugins

                self._plugins = load_plugins()
            return self._plugins

    def action_show_tab(self, tab: str) -> None:
        self.screen_stack[0].query_one(TabbedContent).active = tab
        # Focus moves with the tab, at once: the main screen refocuses its focused
        # widget when a dialog closes, and a focused widget activates its own tab.
        self._focus_pane(tab, typing=True)

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self._focus_pane(event.pane.id or "", typing=True)

    def action_leave_field(self) -> None:
        """Escape from a text field, so the single-key bindings work again."""
        tab = self.screen_stack[0].query_one(TabbedContent).active
        self._focus_pane(tab, typing=False)

    def _focus_pane(self, tab: str, typing: bool) -> None:
        """Focus what a tab is for; with ``typing``, its text field where that is the point."""
        if tab == "recommend" and typing:
            loaded = self.recommender.loaded is not None
            target = "#search" if loaded else "#ckpt-path"
        else:
            target = {
                "home": "#recipes",
                "train": "#epochs",
                "gpu": "GpuPanel",
                "recommend": "#history",
            }.get(tab)
        if target:
            main = self.screen_stack[0]
            main.set_focus(main.query_one(target))

    # ------------------------------------------------------------------ home actions
    @on(HomePane.StartRecipe)
    def _start_recipe(self, event: HomePane.StartRecipe) -> None:
        self.start_recipe(event.path)

    def start_recipe(self, recipe: Path) -> None:
        if self.process is not None and self.process.running:
            self.notify(
                "a run started here is still running; stop it first (s on Train)",
                severity="warning",
            )
            return
        self.push_screen(StartDialog(recipe, self._prepare), self._started)

    def _prepare(self, request: StartRequest) -> PreparedRun:
        return prepare_run(request, self.registry(), self.runs_dir, self.checkpoints_dir)

    def _started(self, prepared: PreparedRun | None) -> None:
        if prepared is None:
            return
        try:
            self.process = RunProcess(prepared).start()
        except OSError as exc:
            self.notify(f"could not start the run: {exc}", severity="error")
            return
        self.dashboard.follow(prepared.events, prepared.offsets, self.process, prepared.name)
        self.action_show_tab("train")
        self.home.action_refresh()
        self.notify(
            f"started {prepared.name} (pid {self.process.pid}); output in {prepared.log_path}"
        )

    @on(HomePane.Attach)
    def _attach(self, event: HomePane.Attach) -> None:
        self.attach(event.events)

    def attach(self, events: Path) -> None:
        """Follow a run's log, wherever it was started."""
        if not events.is_file():
            self.notify(f"{events}: no event log there", severity="error")
            return
        process = self.process if self._is_ours(events) else None
        self.dashboard.follow([events], [0], process, events.parent.name)
        self.action_show_tab("train")

    def _is_ours(self, events: Path) -> bool:
        if self.process is None or not self.process.running:
            return False
        return any(events.resolve() == p.resolve() for p in self.process.prepared.events)

    @on(HomePane.OpenCheckpoint)
    def _open_checkpoint(self, event: HomePane.OpenCheckpoint) -> None:
        self.open_checkpoint(event.path)

    def open_checkpoint(self, path: Path) -> None:
        self.recommender.load(path)
        self.action_show_tab("recommend")

    @on(GpuPanel.Updated)
    def _gpu_updated(self, event: GpuPanel.Updated) -> None:
        self.dashboard.set_gpu_text(summary_line(event.readings))

    # ------------------------------------------------------------------ stopping
    @on(Dashboard.StopRequested)
    def _stop_requested(self) -> None:
        self.push_screen(
            ChoiceDialog(
                "Stop the run? It keeps its last checkpoint (written every epoch); "
                "continue it later with resume.",
                [("stop", "Stop run"), ("cancel", "Keep running")],
            ),
            self._stop_chosen,
        )

    def _stop_chosen(self, choice: str | None) -> None:
        if choice == "stop" and self.process is not None:
            self.process.stop()
            self.notify("stopping the run (SIGINT)…")

    async def action_quit(self) -> None:
        if self.process is None or not self.process.running:
            self.exit()
            return
        if self.screen is not self.screen_stack[0]:
            return  # a dialog is up (maybe this very question): answer it first
        self.push_screen(
            ChoiceDialog(
                f"The run {self.process.prepared.name} is still training.\n"
                "Stop it (it keeps its last checkpoint), or leave it running "
                "(attach to it later from Home)?",
                [("stop", "Stop and quit"), ("leave", "Leave running"), ("cancel", "Cancel")],
            ),
            self._quit_chosen,
        )

    def _quit_chosen(self, choice: str | None) -> None:
        if choice == "leave":
            self.exit()
        elif choice == "stop":
            self._stop_then_exit()

    @work(exclusive=True, group="quit")
    async def _stop_then_exit(self) -> None:
        process = self.process
        if process is not None:
            process.stop()
            self.notify("stopping the run; waiting for it to save and exit…")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + STOP_GRACE_S
            while process.running and loop.time() < deadline:
                await asyncio.sleep(0.1)
            if process.running:
                process.kill()
        if self.is_running:  # a test harness may already be tearing the app down
            self.dashboard.poll()
        self.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqrec-tui",
        description="Terminal UI for seqrec: start or attach to training runs, watch GPUs, "
        "try recommendations from a checkpoint.",
    )
    parser.add_argument(
        "--runs-dir", default="runs", help="where runs write events (default: runs)"
    )
    parser.add_argument(
        "--checkpoints-dir",
        default="checkpoints",
        help="where checkpoints are (default: checkpoints)",
    )
    parser.add_argument(
        "--recipes-dir", default="recipes", help="recipes listed on Home (default: recipes)"
    )
    parser.add_argument(
        "--attach", metavar="RUN", help="open the dashboard on a run directory or its events.jsonl"
    )
    parser.add_argument(
        "--checkpoint", metavar="PATH", help="open the recommendation console on a checkpoint"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    app = SeqrecApp(
        runs_dir=args.runs_dir,
        checkpoints_dir=args.checkpoints_dir,
        recipes_dir=args.recipes_dir,
        attach=args.attach,
        checkpoint=args.checkpoint,
    )
    app.run()
    return app.return_code or 0


if __name__ == "__main__":
    raise SystemExit(main())
