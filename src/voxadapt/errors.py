"""Exceptions that carry a user-facing message; the CLI prints them as one line."""


class VoxadaptError(Exception):
    """A problem the user can fix (bad path, bad option, bad input); printed without a traceback."""


class ConfigError(VoxadaptError):
    """Invalid or conflicting configuration; the message lists every problem found."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class SourceError(VoxadaptError):
    """The input dataset (SOURCE) cannot be read at all."""


class ManifestError(VoxadaptError):
    """A manifest file is missing or malformed."""


class StageInterrupted(VoxadaptError):
    """Ctrl-C or SIGTERM ended a stage at a safe point; the message says how to continue."""


class NothingKeptError(VoxadaptError):
    """Every input item was rejected."""


class ModelError(VoxadaptError):
    """The model or adapter cannot be used (no projector, wrong quantization, a LoRA target
    that names no layer, a part that would train although not chosen, a model of no
    supported family...)."""
