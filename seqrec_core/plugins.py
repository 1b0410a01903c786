"""Plugin discovery and the component registry.

Plugins are found through the ``seqrec`` entry-point group (built-ins are
registered there too). A plugin that fails to import is reported and skipped;
the others still load. Unknown hook implementations (a misspelt
``register_model``) fail at start-up via ``check_pending``. Plugins can be
disabled by name with ``SEQREC_DISABLE_PLUGINS=a,b`` or ``-p no:a`` on the CLI.
"""

from __future__ import annotations

import difflib
import os
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy
from pydantic import BaseModel, ConfigDict

from seqrec_core import hookspecs
from seqrec_core.errors import PluginError, SeqrecError

ENTRY_POINT_GROUP = "seqrec"
DISABLE_ENV = "SEQREC_DISABLE_PLUGINS"
KINDS = ("datasets", "splits", "models", "metrics", "callbacks")


class NoOptions(BaseModel):
    """Options schema for components that take none."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class PluginInfo:
    """What ``seqrec plugins`` shows for one plugin."""

    name: str
    version: str = ""
    module: str = ""
    error: str | None = None
    disabled: bool = False
    registered: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})


@dataclass
class Entry:
    component: Any
    plugin: str


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def options_schema(component: Any) -> type[BaseModel]:
    return getattr(component, "Options", None) or NoOptions


class Registry:
    """Components by kind and name, with the plugin that registered each."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
        self.plugins: dict[str, PluginInfo] = {}
        self.pm: pluggy.PluginManager | None = None

    def add(self, kind: str, component: Any, plugin: str, name: str | None = None) -> None:
        name = name or getattr(component, "name", None)
        if not name or not isinstance(name, str):
            raise PluginError(
                f"plugin '{plugin}' registered a {kind[:-1]} without a string 'name' attribute: "
                f"{component!r}"
            )
        existing = self._entries[kind].get(name)
        if existing is not None:
            raise PluginError(
                f"{kind[:-1]} '{name}' is registered by both plugin '{existing.plugin}' and "
                f"plugin '{plugin}'; disable one with -p no:<plugin> or {DISABLE_ENV}=<plugin>"
            )
        self._entries[kind][name] = Entry(component, plugin)
        if plugin in self.plugins:
            self.plugins[plugin].registered[kind].append(name)

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def plugin_of(self, kind: str, name: str) -> str:
        return self._entries[kind][name].plugin

    def get(self, kind: str, name: str) -> Any:
        """The component called ``name``; a clear error naming the choices if absent."""
        try:
            return self._entries[kind][name].component
        except KeyError:
            pass
        choices = self.names(kind)
        msg = (
            f"unknown {kind[:-1]} '{name}'{did_you_mean(name, choices)}; "
            f"available: {', '.join(choices) or 'none'}"
        )
        broken = [p for p in self.plugins.values() if p.error]
        if broken:
            msg += "; plugins that failed to load: " + ", ".join(
                f"{p.name} ({p.error})" for p in broken
            )
        raise SeqrecError(msg)


def _plugin_name(pm: pluggy.PluginManager, plugin: object) -> str:
    return pm.get_name(plugin) or getattr(plugin, "__name__", repr(plugin))


def check_hooks(pm: pluggy.PluginManager, spec: type, prefix: str) -> None:
    """``pm.check_pending()`` with a one-line error naming the plugin, the
    misspelt hook and the closest real hook."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        bad = _plugin_name(pm, exc.plugin)
        known = [n for n in dir(spec) if n.startswith(prefix)]
        unknown = [
            attr
            for attr in dir(exc.plugin)
            if attr.startswith(("register", "on_"))
            and callable(getattr(exc.plugin, attr))
            and not hasattr(spec, attr)
        ]
        hint = "; ".join(f"'{u}'{did_you_mean(u, known)}" for u in unknown)
        raise PluginError(
            f"plugin '{bad}' implements unknown hook {hint or str(exc)}; "
            f"known hooks: {', '.join(known)}"
        ) from exc


def disabled_from_env() -> set[str]:
    return {p.strip() for p in os.environ.get(DISABLE_ENV, "").split(",") if p.strip()}


def load_plugins(
    disabled: Iterable[str] = (),
    extra: Iterable[object] = (),
    use_entry_points: bool = True,
) -> Registry:
    """Discover plugins and collect every registered component.

    ``disabled`` plugin names are skipped (in addition to ``SEQREC_DISABLE_PLUGINS``).
    ``extra`` plugin objects (modules or instances with hook implementations) are
    registered as well — tests use this to add a temporary plugin.
    """
    disabled = set(disabled) | disabled_from_env()
    registry = Registry()
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs.RegistrationSpec)
    registry.pm = pm

    if use_entry_points:
        seen: set[str] = set()
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in seen:  # the same distribution visible twice on sys.path
                continue
            seen.add(ep.name)
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                name=ep.name,
                version=getattr(dist, "version", "") or "",
                module=ep.value,
                disabled=ep.name in disabled,
            )
            registry.plugins[ep.name] = info
            if info.disabled:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must not stop the others
                info.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
                print(
                    f"seqrec: warning: plugin '{ep.name}' failed to load and is skipped: "
                    f"{info.error}",
                    file=sys.stderr,
                )
                if os.environ.get("SEQREC_DEBUG"):
                    traceback.print_exc()
                continue
            pm.register(plugin, name=ep.name)

    for plugin in extra:
        name = getattr(plugin, "name", None) or getattr(plugin, "__name__", None) or repr(plugin)
        if name in disabled:
            continue
        if pm.is_registered(plugin) or pm.get_plugin(name) is not None:
            raise PluginError(
                f"plugin '{name}' is registered twice (installed and passed again?); "
                "register it once"
            )
        pm.register(plugin, name=name)
        registry.plugins[name] = PluginInfo(
            name=name,
            version=str(getattr(plugin, "__version__", "")),
            module=getattr(plugin, "__module__", "") or name,
        )

    check_hooks(pm, hookspecs.RegistrationSpec, "register_")

    for kind in KINDS:
        hook = getattr(pm.hook, f"register_{kind}")
        for impl in hook.get_hookimpls():  # registration order
            plugin = impl.plugin_name

            def register(component: Any, name: str | None = None, _p=plugin, _k=kind) -> None:
                registry.add(_k, component, _p, name)

            if plugin not in registry.plugins:
                registry.plugins[plugin] = PluginInfo(name=plugin)
            try:
                impl.function(register=register)
            except SeqrecError:
                raise
            except Exception as exc:
                info = registry.plugins[plugin]
                info.error = f"register_{kind} raised {type(exc).__name__}: {exc}".splitlines()[0]
                print(f"seqrec: warning: plugin '{plugin}': {info.error}", file=sys.stderr)
    _add_default_split(registry)
    return registry


def _add_default_split(registry: Registry) -> None:
    """The protocol's default split works without any split plugin (a registry
    built for a test, ``-p no:splits``): core's leave-one-out stands in."""
    from seqrec_core.data.splits import DEFAULT_SPLIT, LeaveOneOut  # numpy: only when loading

    if DEFAULT_SPLIT not in registry.names("splits"):
        registry.add("splits", LeaveOneOut, "seqrec_core")
