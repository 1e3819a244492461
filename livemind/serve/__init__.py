"""The live service: one FastAPI app that ingests the live event stream durably, recommends rooms
live now and lets the host answer viewers. It sits above rec and think (data flows world -> rec |
think -> serve). By subsystem:

- `api`: the HTTP app (factory, wire protocol, guard: keys, origins, body caps and limiters;
  metrics; the console) and its routes;
- `rec`: the recommendation engine (live state, batching, replaying a world over HTTP);
- `host`: the live host (serving, the continuous-batching decoder, livemind's own forward, int8,
  a remote OpenAI-compatible backend, export of a student);
- `scale`: scale-out on Redis Streams (broker, follower, workers, a one-machine cluster);
- `process`: running `livemind serve` as its own process (the demo, benchmarks and tests use it).

Import contracts (pyproject.toml): `host` and `scale` know nothing of `api`; `rec` knows nothing
of `host`.
"""
