"""OneLive: dynamic tokenizer, generator, constrained decoding, alignment."""
