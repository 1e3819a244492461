"""The live service (coming): one FastAPI app that ingests the live event stream, recommends rooms
live now and lets the host answer viewers. It sits above rec and think (data flows world -> rec |
think -> serve)."""
