"""instseg: occlusion-aware instance segmentation workbook (BCNet, CPMask, PCAN, VOIN)."""

from instseg.numerics import flush_denormals

__version__ = "0.1.0"

flush_denormals()  # before any torch thread starts: see instseg/numerics.py
