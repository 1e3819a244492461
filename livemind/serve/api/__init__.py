"""The HTTP API of the live service: the app factory, the wire protocol, the guard (keys, origins,
body caps, limiters), metrics, the console, and the host's routes."""
