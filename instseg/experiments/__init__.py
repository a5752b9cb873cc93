"""What the notebooks call: one module per table family, plus report writing and paper numbers."""
