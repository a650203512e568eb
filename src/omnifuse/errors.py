"""The project's own error types: each carries one line saying what went wrong and where."""


class OmnifuseError(Exception):
    """A user-facing error; the CLI prints its message as one line, without a traceback."""


class ConfigError(OmnifuseError):
    """A configuration value is missing, unknown or of the wrong type."""


class DataError(OmnifuseError):
    """A manifest row, file or value cannot be read or is invalid."""
