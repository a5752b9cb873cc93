"""Layers of chapter 5: PCAN's prototypical attention and the attention baselines it is measured against."""
