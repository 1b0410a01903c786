"""Plugin discovery: entry points, broken plugins, name clashes, misspelt hooks,
disabling, and the ``seqrec plugins`` listing."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap

import pytest

import seqrec_core
import seqrec_core.plugins
import seqrec_metrics
import seqrec_pop
from seqrec_core import hookimpl
from seqrec_core.cli import main
from seqrec_core.errors import PluginError, SeqrecError
from seqrec_core.plugins import load_plugins

GROUP = "seqrec"


def real_entry_point(name: str) -> importlib.metadata.EntryPoint:
    """The installed entry point (with its distribution, hence a version)."""
    for ep in importlib.metadata.entry_points(group=GROUP):
        if ep.name == name:
            return ep
    pytest.skip(f"entry point '{name}' is not installed; pip install -e .")


def fake_entry_point(name: str, module: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name=name, value=module, group=GROUP)


@pytest.fixture
def entry_points(monkeypatch):
    """Replace the installed entry points: ``entry_points([...])``. The real
    ``pop`` and ``metrics`` entry points are always included."""
    monkeypatch.delenv("SEQREC_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("SEQREC_DEBUG", raising=False)
    monkeypatch.setenv("COLUMNS", "400")  # rich tables: no wrapping in captured output

    def install(extra=()):
        eps = [real_entry_point("pop"), real_entry_point("metrics"), *extra]
        monkeypatch.setattr(seqrec_core.plugins, "entry_points", lambda group: list(eps))

    install()
    return install


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    """Write an importable module ``name`` with ``source``; removed afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written = []

    def make(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        written.append(name)
        return name

    yield make
    for name in written:
        sys.modules.pop(name, None)


@pytest.fixture
def tmp_plugin(entry_points, plugin_module):
    """A temporary third-party plugin, installed through an entry point for the
    duration of one test (llm-style), providing model ``tmp_model``."""
    module = plugin_module(
        "seqrec_tmp_plugin",
        """
        from seqrec_core import hookimpl
        from seqrec_core.model import Recommender

        __version__ = "9.9"

        class TmpModel(Recommender):
            name = "tmp_model"

        @hookimpl
        def register_models(register):
            register(TmpModel)
        """,
    )
    entry_points([fake_entry_point("tmpplug", module)])
    yield "tmpplug"


def plugin_rows(out: str) -> dict[str, str]:
    """Table rows of ``seqrec plugins`` output by plugin name (first cell)."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if len(cells) > 1 and cells[0]:
            rows[cells[0]] = line
    return rows


# ------------------------------------------------------------------ discovery


def test_entry_point_plugins_load_with_version_and_components(entry_points):
    registry = load_plugins()
    assert registry.names("models") == ["pop"]
    assert "ndcg" in registry.names("metrics")
    pop = registry.plugins["pop"]
    assert pop.version == seqrec_core.__version__ and pop.module == "seqrec_pop"
    assert pop.registered["models"] == ["pop"] and pop.error is None
    assert registry.plugin_of("metrics", "hr") == "metrics"


def test_a_plugin_failing_at_import_is_reported_and_skipped(entry_points, capsys):
    entry_points([fake_entry_point("broken", "some_nonexistent_module")])
    registry = load_plugins()
    err = capsys.readouterr().err
    assert "plugin 'broken' failed to load" in err
    assert "some_nonexistent_module" in err
    info = registry.plugins["broken"]
    assert info.error.startswith("ModuleNotFoundError") and "some_nonexistent_module" in info.error
    # The others still load.
    assert registry.names("models") == ["pop"]
    assert "hr" in registry.names("metrics")
    # Asking for a missing component mentions the broken plugin.
    with pytest.raises(SeqrecError, match=r"broken \(ModuleNotFoundError"):
        registry.get("models", "sasrec")


def test_a_plugin_raising_at_import_is_reported_and_skipped(entry_points, plugin_module, capsys):
    module = plugin_module("seqrec_raises", "raise RuntimeError('boom: no config')\n")
    entry_points([fake_entry_point("raises", module)])
    registry = load_plugins()
    assert registry.plugins["raises"].error == "RuntimeError: boom: no config"
    assert "plugin 'raises' failed to load" in capsys.readouterr().err
    assert registry.names("models") == ["pop"]


def test_a_register_hook_raising_is_reported_and_others_still_register(capsys):
    class Exploding:
        name = "exploding"

        @hookimpl
        def register_models(self, register):
            raise ValueError("weights missing")

    registry = load_plugins(extra=[Exploding(), seqrec_pop], use_entry_points=False)
    assert registry.names("models") == ["pop"]
    assert (
        "register_models raised ValueError: weights missing" in registry.plugins["exploding"].error
    )
    assert "plugin 'exploding'" in capsys.readouterr().err


# ------------------------------------------------------------------ conflicts


def _registering(plugin_name: str, kind: str, component_name: str):
    component = type(component_name.title(), (), {"name": component_name})

    def hook(self, register):
        register(component)

    hook.__name__ = f"register_{kind}"
    return type(plugin_name.title(), (), {"name": plugin_name, hook.__name__: hookimpl(hook)})()


@pytest.mark.parametrize("kind", ["models", "datasets", "splits", "metrics", "callbacks"])
def test_two_plugins_registering_one_name_is_an_error_naming_both(kind, monkeypatch):
    monkeypatch.delenv("SEQREC_DISABLE_PLUGINS", raising=False)
    plugins = [_registering("alpha", kind, "dup"), _registering("beta", kind, "dup")]
    with pytest.raises(PluginError) as info:
        load_plugins(extra=plugins, use_entry_points=False)
    message = str(info.value)
    assert f"{kind[:-1]} 'dup'" in message
    assert "'alpha'" in message and "'beta'" in message
    assert "-p no:" in message  # says how to fix it


def test_one_name_in_two_kinds_is_fine():
    plugins = [_registering("alpha", "models", "same"), _registering("beta", "datasets", "same")]
    registry = load_plugins(extra=plugins, use_entry_points=False)
    assert registry.names("models") == ["same"] and registry.names("datasets") == ["same"]


def test_a_clash_with_a_builtin_names_both(entry_points, plugin_module):
    module = plugin_module(
        "seqrec_other_pop",
        """
        from seqrec_core import hookimpl

        class Pop:
            name = "pop"

        @hookimpl
        def register_models(register):
            register(Pop)
        """,
    )
    entry_points([fake_entry_point("otherpop", module)])
    with pytest.raises(PluginError, match=r"'otherpop'.*'pop'|'pop'.*'otherpop'"):
        load_plugins()
    # Disabling either one resolves the clash.
    assert load_plugins(disabled=["otherpop"]).plugin_of("models", "pop") == "pop"
    assert load_plugins(disabled=["pop"]).plugin_of("models", "pop") == "otherpop"


def test_a_component_without_a_name_is_an_error():
    class Nameless:
        name = "nameless"

        @hookimpl
        def register_models(self, register):
            register(object())

    with pytest.raises(PluginError, match="plugin 'nameless'.*'name'"):
        load_plugins(extra=[Nameless()], use_entry_points=False)


# ------------------------------------------------------------------ misspelt hooks


def test_a_misspelt_hook_fails_at_start_up_with_did_you_mean():
    class Misspelt:
        name = "misspelt"

        @hookimpl
        def register_model(self, register):  # should be register_models
            pass

    with pytest.raises(PluginError) as info:
        load_plugins(extra=[Misspelt(), seqrec_pop], use_entry_points=False)
    message = str(info.value)
    assert "plugin 'misspelt'" in message
    assert "'register_model'" in message
    assert "did you mean 'register_models'?" in message, message


def test_a_misspelt_hook_in_an_entry_point_module_fails_at_start_up(entry_points, plugin_module):
    module = plugin_module(
        "seqrec_misspelt",
        """
        from seqrec_core import hookimpl

        @hookimpl
        def register_dataset(register):
            pass
        """,
    )
    entry_points([fake_entry_point("misspelt", module)])
    with pytest.raises(PluginError) as info:
        load_plugins()
    assert "plugin 'misspelt'" in str(info.value)
    assert "did you mean 'register_datasets'?" in str(info.value), str(info.value)


# ------------------------------------------------------------------ disabling


def test_disable_by_environment_variable(entry_points, monkeypatch):
    monkeypatch.setenv("SEQREC_DISABLE_PLUGINS", " pop , nothing-by-that-name")
    registry = load_plugins()
    assert registry.names("models") == []
    assert registry.plugins["pop"].disabled
    assert not registry.plugins["metrics"].disabled
    assert "hr" in registry.names("metrics")


def test_disable_by_argument_skips_a_broken_plugin_silently(entry_points, capsys):
    entry_points([fake_entry_point("broken", "some_nonexistent_module")])
    registry = load_plugins(disabled=["broken"])
    assert registry.plugins["broken"].disabled and registry.plugins["broken"].error is None
    assert "broken" not in capsys.readouterr().err


def test_disabled_extra_plugin_is_not_registered(monkeypatch):
    monkeypatch.setenv("SEQREC_DISABLE_PLUGINS", "alpha")
    registry = load_plugins(
        extra=[_registering("alpha", "models", "a_model"), seqrec_pop], use_entry_points=False
    )
    assert registry.names("models") == ["pop"]


# ------------------------------------------------------------------ `seqrec plugins`


def test_seqrec_plugins_lists_plugin_version_and_names(entry_points, capsys):
    entry_points([fake_entry_point("broken", "some_nonexistent_module")])
    assert main(["plugins"]) == 0
    rows = plugin_rows(capsys.readouterr().out)
    assert {"pop", "metrics", "broken"} <= set(rows)
    assert seqrec_core.__version__ in rows["pop"]
    assert "seqrec_pop" in rows["pop"] and "ok" in rows["pop"]
    for name in ("hr", "recall", "ndcg", "mrr", "precision", "coverage"):
        assert name in rows["metrics"]
    assert "error" in rows["broken"] and "ModuleNotFoundError" in rows["broken"]


def test_seqrec_plugins_marks_a_cli_disabled_plugin(entry_points, capsys):
    assert main(["-p", "no:pop", "plugins"]) == 0
    rows = plugin_rows(capsys.readouterr().out)
    assert "disabled" in rows["pop"]
    assert "disabled" not in rows["metrics"] and "ok" in rows["metrics"]


def test_seqrec_plugins_marks_an_env_disabled_plugin(entry_points, capsys, monkeypatch):
    monkeypatch.setenv("SEQREC_DISABLE_PLUGINS", "metrics")
    assert main(["plugins"]) == 0
    rows = plugin_rows(capsys.readouterr().out)
    assert "disabled" in rows["metrics"] and "disabled" not in rows["pop"]


def test_seqrec_plugins_shows_error_text_verbatim(entry_points, plugin_module, capsys):
    # Rich markup in an error message ("seqrec[gpu]") must be shown, not parsed.
    module = plugin_module(
        "seqrec_needs_extra", "raise ImportError(\"install it: pip install 'seqrec[gpu]'\")\n"
    )
    entry_points([fake_entry_point("needs_extra", module)])
    assert main(["plugins"]) == 0
    rows = plugin_rows(capsys.readouterr().out)
    assert "seqrec[gpu]" in rows["needs_extra"], rows["needs_extra"]


def test_p_without_no_is_an_error(entry_points, capsys):
    assert main(["-p", "pop", "plugins"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("seqrec: error: -p pop: expected -p no:")


def test_a_misspelt_hook_fails_the_cli_with_one_line(entry_points, plugin_module, capsys):
    module = plugin_module(
        "seqrec_misspelt_cli",
        "from seqrec_core import hookimpl\n\n@hookimpl\ndef register_modles(register):\n    pass\n",
    )
    entry_points([fake_entry_point("typo", module)])
    assert main(["plugins"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("seqrec: error: plugin 'typo'")


# ------------------------------------------------------------------ temporary plugin


def test_a_temporary_plugin_is_listed_and_usable(tmp_plugin, capsys):
    assert main(["plugins"]) == 0
    row = plugin_rows(capsys.readouterr().out)[tmp_plugin]
    assert "tmp_model" in row and "seqrec_tmp_plugin" in row and "ok" in row
    registry = load_plugins()
    assert registry.plugin_of("models", "tmp_model") == tmp_plugin
    assert registry.plugins[tmp_plugin].version == ""  # a fake entry point has no distribution
    model = registry.get("models", "tmp_model")(None, 5)
    assert model.n_items == 5 and not model.trainable


def test_registries_share_no_state():
    first = load_plugins(
        extra=[_registering("alpha", "models", "only_here"), seqrec_metrics],
        use_entry_points=False,
    )
    second = load_plugins(extra=[seqrec_metrics], use_entry_points=False)
    assert "only_here" in first.names("models")
    assert second.names("models") == [] and "alpha" not in second.plugins
