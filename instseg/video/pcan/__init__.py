"""PCAN (thesis chapter 5.2): prototypical cross-attention at frame and instance level on top of
the QDTrack-style tracker, trained on the frozen image detector's cached FPN features."""
