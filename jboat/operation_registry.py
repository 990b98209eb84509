"""The single source of truth for operator names, roles and execution order.

Every operator class is registered under its ``__name__`` by :func:`register_class`.
A class states its *role* (``"gm"``, ``"na"`` or ``"fo"``) as a class attribute;
base classes have no role. Everything else the registry needs is read from class
attributes too (see :class:`jboat.base.OperatorSpec`): the execution order of the two
chains (``chain_stage``), the valid shapes of an na chain (``na_stage``,
``retargets``/``accepts_retarget``), which gm operators run the inner loop
(``gm_terminal``, ``runs_inner_loop``) and pairs that exclude each other
(``excludes``). An operator registered by a user takes part like a built-in one.
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
    role = None
    _override = None

    @classmethod
    def get_gradient_order(cls):
        """The execution-order groups (lists of names), derived from the registered
        classes' ``chain_stage`` unless :meth:`set_gradient_order` replaced them."""
        if cls._override is not None:
            return [list(group) for group in cls._override]
        staged = sorted((Operation_REGISTRY[n].chain_stage, n) for n in operators_by_role(cls.role))
        groups = {}
        for (group, _), name in staged:
            groups.setdefault(group, []).append(name)
        return [groups[g] for g in sorted(groups)]

    @classmethod
    def set_gradient_order(cls, new_order):
        """Replace the groups (affects solvers built afterwards only); None restores
        the derived order."""
        if new_order is not None and (not isinstance(new_order, list) or not all(
                isinstance(g, list) for g in new_order)):
            raise ValueError("Gradient order must be a list of lists.")
        cls._override = None if new_order is None else [list(g) for g in new_order]


class DynamicalSystemRules(_OrderRules):
    """Execution-order groups of the lower-level (gm) chain."""
    role = "gm"


class HyperGradientRules(_OrderRules):
    """Execution-order groups of the hyper-gradient (na) chain."""
    role = "na"


def validate_and_adjust_order(custom_order, gradient_order):
    """Order ``custom_order`` by the groups of ``gradient_order``.

    Duplicates collapse; the result follows the groups first-to-last and, inside a
    group, left-to-right. A name found in no group raises ``UnknownOperatorError``.
    """
    known = {name for group in gradient_order for name in group}
    missing = [name for name in custom_order if name not in known]
    if missing:
        raise UnknownOperatorError(
            f"{', '.join(map(str, missing))} not found in the execution order "
            f"{gradient_order}; register the operator with a role (and chain_stage), or "
            f"add it to the order with set_gradient_order.")
    wanted = set(custom_order)
    return [name for group in gradient_order for name in group if name in wanted]


def _terminal_choices():
    """Valid terminal parts of an na chain, derived from the registered classes."""
    names = [n for group in HyperGradientRules.get_gradient_order() for n in group]
    cores = [n for n in names if Operation_REGISTRY[n].na_stage != "pre"]
    chains = [(n,) for n in sorted(cores)]
    chains += [(a, b) for a in cores if Operation_REGISTRY[a].retargets
               for b in cores if Operation_REGISTRY[b].accepts_retarget]
    return chains


def check_combination(config, classes):
    """Refuse invalid operator combinations with a message naming the fix.

    Structural rules are checked here; each selected class then checks its own
    requirements through its ``check_combination(config)``.
    """
    from .errors import ConfigError

    if config.get("fo_op") is None:
        gm_ops, na_ops = config["gm_op"], config["na_op"]
        runners = [n for n in operators_by_role("gm")
                   if getattr(Operation_REGISTRY[n], "runs_inner_loop", False)]
        if not any(Operation_REGISTRY[n].gm_terminal for n in gm_ops):
            finals = [n for n in operators_by_role("gm") if Operation_REGISTRY[n].gm_terminal]
            raise ConfigError(
                f"gm_op {gm_ops} has no operator that runs the lower-level loop; add one "
                f"of {', '.join(finals)} (e.g. gm_op: {gm_ops + (runners or finals)[:1]}).")
        if not any(n in runners for n in gm_ops):
            for name in na_ops:
                if Operation_REGISTRY[name].na_stage == "pre":
                    raise ConfigError(
                        f"{name} acts on the recorded lower-level loop, which gm_op "
                        f"{gm_ops} does not run; add one of {', '.join(runners)} to gm_op "
                        f"or remove {name} from na_op.")
        order = validate_and_adjust_order(na_ops, HyperGradientRules.get_gradient_order())
        core = tuple(n for n in order if Operation_REGISTRY[n].na_stage != "pre")
        choices = _terminal_choices()
        if core not in choices:
            text = ", ".join("+".join(c) for c in choices)
            pre = [n for group in HyperGradientRules.get_gradient_order() for n in group
                   if Operation_REGISTRY[n].na_stage == "pre"]
            if not core:
                problem = "has only pre-operators, which need a terminal one after them"
            else:
                problem = f"has the terminal part {'+'.join(core)}, which is not a valid chain"
            raise ConfigError(f"na_op {na_ops} {problem}; pick exactly one of {text} "
                              f"(optionally with {', '.join(pre)} in front).")
    for cls in classes:
        for attribute, reason in getattr(cls, "excludes", {}).items():
            for other in classes:
                if other is not cls and getattr(other, attribute, False):
                    raise ConfigError(f"{cls.__name__} and {other.__name__} cannot be "
                                      f"combined: {reason.format(other=other.__name__)}. "
                                      f"Remove one of them.")
    for cls in classes:
        cls.check_combination(config)
