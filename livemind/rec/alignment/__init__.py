"""Multi-objective alignment of the generator: the reward model (reward_model), GRPO / DPO against it
(align) and the cached pipeline that the CLI, the demo and the benchmarks share (pipeline)."""
