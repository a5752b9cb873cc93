"""Matplotlib drawing and ipywidgets viewers; every viewer has a static fallback for headless runs."""
