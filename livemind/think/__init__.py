"""LiveThinking: a digital host answering viewer questions from product documents."""
