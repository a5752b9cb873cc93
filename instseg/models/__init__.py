"""Model parts: ROI mask heads (``instseg.models.mask_heads``) and the detectors that use them."""
