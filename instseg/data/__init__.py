"""Data: the OccludedShapes benchmark, COCO-style readers and writers, occlusion targets."""
