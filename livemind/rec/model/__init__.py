"""The OneLive generator (generator), constrained decoding over live rooms (beam), the live-room
prior's refit (prior), training (train) and the checkpoint format shared with alignment (checkpoint)."""
