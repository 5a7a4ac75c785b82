"""Project errors: each says what is wrong, the value seen and the fix, on one line."""


class ImgradeError(ValueError):
    """Bad input from the user (a file, a flag, a config value). The CLI prints it and exits 2."""


class DataError(ImgradeError):
    """A data set, image or label file cannot be used as it is."""


class ConfigError(ImgradeError):
    """A config value or command-line flag is invalid."""


class CheckpointError(ImgradeError):
    """A run folder or checkpoint is missing, corrupt or of another format version."""


class OutputError(ImgradeError):
    """An output file cannot be written (disk full, read-only folder, no permission)."""
