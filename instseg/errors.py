"""One exception type for bad user input, so the CLI can report it in one line and exit 2."""

from __future__ import annotations

from os import PathLike


class InputError(ValueError):
    """Bad input data. The message names the file and, where known, the record."""

    def __init__(self, problem: str, path: str | PathLike | None = None, record: str | None = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        self.record = record
        parts = [p for p in (self.path, record) if p]
        super().__init__(": ".join(parts + [problem]))
