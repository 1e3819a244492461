"""The recommendation engine behind the service: live state from the durable log, batched decoding,
and replaying a recorded world into a running service."""
