"""Loaders that read public live-streaming and sequence datasets into `WorldData`.

- `load_twitch`: the Twitch data of Rappaz et al. (RecSys 2021), headerless CSV
  `user,stream,streamer,start,stop` with times in 10-minute steps.
- `load_kuailive`: KuaiLive (2025) CSV files (`room.csv`/`mapped_room.csv`, `click.csv`, `comment.csv`,
  `like.csv`, `gift.csv`, `streamer.csv`/`author.csv`, `user.csv`), millisecond timestamps.
- `load_sequences` / `read_sequences`: SASRec-style `user item` lines, each user's lines in time order.

Bad rows raise a DataError naming the file, line and value; with `skip_bad=True` they are
skipped and counted in `world.meta["skipped_rows"]`.
"""

from livemind.world.datasets.kuailive import load_kuailive
from livemind.world.datasets.sequences import load_sequences, read_sequences
from livemind.world.datasets.twitch import load_twitch

__all__ = ["load_kuailive", "load_sequences", "load_twitch", "read_sequences"]
