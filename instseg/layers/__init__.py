"""Reusable layers shared by the methods' heads."""

from instseg.layers.nonlocal_block import NonLocalBlock

__all__ = ["NonLocalBlock"]
