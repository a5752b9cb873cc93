"""Video data: the OccludedShapes-VIS benchmark, YouTube-VIS / MOTS / BDD100K formats, video input."""
