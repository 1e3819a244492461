"""The scale-out layer's errors, importable without its optional dependency (redis)."""

from livemind.errors import LivemindError


class BrokerError(LivemindError):
    """Redis could not be reached or refused a command (the service answers 503)."""
