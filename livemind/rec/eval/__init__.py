"""Evaluation: offline next-room evaluation on live rooms (offline), the simulated online A/B
(abtest), and the public sequence protocols (protocol, sequences)."""
