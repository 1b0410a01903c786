"""Home: recipes to start, runs to attach to, checkpoints to open.

The pane only lists and asks; the app decides what happens (start dialog,
dashboard, recommendation console) from the messages it posts.
"""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Label, OptionList
from textual.widgets.option_list import Option

from seqrec_tui.discovery import (
    CheckpointInfo,
    RunInfo,
    age,
    events_path,
    find_checkpoints,
    find_recipes,
    find_runs,
)

REFRESH_S = 5.0


class HomePane(Horizontal):
    DEFAULT_CSS = """
    HomePane { height: 1fr; }
    HomePane #recipes-col { width: 24; height: 1fr; }
    HomePane #recipes { height: 1fr; border: none; }
    HomePane #open-path { margin: 0 0 0 0; }
    HomePane #lists { width: 1fr; height: 1fr; padding: 0 0 0 1; }
    HomePane #runs { height: 1fr; }
    HomePane #checkpoints { height: 1fr; }
    HomePane .heading { text-style: bold; background: $boost; width: 1fr; }
    """

    BINDINGS = [Binding("r", "refresh", "Refresh")]

    class StartRecipe(Message):
        def __init__(self, path: Path) -> None:
            super().__init__()
            self.path = path

    class Attach(Message):
        def __init__(self, events: Path) -> None:
            super().__init__()
            self.events = events

    class OpenCheckpoint(Message):
        def __init__(self, path: Path) -> None:
            super().__init__()
            self.path = path

    def __init__(self, runs_dir: Path, checkpoints_dir: Path, recipes_dir: Path, **kwargs) -> None:
        super().__init__(**kwargs)
        self.runs_dir, self.checkpoints_dir, self.recipes_dir = (
            runs_dir,
            checkpoints_dir,
            recipes_dir,
        )
        self.recipes: list[Path] = []
        self.runs: list[RunInfo] = []
        self.checkpoints: list[CheckpointInfo] = []
        self._log_cache: dict = {}  # only changed logs are read again on refresh

    def compose(self) -> ComposeResult:
        with Vertical(id="recipes-col"):
            yield Label(f"recipes in {self.recipes_dir}/", classes="heading", id="recipes-label")
            yield OptionList(id="recipes")
            yield Input(
                placeholder="open a path…",
                id="open-path",
                compact=True,
            )
        with Vertical(id="lists"):
            yield Label(f"runs in {self.runs_dir}/ (Enter attaches)", classes="heading")
            yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
            yield Label(f"checkpoints in {self.checkpoints_dir}/ (Enter opens)", classes="heading")
            yield DataTable(id="checkpoints", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        runs = self.query_one("#runs", DataTable)
        for col in ("run", "status", "best", "epochs", "age"):  # best epoch: on the dashboard
            runs.add_column(col, key=col)
        ckpts = self.query_one("#checkpoints", DataTable)
        for col in ("run", "kind", "size", "age"):
            ckpts.add_column(col, key=col)
        self.action_refresh()
        self.set_interval(REFRESH_S, self.action_refresh)

    def action_refresh(self) -> None:
        self.run_worker(self._scan, thread=True, exclusive=True, group="scan", exit_on_error=False)

    def _scan(self) -> None:
        found = (
            find_recipes(self.recipes_dir),
            find_runs(self.runs_dir, self._log_cache),
            find_checkpoints(self.checkpoints_dir),
        )
        self.app.call_from_thread(self._show, *found)

    def _show(
        self, recipes: list[Path], runs: list[RunInfo], checkpoints: list[CheckpointInfo]
    ) -> None:
        if recipes != self.recipes:
            self.recipes = recipes
            listing = self.query_one("#recipes", OptionList)
            keep = listing.highlighted
            listing.clear_options()
            listing.add_options(Option(p.name, id=str(p)) for p in recipes)
            if recipes:
                listing.highlighted = min(keep or 0, len(recipes) - 1)
            else:
                listing.add_option(Option(f"no recipes in {self.recipes_dir}/", disabled=True))
        self.runs = runs
        table = self.query_one("#runs", DataTable)
        row = table.cursor_row
        table.clear()
        for r in runs:
            table.add_row(r.name, r.status_text, r.best, r.epochs, age(r.modified))
        if runs:
            table.move_cursor(row=min(row, len(runs) - 1))
        self.checkpoints = checkpoints
        table = self.query_one("#checkpoints", DataTable)
        row = table.cursor_row
        table.clear()
        for c in checkpoints:
            table.add_row(c.run, c.kind, f"{c.size / 1e6:.1f} MB", age(c.modified))
        if checkpoints:
            table.move_cursor(row=min(row, len(checkpoints) - 1))

    @on(OptionList.OptionSelected, "#recipes")
    def _recipe_chosen(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.post_message(self.StartRecipe(Path(event.option.id)))

    @on(DataTable.RowSelected, "#runs")
    def _run_chosen(self, event: DataTable.RowSelected) -> None:
        if 0 <= event.cursor_row < len(self.runs):
            self.post_message(self.Attach(self.runs[event.cursor_row].events))

    @on(DataTable.RowSelected, "#checkpoints")
    def _checkpoint_chosen(self, event: DataTable.RowSelected) -> None:
        if 0 <= event.cursor_row < len(self.checkpoints):
            self.post_message(self.OpenCheckpoint(self.checkpoints[event.cursor_row].path))

    @on(Input.Submitted, "#open-path")
    def _path_typed(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        path = Path(text).expanduser()
        if path.suffix == ".safetensors":
            self.post_message(self.OpenCheckpoint(path))
        elif path.suffix == ".jsonl" or path.is_dir():
            events = events_path(path)
            if events.is_file():
                self.post_message(self.Attach(events))
            else:
                self.app.notify(f"{events}: no event log there", severity="error")
        elif path.is_file():
            self.post_message(self.StartRecipe(path))
        else:
            self.app.notify(f"{path}: no such file", severity="error")
