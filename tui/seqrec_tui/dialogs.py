"""Modal dialogs: start a recipe, and "a run is still going — what now?"."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Static

from seqrec_tui.process import PreparedRun, StartRequest, parse_overrides


class StartDialog(ModalScreen[PreparedRun | None]):
    """Overrides and resume/overwrite for one recipe; validates before closing,
    so a recipe error is shown here, with the recipe's own message."""

    DEFAULT_CSS = """
    StartDialog { align: center middle; }
    StartDialog > Vertical {
        width: 76; height: auto; max-height: 22; border: thick $accent; padding: 0 1;
        background: $surface;
    }
    StartDialog #overrides { margin: 0 0 1 0; }
    StartDialog #error { color: $error; height: auto; max-height: 8; }
    StartDialog Horizontal { height: auto; }
    StartDialog Button { margin: 0 1 0 0; }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, recipe: Path, prepare: Callable[[StartRequest], PreparedRun]) -> None:
        super().__init__()
        self.recipe = recipe
        self.prepare = prepare
        self.error_text = ""

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text(f"start {self.recipe}", style="bold"))
            yield Label("overrides (KEY=VALUE …), e.g. train.epochs=5 train.lr=0.001")
            yield Input(placeholder="Enter starts the run", id="overrides")
            with Horizontal():
                yield Checkbox("resume (--resume)", id="resume", compact=True)
                yield Checkbox("overwrite (--overwrite)", id="overwrite", compact=True)
            yield Static("", id="error")
            with Horizontal():
                yield Button("Start", variant="primary", id="start")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#overrides", Input).focus()

    @on(Input.Submitted, "#overrides")
    @on(Button.Pressed, "#start")
    def start(self) -> None:
        try:
            overrides = parse_overrides(self.query_one("#overrides", Input).value)
        except Exception as exc:
            self.show_error(str(exc))
            return
        request = StartRequest(
            self.recipe,
            overrides,
            resume=self.query_one("#resume", Checkbox).value,
            overwrite=self.query_one("#overwrite", Checkbox).value,
        )
        self.show_error("checking the recipe…")
        self._validate(request)

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _validate(self, request: StartRequest) -> None:
        try:
            prepared = self.prepare(request)
        except Exception as exc:  # the recipe's error, verbatim: it says file:line:key
            from seqrec_core.errors import SeqrecError

            text = str(exc) if isinstance(exc, SeqrecError) else f"{type(exc).__name__}: {exc}"
            self.app.call_from_thread(self.show_error, text)
            return
        self.app.call_from_thread(self.dismiss, prepared)

    def show_error(self, text: str) -> None:
        self.error_text = text
        self.query_one("#error", Static).update(Text(text))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class ChoiceDialog(ModalScreen[str]):
    """A question with a few buttons; dismisses with the chosen button's id."""

    DEFAULT_CSS = """
    ChoiceDialog { align: center middle; }
    ChoiceDialog > Vertical {
        width: 70; height: auto; border: thick $warning; padding: 0 1; background: $surface;
    }
    ChoiceDialog Horizontal { height: auto; margin: 1 0 0 0; }
    ChoiceDialog Button { margin: 0 1 0 0; }
    """

    BINDINGS = [Binding("escape", "choose('cancel')", "Cancel")]

    def __init__(self, question: str, choices: list[tuple[str, str]]) -> None:
        super().__init__()
        self.question = question
        self.choices = choices  # (id, label); the first is the default

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, id="question")
            with Horizontal():
                for i, (choice, label) in enumerate(self.choices):
                    yield Button(label, id=choice, variant="primary" if i == 0 else "default")

    def on_mount(self) -> None:
        self.query_one(Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id or "cancel")

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)
