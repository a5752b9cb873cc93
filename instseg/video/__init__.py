"""Chapter 5: video instance segmentation, tracking and inpainting (PCAN, VOIN) and what they stand
on: the OccludedShapes-VIS benchmark, video formats, evaluators, trackers and video inference.

Why a package of its own: the image stages of the pipeline depend on the image packages only, so
video work never invalidates a trained image detector or an image notebook.
"""
