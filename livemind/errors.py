"""Exceptions that carry a message a user can act on.

Every error names the bad value and what was expected; the CLI prints the message as one line
and exits with code 2, the server (later) turns it into an HTTP 4xx with a JSON body.
"""


class LivemindError(Exception):
    """Base class for errors caused by bad input rather than by a bug."""


class ConfigError(LivemindError):
    """A configuration value is missing, unknown or out of range."""


class DataError(LivemindError):
    """Input data (a file, a row, an event batch) is malformed or inconsistent."""
