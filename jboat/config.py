"""Solver configuration: loading (YAML/JSON) and one-shot validation.

``normalize_config(config)`` turns a user dict (JSON/YAML keys plus the injected
runtime objects) into a new, validated dict: operator names upper-cased and
checked against the registry, every selected operator's section filled with its
defaults, the combination checked. The caller's dict is never mutated. Options of
operators that are not selected are neither required nor validated.
"""

import json
import logging
import os
import re

import yaml

from . import operation_registry as registry
from .errors import ConfigError, ConfigTypeError, MissingConfigKeyError
from .options import Option, resolve_section

__all__ = ["load_config", "list_recipes", "recipe_path", "normalize_config",
           "TOP_LEVEL_OPTIONS", "RUNTIME_KEYS", "RECIPE_DIR"]

#: the solver recipes shipped with the package (``configs/`` of the repository links here)
RECIPE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
_RECIPE_SUFFIXES = (".yaml", ".yml")

logger = logging.getLogger("jboat")

#: runtime objects the user injects into the solver config
RUNTIME_KEYS = ("lower_level_model", "upper_level_model", "lower_level_var",
                "upper_level_var", "lower_level_opt", "upper_level_opt")

TOP_LEVEL_OPTIONS = (
    Option("lower_iters", "int", 10, low=1, doc="K, lower-level steps per UL iteration"),
    Option("return_grad", "bool", False,
           doc="run_iter returns the UL gradients instead of stepping the UL optimizer"),
    Option("accumulate_grad", "bool", False,
           doc="feed dicts are lists of per-task dicts; hyper-gradients are summed"),
    Option("copy_last_param", "bool", True,
           doc="warm start: copy the final LL iterate into the LL model"),
    Option("fogm_batch_input", "bool", False, aliases=("fo_ol_batch_input",),
           doc="FO path: feed dicts are lists; gradients accumulate before one UL step"),
    Option("loss_log_path", "str", None,
           doc="optional JSON file rewritten with the loss history each iteration"),
    Option("track_losses", "bool", True,
           doc="record each iteration's last LL-step objective and UL loss (values it "
               "computed anyway: no extra pass) into loss_history"),
    Option("nan_guard", "bool", True,
           doc="raise FloatingPointError on a non-finite loss or gradient and roll the "
               "iteration back (a snapshot per iteration; the check shares the "
               "iteration's one host read)"),
    Option("device", "choice", None, choices=(None, "cpu", "cuda"),
           doc="'cuda' sets jt.flags.use_cuda=1, 'cpu' sets it to 0, null leaves it"),
    Option("data_parallel", "bool", False,
           doc="under mpirun: each rank holds a shard of the LL/UL data; every LL step and "
               "the hyper-gradient are averaged across ranks (full-data gradient)"),
    Option("mpi_timeout", "float", 600.0, low=0.0, low_open=True,
           doc="under mpirun: seconds one run_iter may take before this rank dumps its "
               "stack and exits with code 1 (a dead or diverged rank stops the job)"),
)

_LEGACY_KEYS = {"fo_gm": "fo_op", "dynamic_op": "gm_op", "hyper_op": "na_op"}
_LEGACY_NAMES = {"VSM": "VSO", "VFM": "VFO", "MESM": "MESO", "PGDM": "PGDO"}
_IGNORED_KEYS = ("cuda", "gda_loss")


# -- loading -----------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` (no dot) as a float, as users expect."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+][0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def list_recipes():
    """Names of the solver recipes shipped with jboat (``load_config(name)`` loads one).

    Returns:
        sorted list of names such as ``"rhg"``, ``"cg"``, ``"maml"``.
    """
    try:
        files = os.listdir(RECIPE_DIR)
    except OSError:
        return []
    return sorted(os.path.splitext(f)[0] for f in files if f.endswith(_RECIPE_SUFFIXES))


