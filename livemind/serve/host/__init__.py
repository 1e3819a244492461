"""The live host: answering viewers about the card on screen, on livemind's continuous-batching
decoder and own forward (int8 on the CPU), or on a remote OpenAI-compatible server."""
