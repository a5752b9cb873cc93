"""Video evaluation: YouTube-VIS and MOTS metrics, and identity recovery after full occlusion."""
