"""Baselines on the same data and evaluation as OneLive: SASRec (sasrec), SASRec and its LiveRec-style
variant on the live world (live_sasrec), live popularity (popularity)."""
