"""livemind: real-time AI for live-stream commerce (OneLive recommendation, LiveThinking host answers)."""

__version__ = "0.1.0"
