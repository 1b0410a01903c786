"""User-facing errors.

Every error a user can fix is a :class:`SeqrecError`: its message is one line
that says what is wrong, where (file, line, key) and what would fix it. The CLI
prints it without a traceback unless ``--debug`` is given.
"""


class SeqrecError(Exception):
    """An error the user can fix; ``str(err)`` is the whole message."""


class RecipeError(SeqrecError):
    """The recipe (YAML or an override) is invalid."""


class PluginError(SeqrecError):
    """A plugin failed to load or conflicts with another plugin."""


class DataError(SeqrecError):
    """A data file is missing or malformed, or filtering left nothing."""
