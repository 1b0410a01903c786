"""The recommendation console: a checkpoint, a history, its top-10.

Everything goes through :func:`seqrec_core.recommend.load_for_inference` and
:func:`seqrec_core.recommend.top_k`, so it works for any model plugin, a
third-party one included, as long as the plugin is installed. Loading, search
and scoring run in thread workers; the UI never waits on the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Checkbox, DataTable, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from seqrec_core.recommend import Recommendation, load_for_inference, top_k

K = 10
SEARCH_LIMIT = 20


@dataclass
class Loaded:
    """A checkpoint ready for inference."""

    path: Path
    model: Any
    catalogue: Any
    histories: Any
    meta: dict


class SearchInput(Input):
    """Title search; ↑/↓ move through the results, Enter adds the highlighted one."""

    BINDINGS = [
        Binding("down", "move(1)", "Next result", show=False),
        Binding("up", "move(-1)", "Previous result", show=False),
    ]

    class Move(Message):
        def __init__(self, step: int) -> None:
            super().__init__()
            self.step = step

    def action_move(self, step: int) -> None:
        self.post_message(self.Move(step))


class HistoryList(OptionList):
    """The history being scored, most recent first; Delete removes an item."""

    BINDINGS = [
        Binding("delete,backspace,x", "remove", "Remove item"),
        Binding("c", "clear", "Clear history"),
    ]

    class Remove(Message):
        def __init__(self, position: int | None) -> None:
            super().__init__()
            self.position = position  # index in the displayed (most recent first) list

    def action_remove(self) -> None:
        self.post_message(self.Remove(self.highlighted))

    def action_clear(self) -> None:
        self.post_message(self.Remove(None))


class RecommendPane(Vertical):
    """Checkpoint picker, user id or title search, history, top-10."""

    DEFAULT_CSS = """
    RecommendPane { height: 1fr; }
    RecommendPane Horizontal { height: auto; }
    RecommendPane .field { width: auto; padding: 0 1 0 0; }
    RecommendPane #ckpt-path { width: 1fr; }
    RecommendPane #user { width: 14; }
    RecommendPane #search { width: 1fr; }
    RecommendPane #info { height: auto; max-height: 2; color: $text-muted; }
    RecommendPane #info.-error { color: $error; text-style: bold; }
    RecommendPane #body { height: 1fr; }
    RecommendPane #left { width: 26; height: 1fr; }
    RecommendPane #results { height: 6; border: none; text-wrap: nowrap; text-overflow: ellipsis; }
    RecommendPane #history { height: 1fr; border: none; text-wrap: nowrap; text-overflow: ellipsis; }
    RecommendPane #right { width: 1fr; height: 1fr; }
    RecommendPane #top { height: 1fr; }
    RecommendPane .heading { text-style: bold; background: $boost; width: 1fr; }
    """

    BINDINGS = [
        Binding("ctrl+o", "focus_field('ckpt-path')", "Checkpoint"),
        Binding("ctrl+g", "focus_field('user')", "User"),
        Binding("ctrl+f", "focus_field('search')", "Search"),
        Binding("ctrl+t", "toggle_seen", "Hide seen"),
    ]

    loaded: reactive[Loaded | None] = reactive(None, init=False)
    history: reactive[list[int]] = reactive(list, always_update=True, init=False)
    hide_seen: reactive[bool] = reactive(False, init=False)

    def __init__(self, registry_factory, **kwargs) -> None:
        super().__init__(**kwargs)
        self._registry = registry_factory
        self.results: list[tuple[int, str]] = []
        self.recs: list[Recommendation] = []
        self.info_text = ""
        self.user: str | None = None
        self._loading: Path | None = None

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Label("checkpoint ", classes="field")
            yield Input(
                placeholder="path to best.safetensors (Enter loads)", id="ckpt-path", compact=True
            )
        yield Static("no checkpoint loaded — pick one on Home (1) or type its path", id="info")
        with Horizontal():
            yield Label("user ", classes="field")
            yield Input(placeholder="user id", id="user", compact=True)
            yield Label(" title ", classes="field")
            yield SearchInput(placeholder="search titles, Enter adds", id="search", compact=True)
            yield Checkbox("hide seen", id="hide-seen", compact=True)
        with Horizontal(id="body"):
            with Vertical(id="left"):
                yield Label("search results", classes="heading", id="results-label")
                yield OptionList(id="results")
                yield Label("history, newest first", classes="heading", id="history-label")
                yield HistoryList(id="history")
            with Vertical(id="right"):
                yield Label("top-10", classes="heading", id="top-label")
                yield DataTable(id="top", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self._set_columns()

    def _set_columns(self) -> None:
        table = self.query_one("#top", DataTable)
        table.clear(columns=True)
        # Fit the title column to the table so the numbers stay visible at 80 columns.
        width = max(12, table.size.width - 24) if table.size.width else 30
        table.add_column("#", key="rank", width=2)
        table.add_column("title", key="title", width=width)
        table.add_column("score", key="score", width=6)
        table.add_column("prob.", key="prob", width=6)

    def on_resize(self) -> None:
        self.call_after_refresh(self._show_recs)

    # ------------------------------------------------------------------ loading
    def load(self, path: str | Path) -> None:
        path = Path(path).expanduser()
        self._loading = path
        self.query_one("#ckpt-path", Input).value = str(path)
        self._info(f"loading {path}…")
        self.run_worker(
            lambda: self._load(path),
            thread=True,
            exclusive=True,
            group="load",
            exit_on_error=False,
        )

    def _load(self, path: Path) -> None:
        try:
            model, catalogue, histories, ckpt = load_for_inference(path, self._registry())
        except Exception as exc:  # a user's file: any failure is a message, not a crash
            self.app.call_from_thread(self._loaded, path, None, _error(exc))
            return
        self.app.call_from_thread(
            self._loaded, path, Loaded(path, model, catalogue, histories, ckpt.meta), ""
        )

    def _loaded(self, path: Path, loaded: Loaded | None, error: str) -> None:
        if path != self._loading:
            return  # another checkpoint was asked for meanwhile
        if loaded is None:
            if self.loaded is not None:
                error += f" (still using {self.loaded.path})"
            self._info(error, True)
        else:
            self.loaded = loaded

    def watch_loaded(self, loaded: Loaded | None) -> None:
        if loaded is None:
            return
        meta = loaded.meta
        users = (
            f"{len(loaded.histories.user_ids):,} users"
            if loaded.histories is not None
            else "no histories.safetensors: build a history by title"
        )
        name = meta.get("model", {}).get("name", "?")
        dataset = meta.get("dataset", {}).get("name", "?")
        self._info(
            f"{name} on {dataset} · {loaded.catalogue.n_items:,} items · {users} · "
            f"epoch {meta.get('epoch', '?')}"
        )
        self.user = None
        self.history = []
        self._update_results("")
        search = self.query_one("#search", Input)
        search.value = ""
        if self.app.focused is self.query_one("#ckpt-path"):
            search.focus()  # next step: find a title (or ctrl+g for a user)

    # ------------------------------------------------------------------ inputs
    @on(Input.Submitted, "#ckpt-path")
    def _path_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.load(event.value.strip())

    @on(Input.Submitted, "#user")
    def _user_submitted(self, event: Input.Submitted) -> None:
        self.choose_user(event.value.strip())

    def choose_user(self, user: str) -> None:
        loaded = self.loaded
        if loaded is None:
            self._info("load a checkpoint first", True)
            return
        if loaded.histories is None:
            self._info(
                f"{loaded.path}: no histories.safetensors beside it, so users are unknown; "
                "build a history by searching titles",
                True,
            )
            return
        try:
            history = loaded.histories.of(user)
        except Exception as exc:
            self._info(_error(exc), True)
            return
        self.user = user
        self.history = history
        self._info(f"user {user}: {len(history)} items in history")

    @on(Input.Changed, "#search")
    def _search_changed(self, event: Input.Changed) -> None:
        self._update_results(event.value)

    def _update_results(self, query: str) -> None:
        loaded = self.loaded
        if loaded is None or not query.strip():
            self._show_results([], "")
            return
        catalogue = loaded.catalogue

        def search() -> None:
            hits = catalogue.search(query, limit=SEARCH_LIMIT)
            self.app.call_from_thread(self._show_results, hits, query)

        self.run_worker(search, thread=True, exclusive=True, group="search", exit_on_error=False)

    def _show_results(self, hits: list[tuple[int, str]], query: str) -> None:
        if query != self.query_one("#search", Input).value and query:
            return  # a slower search for an earlier prefix: the newer one wins
        self.results = hits
        results = self.query_one("#results", OptionList)
        results.clear_options()
        label = self.query_one("#results-label", Label)
        if hits:
            results.add_options(Option(_line(title), id=str(i)) for i, title in hits)
            results.highlighted = 0
            label.update(f"search results ({len(hits)})")
        elif query.strip():
            label.update(f"no title matches {query.strip()!r}")
        else:
            label.update("search results")

    @on(SearchInput.Move)
    def _move(self, event: SearchInput.Move) -> None:
        results = self.query_one("#results", OptionList)
        if results.option_count:
            current = results.highlighted or 0
            results.highlighted = max(0, min(results.option_count - 1, current + event.step))

    @on(Input.Submitted, "#search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        results = self.query_one("#results", OptionList)
        if self.loaded is None:
            self._info("load a checkpoint first", True)
        elif not self.results or results.highlighted is None:
            self._info(f"no title matches {event.value.strip()!r}", True)
        else:
            self.add_item(self.results[results.highlighted][0])

    @on(OptionList.OptionSelected, "#results")
    def _result_clicked(self, event: OptionList.OptionSelected) -> None:
        self.add_item(int(event.option.id))

    def add_item(self, item: int) -> None:
        """Append an item (internal id) as the most recent one in the history."""
        self.history = [*self.history, item]
        if self.loaded is not None:
            self._info(f"added {self.loaded.catalogue.titles[item]!r}")

    @on(HistoryList.Remove)
    def _remove(self, event: HistoryList.Remove) -> None:
        if event.position is None:
            self.history = []
        elif 0 <= event.position < len(self.history):
            index = len(self.history) - 1 - event.position  # displayed most recent first
            self.history = self.history[:index] + self.history[index + 1 :]

    @on(Checkbox.Changed, "#hide-seen")
    def _seen_changed(self, event: Checkbox.Changed) -> None:
        self.hide_seen = event.value

    def action_focus_field(self, field: str) -> None:
        self.query_one(f"#{field}").focus()

    def action_toggle_seen(self) -> None:
        box = self.query_one("#hide-seen", Checkbox)
        box.value = not box.value

    # ------------------------------------------------------------------ scoring
    def watch_history(self, history: list[int]) -> None:
        loaded = self.loaded
        listing = self.query_one("#history", HistoryList)
        keep = listing.highlighted
        listing.clear_options()
        if loaded is not None:
            titles = loaded.catalogue.titles
            listing.add_options(
                Option(_line(f"{n:>3} {titles[i]}"))
                for n, i in enumerate(reversed(history), start=1)
            )
            if keep is not None and listing.option_count:
                listing.highlighted = min(keep, listing.option_count - 1)
        who = f"user {self.user}" if self.user is not None else "your history"
        self.query_one("#history-label", Label).update(f"{who}, newest first")
        self._score()

    def watch_hide_seen(self, hide: bool) -> None:
        self._score()

    def _score(self) -> None:
        loaded, history, hide = self.loaded, list(self.history), self.hide_seen
        if loaded is None or not history:
            self.recs = []
            self._show_recs()
            return

        def score() -> None:
            try:
                recs = top_k(
                    loaded.model, history, K, exclude_seen=hide, catalogue=loaded.catalogue
                )
            except Exception as exc:
                self.app.call_from_thread(self._info, f"scoring failed: {_error(exc)}", True)
                return
            self.app.call_from_thread(self._set_recs, recs, (loaded, history, hide))

        self.run_worker(score, thread=True, exclusive=True, group="score", exit_on_error=False)

    def _set_recs(self, recs: list[Recommendation], inputs: tuple) -> None:
        if inputs != (self.loaded, list(self.history), self.hide_seen):
            return  # scored for a history that has changed since; a newer worker follows
        self.recs = recs
        self._show_recs()

    def _show_recs(self) -> None:
        self._set_columns()
        table = self.query_one("#top", DataTable)
        seen = set(self.history)
        for r in self.recs:
            style = "dim" if r.item in seen else ""
            table.add_row(
                Text(str(r.rank), justify="right"),
                Text(r.title, style=style, overflow="ellipsis", no_wrap=True),
                Text(f"{r.score:.2f}", justify="right"),
                Text(f"{r.probability:.4f}", justify="right"),
                key=str(r.item),
            )
        hidden = " · seen hidden" if self.hide_seen else ""
        self.query_one("#top-label", Label).update(f"top-{K}{hidden}")

    def _info(self, text: str, error: bool = False) -> None:
        self.info_text = text
        info = self.query_one("#info", Static)
        info.update(Text(text))
        info.set_class(error, "-error")
        if error:
            self.app.notify(text, severity="error", timeout=6)


def _line(text: str) -> Text:
    """One line, cut with an ellipsis: more titles fit in a narrow list."""
    return Text(text, no_wrap=True, overflow="ellipsis")


def _error(exc: BaseException) -> str:
    from seqrec_core.errors import SeqrecError

    if isinstance(exc, SeqrecError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
