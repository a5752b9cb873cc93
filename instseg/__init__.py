"""instseg: occlusion-aware instance segmentation workbook (BCNet, CPMask, PCAN, VOIN)."""

__version__ = "0.1.0"
