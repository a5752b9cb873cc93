"""Reference data shipped with the package: the source text's tables, used only for side-by-side display."""
