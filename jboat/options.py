"""Typed option declarations: each operator lists its options with defaults.

An :class:`Option` knows its type, default and range, and converts/validates one
value, raising an error that names the key and says what to write instead.
"""

import math

from .errors import ConfigError, ConfigTypeError, MissingConfigKeyError

__all__ = ["Option", "REQUIRED"]


class _Required:
    def __repr__(self):
        return "<required>"


REQUIRED = _Required()


class Option:
    """One configuration entry.

    Args:
        name: key inside its section.
        kind: ``"int"``, ``"float"``, ``"bool"``, ``"str"``, ``"choice"``,
            ``"callable"`` (None allowed) or ``"any"``.
        default: value used when the key is absent (``REQUIRED``: must be given).
        low, high: inclusive bounds for numbers (None: unbounded).
        low_open, high_open: make the corresponding bound exclusive.
        choices: allowed values for ``"choice"``.
        doc: one line for the generated YAML reference.
        aliases: other accepted spellings of the key.
    """

    def __init__(self, name, kind, default=REQUIRED, low=None, high=None, low_open=False,
                 high_open=False, choices=None, doc="", aliases=()):
        self.name, self.kind, self.default = name, kind, default
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open
        self.choices, self.doc, self.aliases = choices, doc, tuple(aliases)

    def range_text(self):
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high}")
        return " and ".join(parts)

    def convert(self, value, where):
        """Return ``value`` validated (ints widened to float for float options)."""
        label = f"{where}.{self.name}" if where else self.name
        kind = self.kind
        if kind in ("int", "float"):
            ok = isinstance(value, int) and not isinstance(value, bool)
            if kind == "float":
                ok = ok or isinstance(value, float)
            if not ok:
                raise ConfigTypeError(
                    f"{label} must be {'an integer' if kind == 'int' else 'a number'}, "
                    f"got {value!r} ({type(value).__name__}); write e.g. "
                    f"{label.split('.')[-1]}: {self._example()}.")
            if kind == "float":
                value = float(value)
                if not math.isfinite(value):
                    raise ConfigError(f"{label} must be a finite number, got {value!r}.")
            self._check_range(value, label)
            return value
        if kind == "bool":
            if not isinstance(value, bool):
                raise ConfigTypeError(f"{label} must be true or false, got {value!r}.")
            return value
        if kind == "str":
            if value is not None and not isinstance(value, str):
                raise ConfigTypeError(f"{label} must be a string, got {value!r}.")
            return value
        if kind == "choice":
            if value not in self.choices:
                raise ConfigError(f"{label} must be {self.range_text()}, got {value!r}.")
            return value
        if kind == "callable":
            if value is not None and not callable(value):
                raise ConfigTypeError(f"{label} must be a callable or null, got {value!r}.")
            return value
        return value

    def _example(self):
        if self.default is not REQUIRED and self.default is not None:
            return repr(self.default)
        return "1" if self.kind == "int" else "0.1"

    def _check_range(self, value, label):
        bad = False
        if self.low is not None:
            bad |= value <= self.low if self.low_open else value < self.low
        if self.high is not None:
            bad |= value >= self.high if self.high_open else value > self.high
        if bad:
            raise ConfigError(f"{label} must be {self.range_text()}, got {value!r}.")

    def resolve(self, section, where):
        """Read this option from ``section`` (a dict), applying the default."""
        for key in (self.name,) + self.aliases:
            if key in section:
                return self.convert(section[key], where)
        if self.default is REQUIRED:
            raise MissingConfigKeyError(
                f"{where}.{self.name} is required"
                + (f" ({self.doc})" if self.doc else "")
                + f"; add it to the '{where}' section of the solver config"
                + (f" ({self.range_text()})." if self.range_text() else "."))
        return self.default

    def known_keys(self):
        return (self.name,) + self.aliases


def resolve_section(options, section, where):
    """Validate a section dict against ``options``; unknown keys are an error."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigTypeError(f"The '{where}' section must be a mapping of options, "
                              f"got {type(section).__name__}.")
    known = {key for option in options for key in option.known_keys()}
    unknown = sorted(str(k) for k in section if k not in known)
    if unknown:
        valid = ", ".join(sorted(o.name for o in options)) or "(none)"
        raise ConfigError(f"Unknown option(s) {', '.join(unknown)} in '{where}'; "
                          f"valid options: {valid}.")
    return {option.name: option.resolve(section, where) for option in options}
