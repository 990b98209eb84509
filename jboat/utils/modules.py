"""Sub-modules that Jittor does not register, and the warning jboat gives about them.

Jittor's ``Module`` finds its sub-modules among its attributes that are modules
themselves; modules kept in a plain ``list``, ``tuple`` or ``dict`` (PyTorch code
ported with ``self.cells = []``) are skipped, so their parameters are missing from
``model.parameters()``: an optimizer built from it never trains them, and a
bilevel problem treats them as constants. ``jt.nn.ModuleList`` (or ``Sequential``)
registers them.
"""

import logging

import jittor as jt

__all__ = ["unregistered_modules", "warn_unregistered_modules"]

logger = logging.getLogger("jboat")
_warned = set()


def _modules_in(container, path, found):
    """Append ``(path, module)`` for every Module inside nested plain containers."""
    if isinstance(container, jt.Module):
        found.append((path, container))
    elif isinstance(container, dict):
        for key, value in container.items():
            _modules_in(value, f"{path}[{key!r}]", found)
    elif isinstance(container, (list, tuple)):
        for i, value in enumerate(container):
            _modules_in(value, f"{path}[{i}]", found)


def unregistered_modules(model):
    """Attributes of ``model`` (or of its registered sub-modules) that hold modules in
    plain lists, tuples or dicts which Jittor's own traversal (``model.modules()``) does
    not reach. Returns ``[(attribute path, container type name, [modules])]``, one
    entry per attribute, e.g. ``("cells", "list", [Cell, ...])``."""
    named = model.named_modules() if hasattr(model, "named_modules") else [("", model)]
    registered = {id(m) for _, m in named}
    out = []
    for prefix, module in named:
        for key, value in vars(module).items():
            if isinstance(value, jt.Module) or not isinstance(value, (list, tuple, dict)):
                continue
            found = []
            _modules_in(value, key, found)
            missing = [m for _, m in found if id(m) not in registered]
            if missing:
                path = f"{prefix}.{key}" if prefix else key
                out.append((path, type(value).__name__, missing))
    return out


def warn_unregistered_modules(model, role, variables):
    """Log a warning (once per model class and attribute) for every attribute of
    ``model`` whose plain-container modules own trainable parameters that are not in
    ``variables``. ``role`` names the model in the message ("lower_level_model").
    Returns the attribute paths warned about (also those warned about before)."""
    known = {id(v) for v in variables}
    paths = []
    for path, container, modules in unregistered_modules(model):
        missing = 0
        for module in modules:
            missing += sum(1 for p in module.parameters()
                           if not p.is_stop_grad() and id(p) not in known)
        if not missing:
            continue
        paths.append(path)
        key = (type(model).__qualname__, path)
        if key in _warned:
            continue
        _warned.add(key)
        logger.warning(
            "jboat: %s.%s holds jt.nn.Module instances in a plain %s, which Jittor does not "
            "register: their %d trainable tensors are missing from %s.parameters(), so they "
            "are not optimised and count as constants of the bilevel problem. Keep them in "
            "a jt.nn.ModuleList (or jt.nn.Sequential), or pass their variables in %s "
            "yourself.", type(model).__name__, path,
            container, missing, role,
            "lower_level_var" if role.startswith("lower") else "upper_level_var")
    return paths

