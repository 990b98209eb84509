"""Exceptions raised for bad user input. Each message says what to change."""


class ConfigError(ValueError):
    """A solver or loss configuration is invalid (bad value, bad combination)."""


class ConfigTypeError(TypeError):
    """A configuration entry has the wrong type."""


class MissingConfigKeyError(KeyError, ConfigError):
    """A required configuration entry is absent.

    Subclasses both ``KeyError`` (upstream compatibility) and ``ValueError``; its
    message prints as plain text rather than as a quoted key.
    """

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class UnknownOperatorError(ConfigError):
    """An operator name is not registered, or belongs to another family."""
