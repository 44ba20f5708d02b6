"""Error types. `InputError` and its subclasses mean bad user input: the CLI prints them and exits 2."""

from __future__ import annotations


class InputError(Exception):
    """Bad input from the user, optionally located at a file and line (1-based)."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.path = path
        self.line = line
        super().__init__(str(self))

    def __reduce__(self) -> tuple[type[InputError], tuple[str, str | None, int | None]]:
        """Pickled whole (a worker process' error keeps its file and line)."""
        return (type(self), (self.message, self.path, self.line))

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line is not None else f"{self.path}: "
        return f"{where}{self.message}"


class NBestFormatError(InputError):
    """A malformed Moses n-best line."""


class CheckpointError(InputError):
    """A checkpoint that cannot be read or does not fit the other inputs."""
