"""Loading the loss functions named in ``loss_config``."""

import functools
import importlib

from .errors import ConfigError, ConfigTypeError, MissingConfigKeyError

__all__ = ["load_loss_function", "load_losses"]


def _resolve(path, name):
    if not isinstance(path, str) or "." not in path:
        raise ConfigError(f"loss_config['{name}']['function'] must be a dotted path "
                          f"'package.module.function' or a callable, got {path!r}.")
    module_name, attribute = path.rsplit(".", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"Cannot import module '{module_name}' for "
                          f"loss_config['{name}']: {exc}. Make sure it is on sys.path "
                          f"(e.g. run from the script's directory) or pass the "
                          f"function itself.") from exc
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigError(f"Module '{module_name}' has no function '{attribute}' "
                          f"(loss_config['{name}']).") from None


def load_loss_function(entry, name="loss"):
    """Return a callable for one ``loss_config`` entry.

    ``entry`` is a callable, or a dict ``{"function": "pkg.mod.func" | callable,
    "params": {...}}``. Static ``params`` become keyword arguments; keywords given
    at call time win over them.
    """
    if callable(entry):
        return entry
    if not isinstance(entry, dict):
        raise ConfigTypeError(f"loss_config['{name}'] must be a callable or a dict with "
                              f"'function' (and optional 'params'), got "
                              f"{type(entry).__name__}.")
    if "function" not in entry:
        raise MissingConfigKeyError(f"loss_config['{name}'] has no 'function'; write e.g. "
                                    f"{{'function': 'my_losses.{name}', 'params': {{}}}}.")
    unknown = sorted(set(entry) - {"function", "params"})
    if unknown:
        raise ConfigError(f"loss_config['{name}'] has unknown key(s) {', '.join(unknown)}; "
                          f"only 'function' and 'params' are read.")
    func = entry["function"]
    if not callable(func):
        func = _resolve(func, name)
    if not callable(func):
        raise ConfigTypeError(f"loss_config['{name}']['function'] does not name a callable.")
    params = entry.get("params") or {}
    if not isinstance(params, dict):
        raise ConfigTypeError(f"loss_config['{name}']['params'] must be a mapping of "
                              f"keyword arguments, got {type(params).__name__}.")
    if not params:
        return func

    @functools.wraps(func)
    def with_params(*args, **kwargs):
        return func(*args, **{**params, **kwargs})

    return with_params


def load_losses(loss_config, need_gda):
    """Load the LL/UL (and, when ``need_gda``, GDA) losses of ``loss_config``."""
    if not isinstance(loss_config, dict):
        raise ConfigTypeError(f"loss_config must be a dict, got {type(loss_config).__name__}.")
    required = ["lower_level_loss", "upper_level_loss"] + (["gda_loss"] if need_gda else [])
    missing = [key for key in required if loss_config.get(key) is None]
    if missing:
        hint = " (GDA in gm_op aggregates the two objectives through it)" if "gda_loss" in missing else ""
        raise MissingConfigKeyError(f"loss_config lacks {', '.join(missing)}{hint}; add e.g. "
                                    f"'{missing[0]}': {{'function': 'my_losses.{missing[0]}'}}.")
    unknown = sorted(set(loss_config) - {"lower_level_loss", "upper_level_loss", "gda_loss"})
    if unknown:
        raise ConfigError(f"loss_config has unknown key(s) {', '.join(unknown)}; valid: "
                          f"lower_level_loss, upper_level_loss, gda_loss.")
    losses = {key: load_loss_function(loss_config[key], key) for key in required}
    if not need_gda and loss_config.get("gda_loss") is not None:
        losses["gda_loss"] = load_loss_function(loss_config["gda_loss"], "gda_loss")
    return losses
