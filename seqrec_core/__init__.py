"""seqrec: sequential (next-item) recommendation as a plugin library.

``seqrec_core`` is the engine. It knows no dataset or model by name: everything
concrete (datasets, models, metrics, callbacks) arrives through pluggy hooks
declared in :mod:`seqrec_core.hookspecs`.
"""

from importlib.metadata import PackageNotFoundError, version

import pluggy

try:
    __version__ = version("seqrec")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"

#: Decorator for plugin hook implementations: ``@seqrec_core.hookimpl``.
hookimpl = pluggy.HookimplMarker("seqrec")

__all__ = ["__version__", "hookimpl"]
