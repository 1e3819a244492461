"""Data for the generator, importing no model: segments, watch logs and the typed batch containers
(watch), feedback per impression (feedback), the live rooms' identity signals (room_signals) and one
world tokenised and split in time (prepare)."""
