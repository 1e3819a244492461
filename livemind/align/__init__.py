"""What OneLive's alignment and LiveThinking's GRPO share: several objectives combined with explicit
weights, group-relative advantages and the clipped policy loss (plus DPO). A leaf: it imports
nothing from `rec` or `think`."""
