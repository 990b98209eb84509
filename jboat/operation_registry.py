"""The single source of truth for operator names, roles and execution order.

Every operator class is registered under its ``__name__`` by :func:`register_class`.
A class states its *role* (``"gm"``, ``"na"`` or ``"fo"``) as a class attribute;
base classes have no role. The execution-order groups of the two chains live in
:class:`DynamicalSystemRules` and :class:`HyperGradientRules`.
"""

import difflib

from .errors import UnknownOperatorError

__all__ = [
    "Operation_REGISTRY", "register_class", "get_registered_operation",
    "operators_by_role", "lookup_operator", "DynamicalSystemRules",
    "HyperGradientRules", "ROLE_NAMES",
]

Operation_REGISTRY = {}

ROLE_NAMES = {"gm": "gm_op", "na": "na_op", "fo": "fo_op"}


def register_class(cls):
    """Class decorator: store ``cls`` in the registry under ``cls.__name__``."""
    Operation_REGISTRY[cls.__name__] = cls
    return cls


def get_registered_operation(name):
    """Return the class registered as ``name`` (any role, base classes included)."""
    try:
        return Operation_REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(Operation_REGISTRY))
        raise UnknownOperatorError(
            f"Class '{name}' is not registered. Registered classes: {known}."
        ) from None


def operators_by_role(role):
    """Sorted names of the registered operators whose role is ``role``."""
    return sorted(name for name, cls in Operation_REGISTRY.items()
                  if getattr(cls, "role", None) == role)


def lookup_operator(name, role):
    """Return the operator class ``name`` of the given role, or raise with the fix.

    Raises:
        UnknownOperatorError: the name is unknown or registered under another role;
            the message lists the valid names for ``role``.
    """
    valid = operators_by_role(role)
    key = ROLE_NAMES[role]
    cls = Operation_REGISTRY.get(name)
    if cls is not None and getattr(cls, "role", None) == role:
        return cls
    if cls is not None and getattr(cls, "role", None) in ROLE_NAMES:
        other = ROLE_NAMES[cls.role]
        raise UnknownOperatorError(
            f"'{name}' is a {other} operator and cannot appear in {key}; "
            f"move it to {other}. Valid {key} names: {', '.join(valid)}.")
    hint = difflib.get_close_matches(str(name), valid, n=1)
    hint = f" Did you mean '{hint[0]}'?" if hint else ""
    raise UnknownOperatorError(
        f"Unknown {key} operator '{name}'.{hint} Valid {key} names: {', '.join(valid)}.")


class _OrderRules:
    _gradient_order = []

    @classmethod
    def get_gradient_order(cls):
        """The execution-order groups: a list of lists of operator names."""
        return [list(group) for group in cls._gradient_order]

    @classmethod
    def set_gradient_order(cls, new_order):
        """Replace the groups (affects solvers built afterwards only)."""
        if not isinstance(new_order, list) or not all(isinstance(g, list) for g in new_order):
            raise ValueError("Gradient order must be a list of lists.")
        cls._gradient_order = [list(group) for group in new_order]


class DynamicalSystemRules(_OrderRules):
    """Execution-order groups of the lower-level (GM) chain."""
    _gradient_order = [["GDA", "DI"], ["NGD", "DM"]]


class HyperGradientRules(_OrderRules):
    """Execution-order groups of the hyper-gradient (NA) chain."""
    _gradient_order = [["PTT", "FOA", "RGT"], ["IAD", "RAD", "FD", "IGA"], ["CG", "NS"]]


def validate_and_adjust_order(custom_order, gradient_order):
    """Order ``custom_order`` by the groups of ``gradient_order``.

    Names found in no group are dropped; duplicates collapse; the result follows
    the groups first-to-last and, inside a group, left-to-right.
    """
    wanted = set(custom_order)
    return [name for group in gradient_order for name in group if name in wanted]


def _terminal_choices():
    """Valid terminal parts of an NA chain, derived from the registered classes."""
    cores = [n for n in operators_by_role("na")
             if Operation_REGISTRY[n].na_stage != "pre"]
    chains = [(n,) for n in cores]
    for n in cores:
        for prefix in Operation_REGISTRY[n].accepts_prefix:
            chains.append((prefix, n))
    return chains


def check_combination(config, classes):
    """Refuse invalid operator combinations (api.md §2.7) with a message naming the fix.

    Structural rules of the NA chain are checked here; each selected class then
    checks its own requirements through its ``check_combination(config)``.
    """
    from .errors import ConfigError

    if config.get("fo_op") is None:
        gm_ops, na_ops = config["gm_op"], config["na_op"]
        if not any(Operation_REGISTRY[n].gm_terminal for n in gm_ops):
            finals = [n for n in operators_by_role("gm") if Operation_REGISTRY[n].gm_terminal]
            raise ConfigError(
                f"gm_op {gm_ops} has no operator that runs the lower-level loop; add one "
                f"of {', '.join(finals)} (e.g. gm_op: {gm_ops + ['NGD']}).")
        order = validate_and_adjust_order(na_ops, HyperGradientRules.get_gradient_order())
        core = tuple(n for n in order if Operation_REGISTRY[n].na_stage != "pre")
        choices = _terminal_choices()
        if core not in choices:
            text = ", ".join("+".join(c) for c in choices)
            if not core:
                problem = "has only pre-operators, which need a terminal one after them"
            else:
                problem = f"has the terminal part {'+'.join(core)}, which is not a valid chain"
            raise ConfigError(f"na_op {na_ops} {problem}; pick exactly one of {text} "
                              f"(optionally with PTT, FOA, RGT in front).")
    for cls in classes:
        cls.check_combination(config)