def recipe_path(name):
    """The file of the shipped recipe ``name`` (``"rhg"`` or ``"rhg.yaml"``).

    Raises:
        FileNotFoundError: no such recipe; the message lists the known ones.
    """
    stem, suffix = os.path.splitext(name)
    if suffix not in _RECIPE_SUFFIXES:
        stem = name
    for suffix in _RECIPE_SUFFIXES:
        candidate = os.path.join(RECIPE_DIR, stem + suffix)
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"No solver recipe named {name!r}. Shipped recipes: "
                            f"{', '.join(list_recipes())} (jboat.list_recipes()); or pass "
                            f"the path of your own YAML/JSON file.")


def _is_bare_name(path):
    return (os.sep not in path and "/" not in path
            and os.path.splitext(path)[1] in ("",) + _RECIPE_SUFFIXES)


def load_config(path):
    """Read a solver or loss configuration from a YAML or JSON file, or a shipped
    recipe by name (``load_config("rhg")``; see :func:`list_recipes`).

    A bare name (no folder, no extension or ``.yaml``) that is not an existing file
    is looked up among the shipped recipes, so it works after a plain (non-editable)
    ``pip install`` and from any working directory.

    Raises:
        FileNotFoundError: neither a file nor a recipe of that name exists (the
            message lists the recipes).
        ConfigError: the file is not valid YAML/JSON or does not hold a mapping.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        if _is_bare_name(path):
            path = recipe_path(path)
        else:
            raise FileNotFoundError(f"No configuration file {path!r} (working directory "
                                    f"{os.getcwd()}). Shipped recipes load by name, e.g. "
                                    f"load_config('rhg'): {', '.join(list_recipes())}.")
    with open(path, "r", encoding="utf-8") as handle:
        text = handle.read()
    if path.lower().endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, "
                              f"column {exc.colno}.") from None
    else:
        try:
            data = yaml.load(text, Loader=_Loader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(f"{path} is not valid YAML{where}: {problem}. Check the "
                              f"indentation and the 'key: value' syntax there.") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must contain a mapping of keys to values at the top "
                          f"level, got a {type(data).__name__}.")
    return data


# -- normalisation ---------------------------------------------------------------------------
def _canonical_name(name):
    """The registered spelling of ``name``: exact, else case-insensitive (upstream
    aliases mapped), so that operators registered with mixed-case names work too."""
    if name in registry.Operation_REGISTRY:
        return name
    upper = _LEGACY_NAMES.get(name.upper(), name.upper())
    matches = [n for n in registry.Operation_REGISTRY if n.upper() == upper]
    return matches[0] if len(matches) == 1 else upper


def _operator_list(value, key, role):
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigTypeError(f"{key} must be a list of operator names, got {value!r}.")
    names = []
    for item in value:
        if not isinstance(item, str):
            raise ConfigTypeError(f"{key} entries must be operator names (strings), "
                                  f"got {item!r}.")
        name = _canonical_name(item)
        registry.lookup_operator(name, role)
        if name in names:
            raise ConfigError(f"{key} lists '{name}' twice; list each operator once.")
        names.append(name)
    if not names:
        raise ConfigError(f"{key} is empty; list at least one operator or set it to null.")
    return names


def _fo_name(value):
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ConfigError(f"fo_op takes a single operator name, got {list(value)!r}.")
        value = value[0]
    if not isinstance(value, str):
        raise ConfigTypeError(f"fo_op must be an operator name (string), got {value!r}.")
    name = _canonical_name(value)
    registry.lookup_operator(name, "fo")
    return name


def _check_runtime_objects(config):
    import jittor as jt

    missing = [key for key in RUNTIME_KEYS if key not in config]
    if missing:
        raise MissingConfigKeyError(
            f"The solver config lacks {', '.join(missing)}; set them before building "
            f"the Problem, e.g. config['lower_level_model'] = model.")
    for key in ("lower_level_model", "upper_level_model"):
        if not isinstance(config[key], jt.Module):
            raise ConfigTypeError(f"{key} must be a jittor.Module, got "
                                  f"{type(config[key]).__name__}.")
    for key in ("lower_level_var", "upper_level_var"):
        value = config[key]
        if isinstance(value, (list, tuple)) is False:
            raise ConfigTypeError(f"{key} must be a list of jittor.Var, got "
                                  f"{type(value).__name__}; write e.g. "
                                  f"list(model.parameters()).")
        if not value or not all(isinstance(v, jt.Var) for v in value):
            raise ConfigTypeError(f"{key} must be a non-empty list of jittor.Var.")
    for key in ("lower_level_opt", "upper_level_opt"):
        if not isinstance(config[key], jt.optim.Optimizer):
            raise ConfigTypeError(f"{key} must be a jittor.optim.Optimizer, got "
                                  f"{type(config[key]).__name__}.")


def normalize_config(config, check_runtime=True):
    """Validate ``config`` and return a new, normalised dict (see module docstring).

    Raises:
        ConfigError / ConfigTypeError / MissingConfigKeyError (ValueError, TypeError,
        KeyError): with a message naming the key and the fix.
    """
    if not isinstance(config, dict):
        raise ConfigTypeError(f"The solver config must be a dict, got {type(config).__name__}.")
    config = {_LEGACY_KEYS.get(k, k): v for k, v in config.items()}
    out = dict(config)
    if check_runtime:
        _check_runtime_objects(config)

    out["fo_op"] = _fo_name(config.get("fo_op"))
    if out["fo_op"] is not None:
        # upstream JBOAT ignores gm_op/na_op when fo_op is set (its example scripts
        # always pass them); so does jboat, saying so once
        ignored = [f"{key}: {config[key]!r}" for key in ("gm_op", "na_op")
                   if config.get(key) not in (None, [], (), "")]
        if ignored:
            logger.warning("jboat: fo_op %s replaces the gm_op/na_op pipeline; ignoring %s "
                           "(set them to null to silence this).", out["fo_op"],
                           ", ".join(ignored))
        out["gm_op"] = out["na_op"] = None
    else:
        out["gm_op"] = _operator_list(config.get("gm_op"), "gm_op", "gm")
        out["na_op"] = _operator_list(config.get("na_op"), "na_op", "na")
    if out["fo_op"] is None and (out["gm_op"] is None or out["na_op"] is None):
        raise ConfigError("Set both gm_op and na_op (e.g. gm_op: [NGD], na_op: [RAD]), "
                          "or choose a first-order operator with fo_op.")

    out.update(resolve_section(TOP_LEVEL_OPTIONS,
                               {k: config[k] for o in TOP_LEVEL_OPTIONS
                                for k in o.known_keys() if k in config}, "config"))
    out.pop("fo_ol_batch_input", None)

    sections = {cls.config_section for cls in registry.Operation_REGISTRY.values()
                if getattr(cls, "role", None) is not None}
    known = (set(RUNTIME_KEYS) | {"fo_op", "gm_op", "na_op"} | set(_IGNORED_KEYS)
             | {k for o in TOP_LEVEL_OPTIONS for k in o.known_keys()} | sections)
    unknown = sorted(str(k) for k in config if k not in known)
    if unknown:
        raise ConfigError(f"Unknown solver config key(s): {', '.join(unknown)}. Valid keys: "
                          f"{', '.join(sorted(known))}.")

    selected = [out["fo_op"]] if out["fo_op"] else out["gm_op"] + out["na_op"]
    classes = [registry.get_registered_operation(name) for name in selected]
    for cls in classes:
        section_name = cls.config_section
        if section_name is None:
            continue
        if cls.options:
            out[section_name] = resolve_section(cls.options, config.get(section_name),
                                                section_name)
    registry.check_combination(out, classes)
    if out["data_parallel"]:
        _check_data_parallel(classes)
    return out


def _check_data_parallel(classes):
    unsupported = [cls.__name__ for cls in classes
                   if cls.role == "fo" or not getattr(cls, "supports_data_parallel", True)]
    if unsupported:
        raise ConfigError(
            f"data_parallel: true is not supported with {', '.join(unsupported)} (it updates "
            f"the lower-level variables itself, outside the differentiable inner loop that "
            f"data_parallel averages across ranks). Set data_parallel: false and split tasks "
            f"across ranks instead (accumulate_grad / fogm_batch_input), or use gm_op [NGD] "
            f"with an na_op such as RAD, CG, NS, FD or IGA.")
