# ---------------------------------------------------------------------------
# Protocol tests (test_recipe, test_pop, test_plugins): a small in-test plugin,
# so these tests depend on no real dataset plugin. Imports stay inside the
# functions because other helpers append to this file too.
import pytest  # noqa: E402

#: docs/protocol.md, section 11 — (user, item, timestamp) in file order.
WORKED_EXAMPLE_ROWS = [
    ("alice", 30, 5),
    ("alice", 10, 1),
    ("alice", 20, 5),
    ("alice", 40, 9),
    ("bob", 20, 2),
    ("bob", 10, 3),
    ("bob", 30, 4),
    ("carol", 20, 1),
    ("carol", 40, 2),
]


def make_inline_plugin() -> object:
    """A plugin with dataset ``inline`` (rows given in the recipe), model ``toy``
    (options dim, max_len, dropout) and callback ``noop`` (option every)."""
    import hashlib
    import json

    import pandas as pd
    import torch
    from pydantic import BaseModel, ConfigDict, Field

    from seqrec_core import hookimpl
    from seqrec_core.data import RawData
    from seqrec_core.model import Recommender

    class InlineOptions(BaseModel):
        model_config = ConfigDict(extra="forbid")
        rows: list[tuple[int | str, int | str, float]] = Field(
            default_factory=lambda: list(WORKED_EXAMPLE_ROWS)
        )

    class InlineDataset:
        name = "inline"
        Options = InlineOptions

        def load(self, options: InlineOptions) -> RawData:
            df = pd.DataFrame(options.rows, columns=["user", "item", "timestamp"])
            return RawData(interactions=df)

        def fingerprint(self, options: InlineOptions) -> str:
            return hashlib.sha256(json.dumps(options.rows).encode()).hexdigest()

    class ToyOptions(BaseModel):
        model_config = ConfigDict(extra="forbid")
        dim: int = 8
        max_len: int = 20
        dropout: float = 0.1

    class ToyModel(Recommender):
        name = "toy"
        Options = ToyOptions
        objective = "none"

        def predict(self, seqs: torch.Tensor) -> torch.Tensor:
            return torch.zeros(seqs.shape[0], self.n_items + 1)

    class NoopOptions(BaseModel):
        model_config = ConfigDict(extra="forbid")
        every: int = 1

    class NoopCallback:
        name = "noop"
        Options = NoopOptions

        def __init__(self, options: NoopOptions):
            self.options = options

    class InlinePlugin:
        name = "inline_test"

        @hookimpl
        def register_datasets(self, register):
            register(InlineDataset)

        @hookimpl
        def register_models(self, register):
            register(ToyModel)

        @hookimpl
        def register_callbacks(self, register):
            register(NoopCallback)

    return InlinePlugin()


@pytest.fixture
def inline_plugin() -> object:
    return make_inline_plugin()


@pytest.fixture
def core_registry(inline_plugin, monkeypatch, tmp_path):
    """Registry of the inline test plugin plus the real metrics and POP plugins,
    with no entry points, no env-disabled plugins and a private data cache."""
    import seqrec_metrics
    import seqrec_pop
    from seqrec_core.plugins import load_plugins

    monkeypatch.delenv("SEQREC_DISABLE_PLUGINS", raising=False)
    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))
    return load_plugins(extra=[inline_plugin, seqrec_metrics, seqrec_pop], use_entry_points=False)


# ---------------------------------------------------------------------------
# Dataset plugin tests (test_dataset_*): run a dataset plugin's RawData through
# the core the way seqrec_core.data.load_dataset does.


@pytest.fixture
def raw_to_sequences():
    """``build(name, raw) -> SequenceData``: validate + build_sequences, no filters."""
    from seqrec_core.data import build_sequences
    from seqrec_core.data.core import validate_interactions

    def build(name, raw):
        df = validate_interactions(raw.interactions, f"dataset '{name}'")
        return build_sequences(name, df, raw.items, raw.users)

    return build


@pytest.fixture
def load_via_pipeline(monkeypatch, tmp_path):
    """``load(plugin_module, name, options, **filters) -> SequenceData`` through
    the plugin registry and ``load_dataset`` with a private on-disk cache."""
    from types import SimpleNamespace

    from seqrec_core.data import load_dataset
    from seqrec_core.plugins import load_plugins

    monkeypatch.delenv("SEQREC_DISABLE_PLUGINS", raising=False)
    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))

    def load(plugin_module, name, options, use_cache=True, **filters):
        registry = load_plugins(extra=[plugin_module], use_entry_points=False)
        section = {"name": name, "min_rating": None, "user_core": 0, "item_core": 0, "cache": True}
        section.update(filters)
        recipe = SimpleNamespace(dataset=SimpleNamespace(**section), dataset_options=options)
        return load_dataset(recipe, registry, use_cache=use_cache)

    return load


@pytest.fixture
def worked_example_rows() -> list[tuple]:
    """The (user, item, timestamp) rows of docs/protocol.md, section 11."""
    return list(WORKED_EXAMPLE_ROWS)


@pytest.fixture
def cli_registry(monkeypatch, inline_plugin, tmp_path):
    """Make ``seqrec_core.cli.main`` build its registry from the inline test
    plugin plus the real metrics and POP plugins (no entry points)."""
    import seqrec_core.cli
    import seqrec_metrics
    import seqrec_pop
    from seqrec_core.plugins import load_plugins

    monkeypatch.delenv("SEQREC_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("SEQREC_DEBUG", raising=False)
    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))

    def fake_load_plugins(disabled=(), **_):
        return load_plugins(
            disabled=disabled,
            extra=[inline_plugin, seqrec_metrics, seqrec_pop],
            use_entry_points=False,
        )

    monkeypatch.setattr(seqrec_core.cli, "load_plugins", fake_load_plugins)
