"""OneLive's dynamic tokenizer: segment text -> content vector (content), fused with behaviour
(fusion), residual-quantised into a semantic ID (rq); the stateful per-room tokenizer (dynamic),
its fit on a recorded world (fit) and its report (report)."""
