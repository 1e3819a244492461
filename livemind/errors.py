"""Exceptions that carry a message a user can act on.

Every error names the bad value and what was expected; the CLI prints the message as one line
and exits with code 2, the server turns it into an HTTP 4xx with a JSON body.
"""


class LivemindError(Exception):
    """Base class for errors caused by bad input rather than by a bug."""


class ConfigError(LivemindError):
    """A configuration value is missing, unknown or out of range."""


class DataError(LivemindError):
    """Input data (a file, a row, an event batch) is malformed or inconsistent."""


class MissingExtra(ConfigError):
    """A feature's optional dependency is not installed: the message names the extra to install."""


def need(module: str, extra: str, feature: str):
    """`module`, imported, or a MissingExtra naming the extra that installs it.

    >>> need("json", "none", "parsing").__name__
    'json'
    >>> need("no_such_module_here", "train", "training")
    Traceback (most recent call last):
    ...
    livemind.errors.MissingExtra: training needs the optional dependency 'no_such_module_here': pip install "livemind[train]"
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(f'{feature} needs the optional dependency {module!r}: pip install "livemind[{extra}]"') from None
