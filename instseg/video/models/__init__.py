"""Video models: trackers, and tracking by detection with a frozen image detector."""
